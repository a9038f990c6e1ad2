/**
 * Operators' tokens on the command line (cli/token.ts, cli/audit.ts and the
 * --token / POOLBOY_TOKEN of the fleet commands), as a user meets them: a
 * token is printed once and only its hash is on disk; list and revoke work
 * beside a running control plane; a revoked token gets 401; a duplicate name
 * or a bad role is a usage error; a 401 or 403 from the API says which.
 */

import assert from "node:assert/strict";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import { tokenHash } from "../controlplane/auth.ts";
import { DATABASE_FILE } from "../controlplane/sqlite_store.ts";
import { CODEC_PERMISSIONS, poolboyWith, type RunResult } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";

/** Token commands open SQLite (read/write); API commands need the loopback and POOLBOY_TOKEN. */
const PERMISSIONS = [
  ...CODEC_PERMISSIONS,
  "--allow-net=127.0.0.0/8",
  "--allow-env=POOLBOY_TOKEN",
];

/** Runs `poolboy ...args` with POOLBOY_TOKEN set to `token` (empty: none). */
async function poolboy(args: string[], token = ""): Promise<RunResult> {
  return await poolboyWith(PERMISSIONS, Deno.cwd(), args, { POOLBOY_TOKEN: token });
}

/** `poolboy token create`; the token it printed. */
async function create(dir: string, role: string, name: string): Promise<string> {
  const run = await poolboy(["token", "create", "--data", dir, "--role", role, "--name", name]);
  assert.equal(run.code, 0, run.stderr);
  return run.stdout.trim();
}

/** Every byte of the files in `dir`, as Latin-1 text (a token or hash in them shows as itself). */
async function everyByteIn(dir: string): Promise<string> {
  let text = "";
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) text += new TextDecoder("latin1").decode(await Deno.readFile(`${dir}/${e.name}`));
  }
  return text;
}

/** A control plane on `dir` whose API listens on 127.0.0.1 (an ephemeral port). */
async function withControlPlane(
  dir: string,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const cp = await ControlPlane.start({ bind: "127.0.0.1", dataDir: dir, udpPort: 0, p2pPort: 0 });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    apiHandler(cp),
  );
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
    await cp.close();
  }
}

