/**
 * The control plane stores and forwards signed release documents, in process
 * (docs/spec/release-v1.md, "What the control plane stores and serves"): the
 * delegation only moves forward, a manifest must be the published version's
 * or nothing is stored, the highest counter is reported, versions say whether
 * they are signed, and each election's Announce names the two documents by
 * digest — which the control plane's blob server serves byte for byte.
 */

import assert from "node:assert/strict";
import { type DeviceKeys, deviceSocket, enrollDevice } from "./support/identity.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import type { VersionList } from "../controlplane/api_types.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import {
  DELEGATION_TYPE,
  type Release,
  RELEASE_TYPE,
  signDelegation,
  signRelease,
  SPEC_VERSION,
} from "../release/documents.ts";
import { generateKey, type SigningKey } from "../release/keys.ts";
import type { Announce, ControlMessage } from "../transfer/control_messages.ts";
import { fetchSmallBlob } from "../transfer/blob_client.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { type Api, withApi as withApiAs } from "./support/api_harness.ts";

const DAY = 86_400_000;

/** Every call is a deployer's; only the test's own ticks run. */
async function withApi(fn: (api: Api) => Promise<void>): Promise<void> {
  await withApiAs({
    role: "deployer",
    controlPlane: { tickMs: 3_600_000, agentTimeoutMs: 3_600_000 },
  }, fn);
}

async function keys() {
  const root = (await generateKey("root")).key;
  const release = (await generateKey("release")).key;
  return { root, release };
}

async function delegation(root: SigningKey, names: SigningKey[], version: number) {
  return await signDelegation({
    type: DELEGATION_TYPE,
    spec: SPEC_VERSION,
    version,
    expires: Date.now() + 365 * DAY,
    rootKeyId: root.keyId,
    releaseKeys: names.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
  }, root);
}

function manifest(
  key: SigningKey,
  over: Partial<Release> & { target: Release["target"] },
): Promise<string> {
  return signRelease({
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model: "resnet",
    version: "v1",
    counter: 1,
    expires: Date.now() + 90 * DAY,
    deviceClass: null,
    ...over,
  }, key);
}

async function blobCount(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(`${dir}/blobs`)) if (/^[0-9a-f]{64}$/.test(e.name)) n++;
  return n;
}

async function error(r: Response): Promise<string> {
  return String(((await r.json()) as { error: string }).error);
}

Deno.test("a delegation is stored once per version: the same bytes again are 200, an older version or other bytes of the same version 409", async () => {
  await withApi(async ({ call }) => {
    const { root, release } = await keys();
    assert.equal((await call("GET", "/v1/delegation")).status, 404);
    const v1 = await delegation(root, [release], 1);
    const first = await call("PUT", "/v1/delegation", v1);
    assert.equal(first.status, 201);
    const stored = await first.json() as { digest: string; version: number; created: boolean };
    assert.equal(stored.version, 1);
    assert.equal(stored.digest, toHex(blake3(new TextEncoder().encode(v1))));
    assert.equal((await call("PUT", "/v1/delegation", v1)).status, 200);
    const v1b = await delegation(root, [], 1);
    const other = await call("PUT", "/v1/delegation", v1b);
    assert.equal(other.status, 409);
    assert.match(await error(other), /version 1 is already stored with other bytes/);
    const v2 = await delegation(root, [release], 2);
    assert.equal((await call("PUT", "/v1/delegation", v2)).status, 201);
    const older = await call("PUT", "/v1/delegation", v1);
    assert.equal(older.status, 409);
    assert.match(await error(older), /version 2 is stored; version 1 is older/);
    const got = await call("GET", "/v1/delegation");
    assert.equal(got.status, 200);
    assert.equal(await got.text(), v2, "served byte for byte");
    const malformed = await call("PUT", "/v1/delegation", '{"signed":{},"signatures":[]}');
    assert.equal(malformed.status, 400);
    assert.equal(await (await call("GET", "/v1/delegation")).text(), v2);
  });
});

