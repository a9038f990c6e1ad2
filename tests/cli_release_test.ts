/**
 * The release commands as an operator runs them (real processes): keygen and
 * delegate on the workstation, publish --key/--keys and rollback against a
 * real control plane process. What is signed is checked with release/: the
 * control plane's copy of a manifest verifies with a key of keys.json.
 */

import assert from "node:assert/strict";
import { blake3, toHex } from "../kernel/blake3.ts";
import {
  parseDelegation,
  parseRelease,
  RELEASE_TYPE,
  signRelease,
  SPEC_VERSION,
  verifiedSigners,
} from "../release/documents.ts";
import { readSigningKey } from "../release/keys.ts";
import type { DeviceList, RolloutInfo, VersionList } from "../controlplane/api_types.ts";
import { DEFAULT_CP_UDP_PORT } from "../transfer/default_ports.ts";
import { assertUserError, MOD_PATH, poolboyWith, type RunResult } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { heartbeatUntilListed } from "./support/devices.ts";

const CLI_PERMISSIONS = ["--allow-read", "--allow-write", "--allow-net=127.0.0.0/8"];

/**
 * A fresh loopback address per control plane, so tests never share ports — not
 * even with another run of this file at the same time (the third byte is drawn
 * once per run).
 */
const RUN_BYTE = 1 + Math.floor(Math.random() * 250);
let nextHost = 1;

interface Cp {
  readonly url: string;
  readonly token: string;
  readonly dir: string;
  /** Runs `poolboy ...args` in the test's directory. */
  run(...args: string[]): Promise<RunResult>;
  /** A GET of the API with the token. */
  get<T>(path: string): Promise<T>;
  put(path: string, body: string): Promise<Response>;
}

async function withControlPlane(fn: (cp: Cp) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const host = `127.13.${RUN_BYTE}.${nextHost++}`;
    const data = `${dir}/cp`;
    await Deno.mkdir(data);
    const made = await poolboyWith(CLI_PERMISSIONS, dir, [
      "token",
      "create",
      "--data",
      data,
      "--role",
      "deployer",
      "--name",
      "ci",
    ]);
    assert.equal(made.code, 0, made.stderr);
    const token = made.stdout.trim();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-net=127.0.0.0/8",
        "--allow-env",
        MOD_PATH,
        "controlplane",
        "--bind",
        host,
        "--data",
        data,
        "--quiet",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const url = `http://${host}:7402`;
    const headers = { authorization: `Bearer ${token}` };
    try {
      const deadline = Date.now() + 30_000;
      while (true) {
        try {
          const r = await fetch(`${url}/health`);
          await r.body?.cancel();
          if (r.ok) break;
        } catch {
          // not yet listening
        }
        if (Date.now() > deadline) throw new Error("the control plane did not start");
        await new Promise((r) => setTimeout(r, 50));
      }
      await fn({
        url,
        token,
        dir,
        run: (...args) => poolboyWith(CLI_PERMISSIONS, dir, args),
        get: async <T>(path: string) => {
          const r = await fetch(`${url}${path}`, { headers });
          assert.equal(r.status, 200, `GET ${path}`);
          return await r.json() as T;
        },
        put: (path, body) => fetch(`${url}${path}`, { method: "PUT", body, headers }),
      });
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  });
}

/** keygen root + release and a delegation naming the release key, in `dir/keys`. */
async function makeKeys(run: Cp["run"], dir = "keys"): Promise<void> {
  for (const role of ["root", "release"]) {
    const r = await run("keygen", role, "-o", dir);
    assert.equal(r.code, 0, r.stderr);
  }
  const d = await run(
    "delegate",
    "--root",
    `${dir}/root.key`,
    "--release",
    `${dir}/release.pub`,
    "-o",
    `${dir}/keys.json`,
  );
  assert.equal(d.code, 0, d.stderr);
}

async function cli(dir: string, ...args: string[]): Promise<RunResult> {
  return await poolboyWith(CLI_PERMISSIONS, dir, args);
}