for (const command of ["token", "audit"]) {
  Deno.test(`${command} --help exits 0 and explains the command`, async () => {
    const run = await poolboy([command, "--help"]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^poolboy ${command} — `));
    assert.match(run.stdout, /Usage: poolboy/);
    assert.match(run.stdout, /Exit codes:/);
  });
}

Deno.test("the main help lists token and audit, and says the fleet commands take --token or POOLBOY_TOKEN", async () => {
  const run = await poolboy(["--help"]);
  assert.match(run.stdout, /\n {2}token create --data DIR --role R --name NAME/);
  assert.match(run.stdout, /\n {2}audit --control-plane URL/);
  assert.match(run.stdout, /--token T or the environment variable POOLBOY_TOKEN/);
});

for (const command of ["publish", "rollout", "rollback", "status", "audit"]) {
  Deno.test(`${command} --help names --token and POOLBOY_TOKEN, and what 401 and 403 mean`, async () => {
    const run = await poolboy([command, "--help"]);
    assert.match(run.stdout, /--token T +the operator's API token \(default: env POOLBOY_TOKEN\)/);
    assert.match(run.stdout, /401: no, unknown or\s+revoked token/);
    assert.match(run.stdout, /403/);
  });
}

Deno.test("token create prints the token once on stdout, says it cannot be shown again, and only its hash is on disk", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboy([
      "token",
      "create",
      "--data",
      `${dir}/cp`,
      "--role",
      "admin",
      "--name",
      "alice",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^pbt_[A-Za-z0-9_-]{43}\n$/);
    assert.match(run.stderr, /cannot be shown again/);
    const token = run.stdout.trim();
    const disk = await everyByteIn(`${dir}/cp`);
    assert.ok(disk.includes(tokenHash(token)), "the hash is stored");
    assert.ok(!disk.includes(token), "the token is not");
    assert.ok(!disk.includes(token.slice(4)), "nor its random part");
    const list = await poolboy(["token", "list", "--data", `${dir}/cp`, "--json"]);
    assert.ok(!list.stdout.includes(token), "list never shows it");
  });
});

Deno.test("token create --json prints name, role, time and the token, once", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboy([
      "token",
      "create",
      "--data",
      dir,
      "--role",
      "viewer",
      "--name",
      "grafana",
      "--json",
    ]);
    assert.equal(run.code, 0, run.stderr);
    const out = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(out), ["name", "role", "created", "token"]);
    assert.equal(out.name, "grafana");
    assert.equal(out.role, "viewer");
    assert.match(String(out.token), /^pbt_[A-Za-z0-9_-]{43}$/);
    assert.match(run.stderr, /cannot be shown again/);
  });
});

Deno.test("token list shows every token's name, role, time made and time revoked", async () => {
  await withTempDir(async (dir) => {
    await create(dir, "admin", "alice");
    await create(dir, "deployer", "ci");
    const revoke = await poolboy(["token", "revoke", "--data", dir, "ci"]);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, /revoked token "ci"/);
    const text = await poolboy(["token", "list", "--data", dir]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^alice +admin +made \S+Z\n/m);
    assert.match(text.stdout, /^ci +deployer +made \S+Z, REVOKED \S+Z$/m);
    const json = await poolboy(["token", "list", "--data", dir, "--json"]);
    const { tokens } = JSON.parse(json.stdout) as {
      tokens: { name: string; role: string; created: number; revoked: number | null }[];
    };
    assert.deepEqual(tokens.map((t) => [t.name, t.role, t.revoked === null]), [
      ["alice", "admin", true],
      ["ci", "deployer", false],
    ]);
  });
});

Deno.test("usage errors, exit 2: a name taken (revoked ones too), a bad role or name, an unknown token, no action", async () => {
  await withTempDir(async (dir) => {
    await create(dir, "admin", "alice");
    await poolboy(["token", "revoke", "--data", dir, "alice"]);
    const cases: [string[], RegExp][] = [
      [
        ["token", "create", "--data", dir, "--role", "viewer", "--name", "alice"],
        /a token named "alice" already exists/,
      ],
      [
        ["token", "create", "--data", dir, "--role", "root", "--name", "bob"],
        /--role: "root" is not a role \(viewer, deployer, admin\)/,
      ],
      [["token", "create", "--data", dir, "--role", "admin"], /token create needs --name/],
      [["token", "create", "--data", dir, "--name", "bob"], /token create needs --role/],
      [
        ["token", "create", "--data", dir, "--role", "admin", "--name", "a b"],
        /--name: "a b" must be/,
      ],
      [["token", "revoke", "--data", dir, "nobody"], /no token named "nobody"/],
      [["token", "revoke", "--data", dir, "alice"], /token "alice" is already revoked/],
      [["token", "revoke", "--data", dir], /token revoke takes one NAME/],
      [["token", "list"], /token needs --data/],
      [["token", "--data", dir], /token needs create, list or revoke/],
      [["token", "forge", "--data", dir], /unknown action "forge"/],
      [["audit", "--control-plane", "http://127.0.0.1:9", "--limit", "0"], /--limit: "0"/],
    ];
    for (const [args, message] of cases) {
      const run = await poolboy(args);
      assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
      assert.match(run.stderr, message);
      assert.equal(run.stderr.trim().split("\n").length, 1, "one line");
    }
    const list = await poolboy(["token", "list", "--data", dir, "--json"]);
    assert.deepEqual((JSON.parse(list.stdout) as { tokens: unknown[] }).tokens.length, 1);
  });
});

Deno.test("token list on a directory with no control plane state: exit 3, naming the database", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboy(["token", "list", "--data", `${dir}/nothing`]);
    assert.equal(run.code, 3, run.stderr);
    assert.match(run.stderr, new RegExp(`nothing/${DATABASE_FILE} does not exist`));
  });
});

Deno.test("beside a running control plane: a token made works from the next call, a revoked one gets 401 (exit 2, saying so)", async () => {
  await withTempDir(async (dir) => {
    await withControlPlane(dir, async (url) => {
      const token = await create(dir, "viewer", "ops");
      const ok = await poolboy(["status", "--control-plane", url, "--token", token, "--json"]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal((JSON.parse(ok.stdout) as { boot: number }).boot, 1);
      const fromEnv = await poolboy(["status", "--control-plane", url, "--json"], token);
      assert.equal(fromEnv.code, 0, `POOLBOY_TOKEN: ${fromEnv.stderr}`);
      const revoke = await poolboy(["token", "revoke", "--data", dir, "ops"]);
      assert.equal(revoke.code, 0, revoke.stderr);
      const refused = await poolboy(["status", "--control-plane", url, "--token", token]);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /unauthorized \(HTTP 401, the token was refused\)/);
      assert.match(refused.stderr, /token "ops" was revoked/);
      assert.equal(refused.stderr.trim().split("\n").length, 1, "one line");
    });
  });
});

Deno.test("the fleet commands without a token get 401 and are told how to send one; with too low a role 403", async () => {
  await withTempDir(async (dir) => {
    await withControlPlane(dir, async (url) => {
      const viewer = await create(dir, "viewer", "viewer");
      const model = `${dir}/model.bin`;
      await Deno.writeFile(model, randomBytes(1000, 1));
      const none = await poolboy(["status", "--control-plane", url]);
      assert.equal(none.code, 2, none.stderr);
      assert.match(
        none.stderr,
        /unauthorized \(HTTP 401, no token was sent: pass --token T or set POOLBOY_TOKEN\)/,
      );
      const calls: string[][] = [
        ["rollout", "--control-plane", url, "--model", "m", "--version", "v1"],
        ["rollout", "pause", "--control-plane", url, "1"],
        ["rollback", "--control-plane", url, "--model", "m", "--unsigned"],
        ["publish", "--control-plane", url, "--model", "m", "--version", "v1", "--unsigned", model],
        ["audit", "--control-plane", url],
      ];
      for (const args of calls) {
        const run = await poolboy(args, viewer);
        assert.equal(run.code, 2, `${args[0]}: ${run.stderr}`);
        assert.match(
          run.stderr,
          /forbidden \(HTTP 403, the token's role does not allow this\)/,
          args[0],
        );
        assert.match(run.stderr, /token "viewer" has role viewer/, args[0]);
      }
    });
  });
});

Deno.test("poolboy audit shows an admin who did what, newest first: the refusals and the changes", async () => {
  await withTempDir(async (dir) => {
    await withControlPlane(dir, async (url) => {
      const admin = await create(dir, "admin", "alice");
      const viewer = await create(dir, "viewer", "bob");
      await poolboy(["rollout", "--control-plane", url, "--model", "m", "--version", "v1"], viewer);
      await poolboy(["rollout", "--control-plane", url, "--model", "m", "--version", "v1"], admin);
      await poolboy(["status", "--control-plane", url, "--token", "pbt_nonsense"]);
      const run = await poolboy(["audit", "--control-plane", url, "--token", admin]);
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stdout.trim().split("\n");
      assert.equal(lines.length, 3, run.stdout);
      assert.match(lines[0], /Z - 401 GET \/v1\/status: malformed token$/);
      assert.match(
        lines[1],
        /Z alice \(admin\) 404 POST \/v1\/rollouts \[m v1\]: unknown model "m"$/,
      );
      assert.match(
        lines[2],
        /Z bob \(viewer\) 403 POST \/v1\/rollouts: role viewer, needs deployer$/,
      );
      const json = await poolboy(
        ["audit", "--control-plane", url, "--limit", "1", "--json"],
        admin,
      );
      assert.equal(json.code, 0, json.stderr);
      const { entries } = JSON.parse(json.stdout) as { entries: { status: number }[] };
      assert.deepEqual(entries.map((e) => e.status), [401]);
    });
  });
});
