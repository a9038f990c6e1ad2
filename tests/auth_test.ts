/**
 * Who may call the control plane's API (controlplane/auth.ts, the `role`
 * column of controlplane/http_api.ts), in process on a real SQLite store:
 * every endpoint but GET /health refuses no, a malformed, an unknown or a
 * revoked token with 401 and too low a role with 403, each a one-line JSON
 * error; a refused call changes nothing and is in the audit log; a permitted
 * call that changes something is audited with its answer; GET /v1/audit is
 * the admin's, newest first.
 */

import assert from "node:assert/strict";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { ENDPOINTS } from "../controlplane/http_api.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import {
  allows,
  createToken,
  decide,
  MAX_AUDIT_FIELD,
  newToken,
  parseAuthorization,
  TOKEN_PATTERN,
  tokenHash,
} from "../controlplane/auth.ts";
import type { AuditEntry } from "../controlplane/api_types.ts";
import { DATABASE_FILE, SqliteStore } from "../controlplane/sqlite_store.ts";
import { type Role, ROLES, type TokenRecord } from "../controlplane/state_store.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { ForbiddenError, UnauthorizedError } from "../kernel/errors.ts";
import {
  DELEGATION_TYPE,
  RELEASE_TYPE,
  signDelegation,
  signRelease,
  SPEC_VERSION,
} from "../release/documents.ts";
import { generateKey, type SigningKey } from "../release/keys.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { registerDevice } from "./support/devices.ts";

const DAY = 86_400_000;
const V1 = randomBytes(4000, 1);
const V2 = randomBytes(4000, 2);
const V3 = randomBytes(4000, 3);

/** The callers of these tests: one token per role, and one revoked (an admin's). */
type Who = Role | "revoked";

interface Api {
  readonly cp: ControlPlane;
  readonly dir: string;
  readonly tokens: Record<Who, string>;
  /** A call with `authorization` as the whole header (undefined: none sent). */
  raw(method: string, path: string, authorization?: string, body?: BodyInit): Promise<Response>;
  /** A call with the token of `who`. */
  as(who: Who, method: string, path: string, body?: BodyInit): Promise<Response>;
  /** The newest audit entries, read through the API as the admin. */
  audit(limit?: number): Promise<AuditEntry[]>;
  /** Everything a call could change but the audit log: versions, patches, rollouts, documents, tokens, blobs. */
  snapshot(): Promise<string>;
  /** Request bodies that would be accepted, per endpoint pattern and method. */
  readonly bodies: Record<string, () => BodyInit | undefined>;
}

async function keys(): Promise<{ root: SigningKey; release: SigningKey }> {
  return { root: (await generateKey("root")).key, release: (await generateKey("release")).key };
}

async function delegationOf(root: SigningKey, release: SigningKey, version: number) {
  return await signDelegation({
    type: DELEGATION_TYPE,
    spec: SPEC_VERSION,
    version,
    expires: Date.now() + 365 * DAY,
    rootKeyId: root.keyId,
    releaseKeys: [{ keyId: release.keyId, publicKey: release.publicKey }],
  }, root);
}

async function manifestOf(
  release: SigningKey,
  version: string,
  bytes: Uint8Array,
  counter: number,
) {
  return await signRelease({
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model: "resnet",
    version,
    target: { blake3: toHex(blake3(bytes)), size: bytes.length },
    counter,
    expires: Date.now() + 90 * DAY,
    deviceClass: null,
  }, release);
}

/**
 * A control plane with resnet v1 and v2 published, v1 signed, a delegation
 * stored and rollout 1 of v1 running, and a token per role.
 */