Deno.test("keygen writes ROLE.key (0600) and ROLE.pub, and refuses to overwrite them", async () => {
  await withTempDir(async (dir) => {
    const r = await cli(dir, "keygen", "root", "-o", "k", "--json");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.role, "root");
    assert.match(out.keyId, /^[0-9a-f]{64}$/);
    assert.equal((await Deno.stat(`${dir}/k/root.key`)).mode! & 0o777, 0o600);
    const before = await Deno.readTextFile(`${dir}/k/root.key`);
    assertUserError(await cli(dir, "keygen", "root", "-o", "k"), 3, "already exists");
    assert.equal(await Deno.readTextFile(`${dir}/k/root.key`), before);
    assertUserError(await cli(dir, "keygen", "admin", "-o", "k"), 2, "root or release");
    assertUserError(await cli(dir, "keygen", "release"), 2, "-o DIR");
    const help = await cli(dir, "keygen", "--help");
    assert.equal(help.code, 0);
    assert.match(help.stdout, /poolboy keygen root\|release -o DIR/);
  });
});

Deno.test("delegate signs keys.json with the root key, and each run without --version grows the version", async () => {
  await withTempDir(async (dir) => {
    await cli(dir, "keygen", "root", "-o", "k");
    await cli(dir, "keygen", "release", "-o", "k");
    await cli(dir, "keygen", "release", "-o", "k2");
    const args = ["delegate", "--root", "k/root.key", "--release", "k/release.pub"];
    const versionOf = async () =>
      parseDelegation(await Deno.readFile(`${dir}/keys.json`)).signed.version;
    assert.equal((await cli(dir, ...args, "-o", "keys.json")).code, 0);
    assert.equal(await versionOf(), 1);
    const second = await cli(dir, ...args, "--release", "k2/release.pub", "-o", "keys.json");
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /delegation version 2 written to keys\.json: 2 release keys/);
    const doc = parseDelegation(await Deno.readFile(`${dir}/keys.json`));
    assert.equal(doc.signed.releaseKeys.length, 2);
    const root = await readSigningKey(`${dir}/k/root.key`, "root");
    assert.equal((await verifiedSigners(doc, [root])).size, 1, "signed by the root key");
    assert.equal(doc.signed.rootKeyId, root.keyId);
    assert.equal((await cli(dir, ...args, "--version", "7", "-o", "keys.json")).code, 0);
    assert.equal(await versionOf(), 7);
    assertUserError(
      await cli(dir, ...args, "--version", "7", "-o", "keys.json"),
      2,
      "--version 7 is not above version 7",
    );
    assert.equal(await versionOf(), 7, "the refused run changed nothing");
    assertUserError(
      await cli(
        dir,
        "delegate",
        "--root",
        "k/release.key",
        "--release",
        "k/release.pub",
        "-o",
        "x",
      ),
      2,
      "a root key is needed",
    );
    assertUserError(
      await cli(dir, ...args, "--expires", "soon", "-o", "keys.json"),
      2,
      "not an expiry",
    );
    const before = Date.now();
    const expiring = await cli(dir, ...args, "--expires", "2h", "-o", "short.json", "--json");
    const after = Date.now();
    assert.equal(expiring.code, 0, expiring.stderr);
    const expires = Date.parse(JSON.parse(expiring.stdout).expires);
    // Two hours from when it ran, rounded down to the second.
    const twoHours = 7_200_000;
    assert.ok(expires >= before + twoHours - 1000 && expires <= after + twoHours, "2h from now");
  });
});

