/**
 * Operators against a real control plane process (`poolboy controlplane`,
 * tokens made with `poolboy token create` on its data dir before it starts,
 * the audit log read with `poolboy audit`): every endpoint of the route table
 * with no token, a wrong token and too low a role is answered 401 or 403 over
 * HTTP, nothing the admin can see changes, and the audit log shows each.
 */

import assert from "node:assert/strict";
import type { AuditList, DeviceList } from "../controlplane/api_types.ts";
import { ENDPOINTS } from "../controlplane/http_api.ts";
import { allows } from "../controlplane/auth.ts";
import { type Role, ROLES } from "../controlplane/state_store.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import {
  DELEGATION_TYPE,
  RELEASE_TYPE,
  signDelegation,
  signRelease,
  SPEC_VERSION,
} from "../release/documents.ts";
import { generateKey } from "../release/keys.ts";
import { MOD_PATH, poolboyWith, type RunResult } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { heartbeatUntilListed } from "./support/devices.ts";
import { DEFAULT_CP_UDP_PORT } from "../transfer/default_ports.ts";

/** Its own loopback address (the fleet tests use 127.0.11-12.x and 127.0.50.x). */
const HOST = "127.0.31.1";
const URL_ = `http://${HOST}:7402`;
const DAY = 86_400_000;

const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.0/8",
  "--allow-env=POOLBOY_TOKEN",
];

async function poolboy(args: string[], token = ""): Promise<RunResult> {
  return await poolboyWith(PERMISSIONS, Deno.cwd(), args, { POOLBOY_TOKEN: token });
}

/** Runs `fn` with a control plane process on HOST whose data dir has a token per role. */
async function withControlPlane(
  fn: (tokens: Record<Role, string>) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const data = `${dir}/cp`;
    const tokens = {} as Record<Role, string>;
    for (const role of ROLES) {
      const run = await poolboy([
        "token",
        "create",
        "--data",
        data,
        "--role",
        role,
        "--name",
        `the-${role}`,
      ]);
      assert.equal(run.code, 0, run.stderr);
      tokens[role] = run.stdout.trim();
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MOD_PATH, "controlplane", "--bind", HOST, "--data", data, "-q"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const up = await fetch(`${URL_}/health`).then(async (r) => {
          await r.body?.cancel();
          return r.ok;
        }, () => false);
        if (up) break;
        if (Date.now() > deadline) throw new Error("the control plane's API did not answer");
        await new Promise((r) => setTimeout(r, 100));
      }
      await fn(tokens);
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await stderr;
    }
  });
}

async function call(
  method: string,
  path: string,
  authorization: string | undefined,
  body?: BodyInit,
): Promise<Response> {
  return await fetch(`${URL_}${path}`, {
    method,
    body,
    headers: authorization === undefined ? {} : { authorization },
  });
}

/** What an admin sees: versions (signed, counters), rollouts, the delegation, v1's manifest. */
async function adminView(admin: string): Promise<string> {
  const view: string[] = [];
  for (
    const path of [
      "/v1/models",
      "/v1/rollouts",
      "/v1/delegation",
      "/v1/models/resnet/versions/v1/release",
      "/v1/models/resnet/versions/v2/release",
      "/v1/models/resnet/releases",
    ]
  ) {
    const r = await call("GET", path, `Bearer ${admin}`);
    view.push(`${path} ${r.status} ${await r.text()}`);
  }
  return view.join("\n");
}