Deno.test("a manifest that is not the published version's (digest, size, model or version) is refused with 409 and nothing is stored", async () => {
  await withApi(async ({ call, dir }) => {
    const { release } = await keys();
    const bytes = randomBytes(5000, 1);
    const digest = toHex(blake3(bytes));
    const path = "/v1/models/resnet/versions/v1/release";
    const unpublished = await call(
      "PUT",
      path,
      await manifest(release, {
        target: { blake3: digest, size: 5000 },
      }),
    );
    assert.equal(unpublished.status, 404);
    await call("PUT", "/v1/models/resnet/versions/v1", bytes);
    const blobsBefore = await blobCount(dir);
    const cases: [Partial<Release> & { target: Release["target"] }, RegExp][] = [
      [{ target: { blake3: "ab".repeat(32), size: 5000 } }, /target blake3 abab/],
      [{ target: { blake3: digest, size: 4999 } }, /target size 4999 \(published: 5000\)/],
      [{ target: { blake3: digest, size: 5000 }, model: "bert" }, /model bert/],
      [{ target: { blake3: digest, size: 5000 }, version: "v2" }, /version v2/],
    ];
    for (const [over, why] of cases) {
      const r = await call("PUT", path, await manifest(release, over));
      assert.equal(r.status, 409, String(why));
      assert.match(await error(r), why);
    }
    assert.equal((await call("PUT", path, "{}")).status, 400);
    assert.equal((await call("GET", path)).status, 404);
    assert.equal(await blobCount(dir), blobsBefore, "no refused manifest is kept");
    const list = await (await call("GET", "/v1/models")).json() as VersionList;
    assert.equal(list.versions[0].signed, false);
    assert.equal(list.versions[0].counter, null);
  });
});

Deno.test("a stored manifest is served byte for byte, makes its version signed, and the highest counter of the model is reported", async () => {
  await withApi(async ({ call }) => {
    const { release } = await keys();
    const releases = async () =>
      (await (await call("GET", "/v1/models/resnet/releases")).json()) as {
        model: string;
        highestCounter: number;
      };
    assert.deepEqual(await releases(), { model: "resnet", highestCounter: 0 });
    const files = [randomBytes(3000, 1), randomBytes(3000, 2)];
    for (const [i, bytes] of files.entries()) {
      await call("PUT", `/v1/models/resnet/versions/v${i + 1}`, bytes);
    }
    const target = (i: number) => ({ blake3: toHex(blake3(files[i])), size: 3000 });
    const m1 = await manifest(release, { target: target(0), counter: 1 });
    const put = await call("PUT", "/v1/models/resnet/versions/v1/release", m1);
    assert.equal(put.status, 201);
    assert.equal((await call("PUT", "/v1/models/resnet/versions/v1/release", m1)).status, 200);
    const m2 = await manifest(release, { target: target(1), version: "v2", counter: 7 });
    assert.equal((await call("PUT", "/v1/models/resnet/versions/v2/release", m2)).status, 201);
    assert.deepEqual(await releases(), { model: "resnet", highestCounter: 7 });
    assert.equal(
      await (await call("GET", "/v1/models/resnet/versions/v1/release")).text(),
      m1,
    );
    // A rollback re-signs v1 with a higher counter: it replaces v1's current manifest.
    const m1b = await manifest(release, { target: target(0), counter: 8 });
    assert.equal((await call("PUT", "/v1/models/resnet/versions/v1/release", m1b)).status, 201);
    assert.equal(
      await (await call("GET", "/v1/models/resnet/versions/v1/release")).text(),
      m1b,
    );
    assert.equal((await releases()).highestCounter, 8);
    const list = await (await call("GET", "/v1/models")).json() as VersionList;
    assert.deepEqual(
      list.versions.map((v) => [v.version, v.signed, v.counter]),
      [["v1", true, 8], ["v2", true, 7]],
    );
    const other = await (await call("GET", "/v1/models/bert/releases")).json();
    assert.deepEqual(other, { model: "bert", highestCounter: 0 });
  });
});

