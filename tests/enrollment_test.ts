/**
 * Device enrolment (issue 14, "Device identity"): an admin's enrolment token
 * enrols as many devices as its uses allow until it expires; a device without
 * a token waits, pending, for an admin's accept; pending requests are bounded;
 * the agent makes its key pair at first start (private key 0600), checks the
 * MAC of the control plane's answer and pins its key in DATA/enrollment.json —
 * and refuses to pin a key whose MAC does not match its token.
 */

import assert from "node:assert/strict";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { ConflictError } from "../kernel/errors.ts";
import { Enrollment, MAX_PENDING, PENDING_TTL_MS } from "../controlplane/enrollment.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import {
  deviceKey,
  EnrollmentRefusedError,
  readEnrollment,
  requestEnrollment,
} from "../agent/enrollment.ts";
import { ENROLLMENT_TOKEN_PATTERN, enrollmentTokenHash } from "../release/enrollment.ts";
import { fromBase64Url, generateKey, keyIdOf, toBase64Url } from "../release/keys.ts";
import { DATABASE_FILE, SqliteStore } from "../controlplane/sqlite_store.ts";
import type { StateStore } from "../controlplane/state_store.ts";
import { MemoryStore } from "./support/memory_store.ts";
import { withApi } from "./support/api_harness.ts";
import { withTempDir } from "./helpers.ts";

/** A device's enrolment body with a fresh key. */
async function deviceBody(nodeId: string, token?: string): Promise<Record<string, unknown>> {
  const { key } = await generateKey("device");
  return { nodeId, region: "eu", publicKey: toBase64Url(key.publicKey), token };
}

async function newEnrollment(): Promise<Enrollment> {
  const { key } = await generateKey("controlplane");
  return new Enrollment(new MemoryStore(), key, []);
}