Deno.test("publish --key --keys signs on the workstation: the control plane stores the delegation and a manifest that verifies with keys.json, counters growing per model", async () => {
  await withControlPlane(async (cp) => {
    await makeKeys(cp.run);
    const files = [randomBytes(50_000, 1), randomBytes(50_000, 2)];
    await Deno.writeFile(`${cp.dir}/v1.bin`, files[0]);
    await Deno.writeFile(`${cp.dir}/v2.bin`, files[1]);
    const publish = (version: string, ...extra: string[]) =>
      cp.run(
        "publish",
        "--control-plane",
        cp.url,
        "--token",
        cp.token,
        "--model",
        "resnet",
        "--version",
        version,
        `${version}.bin`,
        "--key",
        "keys/release.key",
        "--keys",
        "keys/keys.json",
        ...extra,
      );
    const first = await publish("v1");
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /signed: release counter 1/);
    const before = Date.now();
    const second = await publish("v2", "--device-class", "jetson", "--expires", "30d");
    const after = Date.now();
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /signed: release counter 2/);

    const delegation = parseDelegation(await Deno.readFile(`${cp.dir}/keys/keys.json`));
    const served = await fetch(`${cp.url}/v1/delegation`, {
      headers: { authorization: `Bearer ${cp.token}` },
    });
    assert.deepEqual(
      new Uint8Array(await served.arrayBuffer()),
      await Deno.readFile(`${cp.dir}/keys/keys.json`),
      "the control plane stores keys.json byte for byte",
    );
    const manifest = parseRelease(
      new TextEncoder().encode(
        JSON.stringify(await cp.get<unknown>("/v1/models/resnet/versions/v2/release")),
      ),
    );
    assert.equal((await verifiedSigners(manifest, delegation.signed.releaseKeys)).size, 1);
    assert.deepEqual(manifest.signed.target, { blake3: toHex(blake3(files[1])), size: 50_000 });
    assert.equal(manifest.signed.counter, 2);
    assert.equal(manifest.signed.deviceClass, "jetson");
    const thirtyDays = 30 * 86_400_000;
    assert.ok(
      manifest.signed.expires >= before + thirtyDays - 1000 &&
        manifest.signed.expires <= after + thirtyDays,
      "30 days from when it was published",
    );
    const list = await cp.get<VersionList>("/v1/models");
    assert.deepEqual(list.versions.map((v) => [v.version, v.signed, v.counter]), [
      ["v1", true, 1],
      ["v2", true, 2],
    ]);
    // --counter sets it.
    const third = await publish("v1", "--counter", "10");
    assert.equal(third.code, 0, third.stderr);
    assert.equal(
      (await cp.get<{ highestCounter: number }>("/v1/models/resnet/releases")).highestCounter,
      10,
    );
  });
});

Deno.test("publish without --key/--keys or --unsigned is a usage error naming both, and a key keys.json does not name is refused before anything is uploaded", async () => {
  await withControlPlane(async (cp) => {
    await makeKeys(cp.run);
    await cp.run("keygen", "release", "-o", "outsider");
    await Deno.writeFile(`${cp.dir}/v1.bin`, randomBytes(10_000, 1));
    const base = [
      "publish",
      "--control-plane",
      cp.url,
      "--token",
      cp.token,
      "--model",
      "resnet",
      "--version",
      "v1",
      "v1.bin",
    ];
    assertUserError(await cp.run(...base), 2, "--key", "--keys", "--unsigned");
    assertUserError(await cp.run(...base, "--key", "keys/release.key"), 2, "--unsigned");
    assertUserError(
      await cp.run(...base, "--unsigned", "--key", "keys/release.key"),
      2,
      "--unsigned cannot go with --key",
    );
    assertUserError(
      await cp.run(...base, "--key", "outsider/release.key", "--keys", "keys/keys.json"),
      2,
      "is not a release key of keys/keys.json",
    );
    assertUserError(
      await cp.run(...base, "--key", "keys/root.key", "--keys", "keys/keys.json"),
      2,
      "a release key is needed",
    );
    assertUserError(
      await cp.run(...base, "--key", "keys/release.key", "--keys", "keys/release.pub"),
      2,
      "not a valid delegation",
    );
    await Deno.chmod(`${cp.dir}/keys/release.key`, 0o644);
    assertUserError(
      await cp.run(...base, "--key", "keys/release.key", "--keys", "keys/keys.json"),
      3,
      "chmod 600",
    );
    assert.deepEqual((await cp.get<VersionList>("/v1/models")).versions, [], "nothing uploaded");
    const delegation = await fetch(`${cp.url}/v1/delegation`, {
      headers: { authorization: `Bearer ${cp.token}` },
    });
    assert.equal(delegation.status, 404, "no delegation uploaded either");
    await delegation.body?.cancel();
  });
});

Deno.test("publish --unsigned warns and stores a version without a manifest", async () => {
  await withControlPlane(async (cp) => {
    await Deno.writeFile(`${cp.dir}/v1.bin`, randomBytes(10_000, 1));
    const r = await cp.run(
      "publish",
      "--control-plane",
      cp.url,
      "--token",
      cp.token,
      "--model",
      "resnet",
      "--version",
      "v1",
      "v1.bin",
      "--unsigned",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: publishing unsigned/);
    assert.match(r.stdout, /unsigned: only agents started with --insecure install it/);
    const list = await cp.get<VersionList>("/v1/models");
    assert.deepEqual(list.versions.map((v) => [v.version, v.signed, v.counter]), [
      ["v1", false, null],
    ]);
  });
});