async function withApi(fn: (api: Api) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
      tickMs: 3_600_000,
      agentTimeoutMs: 3_600_000,
    });
    try {
      registerDevice(cp, "eu-0", "eu"); // a rollout needs a device in its selection
      const handler = apiHandler(cp);
      const tokens = {} as Record<Who, string>;
      for (const who of [...ROLES, "revoked"] as const) {
        const role = who === "revoked" ? "admin" : who;
        tokens[who] = (await createToken(cp.stateStore, role, who, 1)).token;
      }
      await cp.stateStore.revokeToken("revoked", 2);
      const raw = (method: string, path: string, authorization?: string, body?: BodyInit) =>
        handler(
          new Request(`http://127.0.0.1${path}`, {
            method,
            body,
            headers: authorization === undefined ? {} : { authorization },
          }),
        );
      const as = (who: Who, method: string, path: string, body?: BodyInit) =>
        raw(method, path, `Bearer ${tokens[who]}`, body);
      const ok = async (r: Promise<Response>) => {
        const response = await r;
        const text = await response.text();
        assert.ok(response.status < 300, `${response.status} ${text}`);
      };
      const { root, release } = await keys();
      await ok(as("admin", "PUT", "/v1/models/resnet/versions/v1", V1));
      await ok(as("admin", "PUT", "/v1/models/resnet/versions/v2", V2));
      await ok(as("admin", "PUT", "/v1/delegation", await delegationOf(root, release, 1)));
      await ok(
        as(
          "admin",
          "PUT",
          "/v1/models/resnet/versions/v1/release",
          await manifestOf(release, "v1", V1, 1),
        ),
      );
      await ok(
        as("admin", "POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" })),
      );
      const newerDelegation = await delegationOf(root, release, 2);
      const v2Manifest = await manifestOf(release, "v2", V2, 2);
      const bodies: Record<string, () => BodyInit | undefined> = {
        "PUT /v1/models/:model/versions/:version": () => V3,
        "PUT /v1/delegation": () => newerDelegation,
        "PUT /v1/models/:model/versions/:version/release": () => v2Manifest,
        "POST /v1/rollouts": () => JSON.stringify({ model: "resnet", version: "v2" }),
        "POST /v1/rollback": () => JSON.stringify({ model: "resnet", to: "v1" }),
      };
      const audit = async (limit = 1000) => {
        const r = await as("admin", "GET", `/v1/audit?limit=${limit}`);
        assert.equal(r.status, 200);
        return ((await r.json()) as { entries: AuditEntry[] }).entries;
      };
      const snapshot = async () => {
        const store = cp.stateStore;
        const blobs: string[] = [];
        for await (const e of Deno.readDir(`${dir}/blobs`)) blobs.push(e.name);
        return JSON.stringify({
          versions: await store.versions(),
          patches: await store.patches(),
          rollouts: await store.rollouts(),
          releases: await store.releases(),
          delegation: await store.delegation(),
          tokens: await store.tokens(),
          devices: [...cp.agents.keys()].sort(),
          blobs: blobs.sort(),
        });
      };
      await fn({ cp, dir, tokens, raw, as, audit, snapshot, bodies });
    } finally {
      await cp.close();
    }
  });
}

/** A concrete path of an endpoint's pattern: resnet, the version it would change, rollout 1. */
function pathOf(method: string, pattern: string): string {
  return pattern
    .replace(":model", "resnet")
    .replace(":version", method === "PUT" && !pattern.endsWith("/release") ? "v3" : "v2")
    .replace("/v1/devices/:id", "/v1/devices/eu-0")
    .replace(":id", "1")
    .replace(":action", "pause");
}

/** Every endpoint that needs a token, with a concrete path and a body that would be accepted. */
function guarded(api: Api) {
  return ENDPOINTS.filter((e) => e.role !== null).map((e) => ({
    method: e.method,
    pattern: e.pattern,
    role: e.role as Role,
    path: pathOf(e.method, e.pattern),
    body: api.bodies[`${e.method} ${e.pattern}`] ?? (() => undefined),
  }));
}

/** The body of a refusal: one line of JSON with an error. */
async function oneLineError(response: Response): Promise<string> {
  const text = await response.text();
  assert.equal(text.trimEnd().split("\n").length, 1, `one line: ${text}`);
  const body = JSON.parse(text) as { error?: unknown };
  assert.equal(typeof body.error, "string");
  return body.error as string;
}

Deno.test("roles: GET /health and a device's POST /v1/enroll need none, every other read a viewer, every change a deployer, removing or accepting a device, enrolment tokens and the audit log an admin", () => {
  for (const e of ENDPOINTS) {
    const expected = e.pattern === "/health" || e.pattern === "/v1/enroll"
      ? null
      : e.pattern === "/v1/audit" || e.method === "DELETE" ||
          e.pattern === "/v1/enrollment-tokens" || e.pattern === "/v1/devices/:id/accept"
      ? "admin"
      : e.method === "GET"
      ? "viewer"
      : "deployer";
    assert.equal(e.role, expected, `${e.method} ${e.pattern}`);
  }
  assert.ok(ENDPOINTS.some((e) => e.method === "GET" && e.pattern === "/v1/audit"));
});