/** Serves `cp`'s API on 127.0.0.1 (a port the OS picks) while `fn` runs. */
async function withServedApi(
  cp: ControlPlane,
  fn: (address: string) => Promise<void>,
): Promise<void> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    apiHandler(cp),
  );
  try {
    await fn(`127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

Deno.test("an enrolment token of one use enrols one device; a second device with it is refused (403), and both calls are audited", async () => {
  await withApi({}, async ({ cp, call }) => {
    const made = await call(
      "POST",
      "/v1/enrollment-tokens",
      JSON.stringify({ uses: 1, expiresMs: 3_600_000 }),
    );
    assert.equal(made.status, 201);
    const { token, uses } = await made.json();
    assert.match(token, ENROLLMENT_TOKEN_PATTERN);
    assert.equal(uses, 1);
    const first = await call("POST", "/v1/enroll", JSON.stringify(await deviceBody("eu-0", token)));
    assert.equal(first.status, 200);
    const answer = await first.json();
    assert.equal(answer.nodeId, "eu-0");
    assert.equal(answer.controlPlaneKey, cp.enrollment.publicKey);
    assert.equal(typeof answer.mac, "string");
    assert.ok(cp.enrollment.device("eu-0"));
    const second = await call(
      "POST",
      "/v1/enroll",
      JSON.stringify(await deviceBody("eu-1", token)),
    );
    assert.equal(second.status, 403);
    assert.match((await second.json()).error, /used up/);
    assert.equal(cp.enrollment.device("eu-1"), undefined);
    const audit = await cp.stateStore.audit(10);
    assert.deepEqual(
      audit.filter((a) => a.action === "POST /v1/enroll").map((a) => [a.target, a.status]),
      [["device eu-1", 403], ["device eu-0", 200]],
    );
  });
});

/** Each store, by name, opened in `dir` (the memory store ignores it). */
const STORES: readonly [string, (dir: string) => Promise<StateStore>][] = [
  ["SQLite", (dir) => SqliteStore.open(`${dir}/${DATABASE_FILE}`)],
  ["in memory", () => Promise.resolve(new MemoryStore())],
];

for (const [kind, open] of STORES) {
  Deno.test(`five concurrent enrolments with a token of one use enrol exactly one device; the others are refused (403) (${kind})`, async () => {
    await withTempDir(async (dir) => {
      const store = await open(dir);
      try {
        const { key } = await generateKey("controlplane");
        const enrollment = new Enrollment(store, key, []);
        const now = Date.now();
        const { token } = await enrollment.createToken(1, 60_000, now);
        const bodies = await Promise.all(
          [0, 1, 2, 3, 4].map((i) => deviceBody(`eu-${i}`, token)),
        );
        const results = await Promise.allSettled(bodies.map((b) => enrollment.enroll(b, now)));
        const enrolled = results.filter((r) => r.status === "fulfilled");
        assert.equal(enrolled.length, 1);
        for (const r of results) {
          if (r.status === "rejected") {
            assert.ok(r.reason instanceof Error && "httpStatus" in r.reason);
            assert.equal(r.reason.httpStatus, 403);
          }
        }
        assert.equal(enrollment.devices().length, 1);
        assert.equal((await store.deviceKeys()).length, 1);
        assert.equal((await store.enrollmentToken(enrollmentTokenHash(token)))?.usesLeft, 0);
      } finally {
        await store.close();
      }
    });
  });
}

Deno.test("a token does not take over an enrolled device: another key under its id is refused (409, remove it first), the same key again is answered without using the token", async () => {
  const enrollment = await newEnrollment();
  const now = 10_000;
  const { token } = await enrollment.createToken(2, 60_000, now);
  const first = await deviceBody("eu-0", token);
  const enrolled = await enrollment.enroll(first, now);
  assert.equal(enrolled.kind, "enrolled");
  const attacker = await deviceBody("eu-0", token);
  await assert.rejects(
    enrollment.enroll(attacker, now + 1),
    (err: unknown) =>
      err instanceof ConflictError && /poolboy device remove eu-0/.test(err.message),
  );
  assert.equal(enrollment.device("eu-0")?.publicKey, first.publicKey);
  // The same key again (an agent that restarted before it wrote enrollment.json): the same answer.
  assert.deepEqual(await enrollment.enroll(first, now + 2), enrolled);
  assert.equal(enrollment.device("eu-0")?.publicKey, first.publicKey);
  // Both refused and repeated requests left the token's second use.
  assert.equal(
    (await enrollment.enroll(await deviceBody("eu-1", token), now + 3)).kind,
    "enrolled",
  );
  // Once an admin removes it, the id enrols with a new key (and a token with uses left).
  const { token: next } = await enrollment.createToken(1, 60_000, now);
  assert.ok(await enrollment.remove("eu-0"));
  assert.equal((await enrollment.enroll({ ...attacker, token: next }, now + 4)).kind, "enrolled");
  assert.equal(enrollment.device("eu-0")?.publicKey, attacker.publicKey);
});

Deno.test("two concurrent enrolments of one id with different keys: one is enrolled, the other refused (409)", async () => {
  const enrollment = await newEnrollment();
  const { token } = await enrollment.createToken(5, 60_000, 10_000);
  const bodies = [await deviceBody("eu-0", token), await deviceBody("eu-0", token)];
  const results = await Promise.allSettled(bodies.map((b) => enrollment.enroll(b, 10_001)));
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  const refused = results.find((r) => r.status === "rejected");
  assert.ok(refused?.status === "rejected" && refused.reason instanceof ConflictError);
  const winner = results[0].status === "fulfilled" ? bodies[0] : bodies[1];
  assert.equal(enrollment.device("eu-0")?.publicKey, winner.publicKey);
});

Deno.test("an expired enrolment token enrols nothing (403), an unknown one is refused (401)", async () => {
  const enrollment = await newEnrollment();
  const { token } = await enrollment.createToken(5, 1000, 10_000);
  await assert.rejects(
    enrollment.enroll(await deviceBody("eu-0", token), 11_000),
    (err: unknown) => err instanceof Error && "httpStatus" in err && err.httpStatus === 403,
  );
  const unknown = "pbe_" + "A".repeat(43);
  await assert.rejects(
    enrollment.enroll(await deviceBody("eu-0", unknown), 10_500),
    (err: unknown) => err instanceof Error && "httpStatus" in err && err.httpStatus === 401,
  );
  assert.deepEqual(enrollment.devices(), []);
});

Deno.test("a device that asks without a token is pending (202) until an admin accepts it; then it is given the control plane's key without a MAC", async () => {
  await withApi({}, async ({ cp, call }) => {
    const body = JSON.stringify(await deviceBody("eu-0"));
    const asked = await call("POST", "/v1/enroll", body);
    assert.equal(asked.status, 202);
    assert.deepEqual(await asked.json(), { pending: true });
    const listed = await (await call("GET", "/v1/devices")).json();
    assert.deepEqual(listed.pending.map((p: { nodeId: string }) => p.nodeId), ["eu-0"]);
    const keyId = keyIdOf(fromBase64Url(JSON.parse(body).publicKey)!);
    assert.equal(listed.pending[0].keyId, keyId);
    assert.equal(cp.enrollment.device("eu-0"), undefined);
    assert.equal((await call("POST", "/v1/enroll", body)).status, 202);
    const accepted = await call(
      "POST",
      "/v1/devices/eu-0/accept",
      JSON.stringify({ keyId: keyId.slice(0, 16) }),
    );
    assert.equal(accepted.status, 200);
    assert.deepEqual(await accepted.json(), { nodeId: "eu-0", accepted: true });
    const again = await call("POST", "/v1/enroll", body);
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), {
      nodeId: "eu-0",
      controlPlaneKey: cp.enrollment.publicKey,
      mac: null,
    });
    assert.equal(
      (await call("POST", "/v1/devices/nobody/accept", JSON.stringify({ keyId }))).status,
      404,
    );
  });
});

Deno.test("a later request under a pending id does not replace its key, and accept must name the pending key's id (409 another, 400 none or too short)", async () => {
  await withApi({}, async ({ cp, call }) => {
    const device = await deviceBody("eu-0");
    const attacker = await deviceBody("eu-0");
    assert.equal((await call("POST", "/v1/enroll", JSON.stringify(device))).status, 202);
    assert.equal((await call("POST", "/v1/enroll", JSON.stringify(attacker))).status, 202);
    const listed = await (await call("GET", "/v1/devices")).json();
    const keyId = keyIdOf(fromBase64Url(device.publicKey as string)!);
    const attackerKeyId = keyIdOf(fromBase64Url(attacker.publicKey as string)!);
    assert.deepEqual(
      listed.pending.map((p: { nodeId: string; keyId: string }) => [p.nodeId, p.keyId]),
      [["eu-0", keyId]],
    );
    const accept = (body?: string) => call("POST", "/v1/devices/eu-0/accept", body);
    assert.equal((await accept(JSON.stringify({ keyId: attackerKeyId }))).status, 409);
    assert.equal((await accept(JSON.stringify({}))).status, 400);
    assert.equal((await accept(JSON.stringify({ keyId: keyId.slice(0, 15) }))).status, 400);
    assert.equal((await accept()).status, 400);
    assert.equal(cp.enrollment.device("eu-0"), undefined);
    // The attacker's retries are still pending, without a key; the device's is enrolled.
    assert.equal((await accept(JSON.stringify({ keyId: keyId.toUpperCase() }))).status, 200);
    assert.equal(cp.enrollment.device("eu-0")?.publicKey, device.publicKey);
    assert.equal((await call("POST", "/v1/enroll", JSON.stringify(attacker))).status, 202);
    assert.equal((await call("POST", "/v1/enroll", JSON.stringify(device))).status, 200);
    assert.equal(cp.enrollment.device("eu-0")?.publicKey, device.publicKey);
  });
});

Deno.test("a pending request expires: then a new request under its id is the one listed", async () => {
  const enrollment = await newEnrollment();
  const first = await deviceBody("eu-0");
  const second = await deviceBody("eu-0");
  await enrollment.enroll(first, 1000);
  await enrollment.enroll(second, 2000);
  assert.deepEqual(enrollment.pending(3000).map((p) => p.publicKey), [first.publicKey]);
  await enrollment.enroll(second, 1001 + PENDING_TTL_MS);
  assert.deepEqual(
    enrollment.pending(1002 + PENDING_TTL_MS).map((p) => p.publicKey),
    [second.publicKey],
  );
});

Deno.test("pending enrolment requests are bounded: past the bound the oldest is dropped, and each expires", async () => {
  const enrollment = await newEnrollment();
  for (let i = 0; i <= MAX_PENDING; i++) {
    await enrollment.enroll(await deviceBody(`d-${i}`), 1000 + i);
  }
  const pending = enrollment.pending(2000 + MAX_PENDING);
  assert.equal(pending.length, MAX_PENDING);
  assert.ok(!pending.some((p) => p.nodeId === "d-0"));
  assert.deepEqual(enrollment.pending(1000 + MAX_PENDING + PENDING_TTL_MS + 1), []);
});

Deno.test("an agent enrolled with a token keeps its key pair (private key 0600) and pins the control plane's key in enrollment.json", async () => {
  await withApi({}, async ({ cp }) => {
    const { token } = await cp.enrollment.createToken(1, 60_000, Date.now());
    await withServedApi(cp, async (address) => {
      await withTempDir(async (dataDir) => {
        const key = await deviceKey(dataDir);
        assert.equal((await Deno.stat(`${dataDir}/device.key`)).mode! & 0o777, 0o600);
        assert.deepEqual((await deviceKey(dataDir)).publicKey, key.publicKey);
        assert.equal(await readEnrollment(dataDir), undefined);
        const result = await requestEnrollment({
          dataDir,
          nodeId: "eu-0",
          region: "eu",
          key,
          controlPlane: address,
          token,
        });
        assert.equal(result.kind, "enrolled");
        assert.deepEqual(await readEnrollment(dataDir), {
          format: 1,
          nodeId: "eu-0",
          controlPlaneKey: cp.enrollment.publicKey,
          controlPlane: address,
        });
        assert.equal(cp.enrollment.device("eu-0")?.publicKey, toBase64Url(key.publicKey));
      });
    });
  });
});

Deno.test("an agent refuses to pin a control-plane key whose answer's MAC does not match its token", async () => {
  const { key: impostor } = await generateKey("controlplane");
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      Response.json({
        nodeId: "eu-0",
        controlPlaneKey: toBase64Url(impostor.publicKey),
        mac: toBase64Url(new Uint8Array(32)),
      }),
  );
  try {
    await withTempDir(async (dataDir) => {
      await assert.rejects(
        requestEnrollment({
          dataDir,
          nodeId: "eu-0",
          region: "eu",
          key: await deviceKey(dataDir),
          controlPlane: `127.0.0.1:${server.addr.port}`,
          token: "pbe_" + "B".repeat(43),
        }),
        EnrollmentRefusedError,
      );
      assert.equal(await readEnrollment(dataDir), undefined);
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("removing a device forgets its enrolled key", async () => {
  await withApi({}, async ({ cp, call }) => {
    const { token } = await cp.enrollment.createToken(1, 60_000, Date.now());
    await cp.enrollment.enroll(await deviceBody("eu-0", token), Date.now());
    assert.equal((await call("DELETE", "/v1/devices/eu-0")).status, 200);
    assert.equal(cp.enrollment.device("eu-0"), undefined);
    assert.deepEqual(await cp.stateStore.deviceKeys(), []);
  });
});