Deno.test("rollback re-signs the older version's manifest with a counter above every stored one, then rolls it out; a manifest keys.json's keys did not sign is not re-signed", async () => {
  await withControlPlane(async (cp) => {
    await makeKeys(cp.run);
    // A rollout needs a device in its selection: eu-0 heartbeats.
    const udp = { hostname: new URL(cp.url).hostname, port: DEFAULT_CP_UDP_PORT };
    // Enrolling it takes an admin (the test's own token is a deployer's).
    const admin = await cp.run(
      "token",
      "create",
      "--data",
      `${cp.dir}/cp`,
      "--role",
      "admin",
      "--name",
      "enroller",
    );
    assert.equal(admin.code, 0, admin.stderr);
    const api = { url: cp.url, token: admin.stdout.trim() };
    await heartbeatUntilListed(udp, api, "eu-0", async () => {
      const { agents } = await cp.get<DeviceList>("/v1/devices");
      return agents.some((a) => a.nodeId === "eu-0");
    });
    const files = [randomBytes(20_000, 1), randomBytes(20_000, 2)];
    for (const [i, bytes] of files.entries()) {
      await Deno.writeFile(`${cp.dir}/v${i + 1}.bin`, bytes);
      const r = await cp.run(
        "publish",
        "--control-plane",
        cp.url,
        "--token",
        cp.token,
        "--model",
        "resnet",
        "--version",
        `v${i + 1}`,
        `v${i + 1}.bin`,
        "--key",
        "keys/release.key",
        "--keys",
        "keys/keys.json",
      );
      assert.equal(r.code, 0, r.stderr);
      const rollout = await cp.run(
        "rollout",
        "--control-plane",
        cp.url,
        "--token",
        cp.token,
        "--model",
        "resnet",
        "--version",
        `v${i + 1}`,
      );
      assert.equal(rollout.code, 0, rollout.stderr);
    }
    const rollbackArgs = [
      "rollback",
      "--control-plane",
      cp.url,
      "--token",
      cp.token,
      "--model",
      "resnet",
    ];
    assertUserError(await cp.run(...rollbackArgs), 2, "--key", "--unsigned");
    const r = await cp.run(
      ...rollbackArgs,
      "--key",
      "keys/release.key",
      "--keys",
      "keys/keys.json",
      "--json",
    );
    assert.equal(r.code, 0, r.stderr);
    const rollout = JSON.parse(r.stdout) as RolloutInfo;
    assert.equal(rollout.version, "v1");
    assert.equal(rollout.rollback, true);
    const manifest = parseRelease(
      new TextEncoder().encode(
        JSON.stringify(await cp.get<unknown>("/v1/models/resnet/versions/v1/release")),
      ),
    );
    assert.equal(manifest.signed.counter, 3, "above v2's counter 2");
    assert.deepEqual(manifest.signed.target, { blake3: toHex(blake3(files[0])), size: 20_000 });
    const delegation = parseDelegation(await Deno.readFile(`${cp.dir}/keys/keys.json`));
    assert.equal((await verifiedSigners(manifest, delegation.signed.releaseKeys)).size, 1);

    // A manifest the control plane holds that no key of keys.json signed (a compromised
    // control plane's): rollback refuses to re-sign it, and nothing is rolled out.
    await cp.run("keygen", "release", "-o", "rogue");
    const rogue = await readSigningKey(`${cp.dir}/rogue/release.key`, "release");
    const forged = await signRelease({
      ...manifest.signed,
      type: RELEASE_TYPE,
      spec: SPEC_VERSION,
      version: "v2",
      target: { blake3: toHex(blake3(files[1])), size: 20_000 },
      counter: 4,
    }, rogue);
    assert.equal((await cp.put("/v1/models/resnet/versions/v2/release", forged)).status, 201);
    const before = (await cp.get<{ rollouts: unknown[] }>("/v1/rollouts")).rollouts.length;
    assertUserError(
      await cp.run(
        ...rollbackArgs,
        "--to",
        "v2",
        "--key",
        "keys/release.key",
        "--keys",
        "keys/keys.json",
      ),
      2,
      "not one signed by a release key of keys/keys.json",
    );
    assert.equal((await cp.get<{ rollouts: unknown[] }>("/v1/rollouts")).rollouts.length, before);
  });
});