Deno.test("roles are ordered: each can do what the ones below it can", () => {
  assert.deepEqual(ROLES, ["viewer", "deployer", "admin"]);
  for (const have of ROLES) {
    for (const need of ROLES) {
      assert.equal(
        allows(have, need),
        ROLES.indexOf(have) >= ROLES.indexOf(need),
        `${have} ${need}`,
      );
    }
  }
});

Deno.test("a token is pbt_ and 43 characters of base64url, different every time, and its hash is BLAKE3 hex", () => {
  const a = newToken();
  const b = newToken();
  assert.match(a, TOKEN_PATTERN);
  assert.equal(a.length, 47);
  assert.notEqual(a, b);
  assert.equal(tokenHash(a), toHex(blake3(new TextEncoder().encode(a))));
});

Deno.test("the Authorization header: Bearer and a whole token (scheme in any case); anything else is malformed", () => {
  const token = newToken();
  assert.deepEqual(parseAuthorization(null), { kind: "none" });
  assert.deepEqual(parseAuthorization(""), { kind: "none" });
  assert.deepEqual(parseAuthorization(`Bearer ${token}`), { kind: "token", token });
  assert.deepEqual(parseAuthorization(`bearer ${token}`), { kind: "token", token });
  for (
    const header of [
      token,
      `Basic ${token}`,
      "Bearer",
      "Bearer pbt_short",
      `Bearer ${token.slice(4)}`,
      `Bearer ${token} ${token}`,
      `Bearer ${token}x`,
      `Bearer ${token.slice(0, -1)}+`,
      `Bearer ${"x".repeat(10_000)}`,
    ]
  ) {
    assert.deepEqual(parseAuthorization(header), { kind: "malformed" }, header.slice(0, 60));
  }
});

Deno.test("the decision: 401 for no, malformed, unknown or revoked tokens, 403 below the role, else the caller", () => {
  const token: TokenRecord = { name: "ci", role: "deployer", hash: "h", created: 1, revoked: null };
  const creds = { kind: "token", token: newToken() } as const;
  const cases: [ReturnType<typeof decide>, typeof UnauthorizedError | null, string | null][] = [
    [decide({ kind: "none" }, undefined, "viewer", "GET /v1/status"), UnauthorizedError, null],
    [decide({ kind: "malformed" }, undefined, "viewer", "GET /v1/status"), UnauthorizedError, null],
    [decide(creds, undefined, "viewer", "GET /v1/status"), UnauthorizedError, null],
    [decide(creds, { ...token, revoked: 5 }, "viewer", "GET /v1/status"), UnauthorizedError, "ci"],
    [decide(creds, token, "admin", "GET /v1/audit"), ForbiddenError, "ci"],
    [decide(creds, token, "deployer", "POST /v1/rollouts"), null, "ci"],
    [decide(creds, token, "viewer", "GET /v1/status"), null, "ci"],
  ];
  for (const [decision, error, caller] of cases) {
    assert.equal(decision.caller?.name ?? null, caller);
    if (error === null) {
      assert.equal(decision.ok, true);
    } else {
      assert.equal(decision.ok, false);
      if (!decision.ok) assert.ok(decision.error instanceof error, decision.error.message);
    }
  }
});

Deno.test("GET /health needs no token", async () => {
  await withApi(async ({ raw }) => {
    const r = await raw("GET", "/health");
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as { ok: boolean }).ok, true);
  });
});