Deno.test({
  name:
    "an election's Announce names the version's manifest and the delegation by digest, and the control plane's blob server serves exactly those bytes",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withApi(async ({ cp, call }) => {
    const { root, release } = await keys();
    const deviceKeys: DeviceKeys = new Map();
    await enrollDevice(cp, "eu-0", "eu", deviceKeys);
    const agent = deviceSocket("127.0.0.2", deviceKeys);
    const received: ControlMessage[] = [];
    const receiving = (async () => {
      for await (const { message } of agent.messages()) received.push(message);
    })();
    try {
      await agent.send({
        type: "heartbeat",
        nodeId: "eu-0",
        region: "eu",
        host: "127.0.0.2",
        udpPort: agent.port,
        p2pPort: 7411,
        held: [],
        active: [],
        served: 0,
        startedAt: 1,
      }, { hostname: "127.0.0.1", port: cp.socket.port });
      await until(() => cp.agents.has("eu-0"), "registration");
      const files = [randomBytes(4000, 1), randomBytes(4000, 2)];
      await call("PUT", "/v1/models/resnet/versions/v1", files[0]);
      await call("PUT", "/v1/models/resnet/versions/v2", files[1]);
      const d = await delegation(root, [release], 1);
      await call("PUT", "/v1/delegation", d);
      const m = await manifest(release, {
        target: { blake3: toHex(blake3(files[0])), size: 4000 },
      });
      await call("PUT", "/v1/models/resnet/versions/v1/release", m);

      // A signed version: both digests.
      await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" }));
      cp.tick(Date.now());
      await until(() => received.some((x) => x.type === "announce"), "the announce");
      const signed = received.find((x) => x.type === "announce") as Announce;
      const enc = new TextEncoder();
      assert.deepEqual(signed.releaseDigest, blake3(enc.encode(m)));
      assert.deepEqual(signed.delegationDigest, blake3(enc.encode(d)));
      for (const [digest, text] of [[signed.releaseDigest!, m], [signed.delegationDigest!, d]]) {
        const bytes = await fetchSmallBlob({
          source: { hostname: signed.cpHost, port: signed.cpP2pPort, label: "control plane" },
          digest: digest as Uint8Array,
          maxBytes: 64 * 1024,
          deadlineMs: 5000,
          // Blob protocol version 2: the control plane serves only an enrolled device.
          credentials: { nodeId: "eu-0", privateKey: deviceKeys.get("eu-0")!.privateKey },
        });
        assert.equal(new TextDecoder().decode(bytes), text);
      }

      // An unsigned version (v2 has no manifest): neither digest.
      received.length = 0;
      await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v2" }));
      cp.tick(Date.now());
      await until(() => received.some((x) => x.type === "announce"), "the second announce");
      const unsigned = received.find((x) => x.type === "announce") as Announce;
      assert.equal(unsigned.version, "v2");
      assert.equal(unsigned.releaseDigest, null);
      assert.equal(unsigned.delegationDigest, null);
    } finally {
      agent.close();
      await receiving;
    }
  });
});

Deno.test("release documents and the delegation are still there after a restart (SQLite)", async () => {
  await withTempDir(async (dir) => {
    const { root, release } = await keys();
    const bytes = randomBytes(2000, 3);
    const d = await delegation(root, [release], 3);
    const m = await manifest(release, {
      target: { blake3: toHex(blake3(bytes)), size: 2000 },
      counter: 4,
    });
    const start = () =>
      ControlPlane.start({ bind: "127.0.0.1", dataDir: dir, udpPort: 0, p2pPort: 0 });
    const first = await start();
    try {
      await first.publish("resnet", "v1", new Blob([bytes]).stream());
      await first.putDelegation(new TextEncoder().encode(d));
      await first.putRelease("resnet", "v1", new TextEncoder().encode(m));
    } finally {
      await first.close();
    }
    const second = await start();
    try {
      assert.equal(second.highestCounter("resnet"), 4);
      assert.equal(second.release("resnet", "v1")?.counter, 4);
      const doc = await second.delegationDocument();
      assert.equal(doc.record.version, 3);
      assert.equal(new TextDecoder().decode(doc.bytes), d);
      assert.equal(
        new TextDecoder().decode((await second.releaseDocument("resnet", "v1")).bytes),
        m,
      );
    } finally {
      await second.close();
    }
  });
});

async function until(predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("a refused upload whose bytes happen to be a stored document does not remove that document", async () => {
  await withApi(async ({ call }) => {
    const { root, release } = await keys();
    const d = await delegation(root, [release], 1);
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1));
    assert.equal((await call("PUT", "/v1/delegation", d)).status, 201);
    const refused = await call("PUT", "/v1/models/resnet/versions/v1", d);
    assert.equal(refused.status, 409);
    await refused.body?.cancel();
    const got = await call("GET", "/v1/delegation");
    assert.equal(got.status, 200);
    assert.equal(await got.text(), d);
  });
});

Deno.test("names in API paths and bodies follow the one name rule: hidden, option-like and slashed names are refused with 400", async () => {
  await withApi(async ({ call, dir }) => {
    // (A literal ".." segment never arrives: URL parsing removes it before routing.)
    for (const bad of ["...", ".hidden", "-rf", "a%2Fb", "a%2F..%2Fb"]) {
      const r = await call("PUT", `/v1/models/${bad}/versions/v1`, randomBytes(100, 1));
      assert.equal(r.status, 400, bad);
      assert.match(await error(r), /model must be 1-128 letters/);
      const release = await call("PUT", `/v1/models/resnet/versions/${bad}/release`, "{}");
      assert.equal(release.status, 400, bad);
      await release.body?.cancel();
    }
    const rollout = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1", region: "../eu" }),
    );
    assert.equal(rollout.status, 400);
    await rollout.body?.cancel();
    assert.equal(await blobCount(dir), 0, "nothing stored");
  });
});