Deno.test({
  name:
    "a real control plane: every endpoint with no token, a wrong token or too low a role gets 401/403, nothing changes, and poolboy audit shows each",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withControlPlane(async (tokens) => {
    const admin = `Bearer ${tokens.admin}`;
    const root = (await generateKey("root")).key;
    const release = (await generateKey("release")).key;
    const delegation = (version: number) =>
      signDelegation({
        type: DELEGATION_TYPE,
        spec: SPEC_VERSION,
        version,
        expires: Date.now() + 365 * DAY,
        rootKeyId: root.keyId,
        releaseKeys: [{ keyId: release.keyId, publicKey: release.publicKey }],
      }, root);
    const manifest = (version: string, bytes: Uint8Array, counter: number) =>
      signRelease({
        type: RELEASE_TYPE,
        spec: SPEC_VERSION,
        model: "resnet",
        version,
        target: { blake3: toHex(blake3(bytes)), size: bytes.length },
        counter,
        expires: Date.now() + 90 * DAY,
        deviceClass: null,
      }, release);
    const [v1, v2, v3] = [1, 2, 3].map((seed) => randomBytes(4000, seed));
    // A rollout needs a device in its selection: eu-0 heartbeats once.
    const api = { url: URL_, token: tokens.admin };
    await heartbeatUntilListed(
      { hostname: HOST, port: DEFAULT_CP_UDP_PORT },
      api,
      "eu-0",
      async () => {
        const { agents } = await (await call("GET", "/v1/devices", admin)).json() as DeviceList;
        return agents.some((a) => a.nodeId === "eu-0");
      },
    );
    const seed: [string, string, BodyInit][] = [
      ["PUT", "/v1/models/resnet/versions/v1", v1],
      ["PUT", "/v1/models/resnet/versions/v2", v2],
      ["PUT", "/v1/delegation", await delegation(1)],
      ["PUT", "/v1/models/resnet/versions/v1/release", await manifest("v1", v1, 1)],
      ["POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" })],
    ];
    for (const [method, path, body] of seed) {
      const r = await call(method, path, admin, body);
      assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${await r.text()}`);
    }
    // Bodies each endpoint would accept from a caller allowed to send them.
    const bodies: Record<string, BodyInit> = {
      "PUT /v1/models/:model/versions/:version": v3,
      "PUT /v1/delegation": await delegation(2),
      "PUT /v1/models/:model/versions/:version/release": await manifest("v2", v2, 2),
      "POST /v1/rollouts": JSON.stringify({ model: "resnet", version: "v2" }),
      "POST /v1/rollback": JSON.stringify({ model: "resnet", to: "v1" }),
    };
    const before = await adminView(tokens.admin);
    const expected: { action: string; status: number; token: string | null }[] = [];
    for (const e of ENDPOINTS) {
      if (e.role === null) continue;
      const path = e.pattern
        .replace(":model", "resnet")
        .replace(":version", e.method === "PUT" && !e.pattern.endsWith("/release") ? "v3" : "v2")
        .replace("/v1/devices/:id", "/v1/devices/eu-0")
        .replace(":id", "1")
        .replace(":action", "pause");
      const body = bodies[`${e.method} ${e.pattern}`];
      const callers: [string | undefined, number, string | null][] = [
        [undefined, 401, null],
        ["Bearer pbt_wrong", 401, null],
        [`Bearer ${tokens.admin.slice(0, -2)}xx`, 401, null],
        ...ROLES.filter((r) => !allows(r, e.role!)).map((r): [string, number, string] => [
          `Bearer ${tokens[r]}`,
          403,
          `the-${r}`,
        ]),
      ];
      for (const [authorization, status, token] of callers) {
        const r = await call(e.method, path, authorization, body);
        const text = await r.text();
        assert.equal(r.status, status, `${e.method} ${path} with ${authorization}: ${text}`);
        assert.equal(text.trimEnd().split("\n").length, 1, "a one-line error");
        assert.match((JSON.parse(text) as { error: string }).error, /token/);
        expected.push({ action: `${e.method} ${path}`, status, token });
      }
    }
    assert.equal(await adminView(tokens.admin), before, "nothing changed");
    const run = await poolboy([
      "audit",
      "--control-plane",
      URL_,
      "--limit",
      String(expected.length),
      "--json",
    ], tokens.admin);
    assert.equal(run.code, 0, run.stderr);
    const { entries } = JSON.parse(run.stdout) as AuditList;
    assert.deepEqual(
      entries.map((a) => ({ action: a.action, status: a.status, token: a.token })),
      expected.reverse(),
      "every refusal, newest first",
    );
    const text = await poolboy(["audit", "--control-plane", URL_, "--limit", "1"], tokens.admin);
    assert.match(
      text.stdout,
      /Z the-deployer \(deployer\) 403 GET \/v1\/audit: role deployer, needs admin\n$/,
    );
  });
});