Deno.test("every endpoint refuses no, a malformed, an unknown or a revoked token with 401, changes nothing, and the audit log has each", async () => {
  await withApi(async (api) => {
    const credentials: [string, string | undefined, string | null, RegExp][] = [
      [
        "no token",
        undefined,
        null,
        /no token: send "Authorization: Bearer TOKEN".*poolboy token create/,
      ],
      [
        "malformed token",
        "Bearer not-a-token",
        null,
        /malformed Authorization header.*poolboy token create/,
      ],
      ["malformed token", api.tokens.admin, null, /malformed/],
      ["unknown token", `Bearer ${newToken()}`, null, /unknown token.*poolboy token create/],
      ["revoked token", `Bearer ${api.tokens.revoked}`, "revoked", /token "revoked" was revoked/],
    ];
    const endpoints = guarded(api);
    assert.ok(endpoints.length >= 17, "every endpoint of the table");
    const before = await api.snapshot();
    for (const e of endpoints) {
      for (const [reason, authorization, tokenName, message] of credentials) {
        const what = `${e.method} ${e.path} with ${reason}`;
        const r = await api.raw(e.method, e.path, authorization, e.body());
        assert.equal(r.status, 401, what);
        assert.match(await oneLineError(r), message, what);
        assert.equal(await api.snapshot(), before, `${what} changed nothing`);
        const [newest] = await api.audit(1);
        assert.deepEqual(
          { ...newest, at: 0 },
          {
            at: 0,
            token: tokenName,
            role: tokenName === null ? null : "admin",
            action: `${e.method} ${e.path}`,
            target: newest.target,
            status: 401,
            reason,
          },
          what,
        );
      }
    }
  });
});

Deno.test("a token below the endpoint's role gets 403 saying which role it needs, changes nothing, and the audit log has it", async () => {
  await withApi(async (api) => {
    const before = await api.snapshot();
    let refusals = 0;
    for (const e of guarded(api)) {
      for (const who of ROLES.filter((r) => !allows(r, e.role))) {
        const what = `${e.method} ${e.path} as ${who}`;
        const r = await api.as(who, e.method, e.path, e.body());
        assert.equal(r.status, 403, what);
        assert.match(
          await oneLineError(r),
          new RegExp(`token "${who}" has role ${who}; .* needs ${e.role} or above`),
          what,
        );
        assert.equal(await api.snapshot(), before, `${what} changed nothing`);
        const [newest] = await api.audit(1);
        assert.deepEqual(
          [newest.token, newest.role, newest.action, newest.status, newest.reason],
          [who, who, `${e.method} ${e.path}`, 403, `role ${who}, needs ${e.role}`],
          what,
        );
        refusals++;
      }
    }
    // Viewers: the 6 kinds of change, removing a device and the audit log; deployers: the
    // audit log and removing a device; both: making an enrolment token and accepting a device.
    assert.equal(refusals, 14);
  });
});

Deno.test("a token of the endpoint's role or above is let through on every endpoint", async () => {
  await withApi(async (api) => {
    for (const e of guarded(api)) {
      for (const who of ROLES.filter((r) => allows(r, e.role))) {
        const r = await api.as(who, e.method, e.path, e.body());
        assert.ok(![401, 403].includes(r.status), `${e.method} ${e.path} as ${who}: ${r.status}`);
        await r.body?.cancel();
      }
    }
  });
});

Deno.test("a permitted change is audited with its token, role, action, target and answer; a failed one too; reads are not", async () => {
  await withApi(async (api) => {
    const created = await api.as(
      "deployer",
      "POST",
      "/v1/rollouts",
      api.bodies["POST /v1/rollouts"](),
    );
    assert.equal(created.status, 201);
    const id = ((await created.json()) as { id: number }).id;
    const [entry] = await api.audit(1);
    assert.ok(entry.at > 0);
    assert.deepEqual({ ...entry, at: 0 }, {
      at: 0,
      token: "deployer",
      role: "deployer",
      action: "POST /v1/rollouts",
      target: `rollout ${id}: resnet v2`,
      status: 201,
      reason: "ok",
    });
    const paused = await api.as("deployer", "POST", `/v1/rollouts/${id}/pause`);
    assert.equal(paused.status, 200);
    await paused.body?.cancel();
    const [pause] = await api.audit(1);
    assert.deepEqual(
      [pause.token, pause.action, pause.target, pause.status],
      ["deployer", `POST /v1/rollouts/${id}/pause`, `rollout ${id}`, 200],
    );
    const unknown = await api.as(
      "admin",
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "nope", version: "v1" }),
    );
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
    const [failed] = await api.audit(1);
    assert.deepEqual(
      [failed.token, failed.role, failed.target, failed.status],
      ["admin", "admin", "nope v1", 404],
    );
    assert.match(failed.reason, /unknown model "nope"/);
    const count = (await api.audit()).length;
    for (const path of ["/v1/status", "/v1/models", "/v1/rollouts", "/v1/rollouts/1"]) {
      const r = await api.as("viewer", "GET", path);
      assert.equal(r.status, 200, path);
      await r.body?.cancel();
    }
    assert.equal((await api.audit()).length, count, "reads are not audited");
  });
});

Deno.test("an unknown path or method needs a token too: 401 without one, 404 or 405 with one (and audited unless a read)", async () => {
  await withApi(async (api) => {
    for (const [method, path] of [["GET", "/v2/secret"], ["DELETE", "/v1/rollouts"]]) {
      const r = await api.raw(method, path);
      assert.equal(r.status, 401, `${method} ${path}`);
      await r.body?.cancel();
    }
    const notFound = await api.as("viewer", "GET", "/v2/secret");
    assert.equal(notFound.status, 404);
    await notFound.body?.cancel();
    const wrongMethod = await api.as("viewer", "DELETE", "/v1/rollouts");
    assert.equal(wrongMethod.status, 405);
    await wrongMethod.body?.cancel();
    const [newest] = await api.audit(1);
    assert.deepEqual(
      [newest.token, newest.action, newest.status],
      ["viewer", "DELETE /v1/rollouts", 405],
    );
  });
});

Deno.test("GET /v1/audit: newest first, 100 by default, 1 to 1000 asked; another limit is 400", async () => {
  await withApi(async (api) => {
    for (let n = 0; n < 105; n++) {
      const r = await api.raw("GET", `/v1/status?n=${n}`);
      await r.body?.cancel();
    }
    const r = await api.as("admin", "GET", "/v1/audit");
    assert.equal(r.status, 200);
    const { entries } = (await r.json()) as { entries: AuditEntry[] };
    assert.equal(entries.length, 100);
    assert.ok(entries.every((e, i) => i === 0 || entries[i - 1].at >= e.at), "newest first");
    const two = await api.audit(2);
    assert.deepEqual(two, entries.slice(0, 2));
    for (const limit of ["0", "1001", "ten", "-1", "1e3"]) {
      const bad = await api.as("admin", "GET", `/v1/audit?limit=${limit}`);
      assert.equal(bad.status, 400, limit);
      assert.match(await oneLineError(bad), /limit must be a whole number from 1 to 1000/);
    }
  });
});

Deno.test("hostile paths and headers are refused and stored cut to 256 characters", async () => {
  await withApi(async (api) => {
    const long = `/v1/${"a".repeat(5000)}`;
    const r = await api.raw("POST", long, `Bearer ${"x".repeat(100_000)}`, "{}");
    assert.equal(r.status, 401);
    await r.body?.cancel();
    const [entry] = await api.audit(1);
    assert.equal(entry.reason, "malformed token");
    assert.equal(entry.action.length, MAX_AUDIT_FIELD);
    assert.ok(entry.action.startsWith("POST /v1/aaaa"));
    const huge = "m".repeat(128);
    const rollout = await api.as(
      "deployer",
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: huge, version: huge, region: huge }),
    );
    assert.equal(rollout.status, 404);
    await rollout.body?.cancel();
    const [failed] = await api.audit(1);
    assert.equal(
      failed.target?.length,
      MAX_AUDIT_FIELD,
      "model, version and region: 389 characters",
    );
    assert.ok(failed.reason.length <= MAX_AUDIT_FIELD);
  });
});

Deno.test("a token revoked in the database while the control plane runs is refused from the next call", async () => {
  await withApi(async (api) => {
    const before = await api.as("deployer", "GET", "/v1/status");
    assert.equal(before.status, 200);
    await before.body?.cancel();
    // What `poolboy token revoke` does: its own connection to the same database.
    const cli = await SqliteStore.open(`${api.dir}/${DATABASE_FILE}`);
    try {
      assert.equal(await cli.revokeToken("deployer", Date.now()), true);
    } finally {
      await cli.close();
    }
    const after = await api.as("deployer", "GET", "/v1/status");
    assert.equal(after.status, 401);
    assert.match(await oneLineError(after), /token "deployer" was revoked/);
  });
});
