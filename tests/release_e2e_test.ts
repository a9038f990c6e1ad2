/**
 * End-to-end tests of signed releases (issue 13, docs/design.md "Trust"):
 * real control planes and agents (testkit/fleet_harness.ts: keys made with
 * `poolboy keygen` and `delegate`, agents pinning the root with
 * `--trust-root`, publishing signed with `--key/--keys`). Every refusal leaves
 * each device's active model (DATA/models/M/current) byte-identical, and both
 * the agent's state.json and the control plane's status say why, before a
 * byte of the refused file was served.
 */

import assert from "node:assert/strict";
import {
  activeFileDigest,
  type AgentSpec,
  Fleet,
  makeKeys,
  PORTS,
  runPoolboy,
} from "../testkit/fleet_harness.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import type { AuditList, StatusReport } from "../controlplane/api_types.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { RELEASE_TYPE, signRelease, SPEC_VERSION } from "../release/documents.ts";
import { readSigningKey } from "../release/keys.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { ControlSocket } from "../transfer/control_socket.ts";
import type { Status } from "../transfer/control_messages.ts";

const MODEL = "resnet";
const CP_ARGS = ["--agent-timeout", "1500ms"];
const AGENT_ARGS = ["--heartbeat-interval", "250ms", "--transfer-timeout", "2s"];
const SIZE = 256 * 1024;
const DAY = 24 * 3600 * 1000;

/** The refusal an agent records in DATA/models/M/state.json. */
interface Refusal {
  readonly kind: string;
  readonly reason: string;
  readonly manifestId: string;
  readonly at: number;
}

function agents(subnet: number, count: number, deviceClass?: (i: number) => string): AgentSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    nodeId: `dev-${i}`,
    region: "eu",
    host: `127.0.${subnet}.${10 + i}`,
    deviceClass: deviceClass?.(i),
  }));
}

/** Runs `fn` with a started fleet with keys, stopped (logs shown on failure) afterwards. */
async function withFleet(
  subnet: number,
  specs: AgentSpec[],
  fn: (fleet: Fleet, dir: string, ids: string[]) => Promise<void>,
  trust: "signed" | "insecure" = "signed",
): Promise<void> {
  await withTempDir(async (dir) => {
    const fleet = await Fleet.start({
      dir,
      cpHost: `127.0.${subnet}.1`,
      agents: specs,
      cpArgs: CP_ARGS,
      agentArgs: AGENT_ARGS,
      trust,
    });
    const ids = specs.map((a) => a.nodeId);
    try {
      await fleet.waitFor(
        async () => (await fleet.status()).agents.filter((a) => a.online).length === ids.length,
        30_000,
        "every agent to register",
      );
      await fn(fleet, dir, ids);
    } catch (err) {
      for (const log of ["cp", "rogue-cp", ids[0]]) {
        const text = await Deno.readTextFile(`${dir}/${log}.log`).catch(() => "");
        if (text) console.error(`--- ${log} log ---\n${text.split("\n").slice(-40).join("\n")}`);
      }
      throw err;
    } finally {
      await fleet.stop();
    }
  });
}

/** Writes a file of `SIZE` pseudo-random bytes; returns its path and BLAKE3. */
async function writeModel(dir: string, name: string, seed: number) {
  const bytes = randomBytes(SIZE, seed);
  const path = `${dir}/${name}.bin`;
  await Deno.writeFile(path, bytes);
  return { path, digest: toHex(blake3(bytes)), size: bytes.length };
}

/** Publishes (signed) and rolls out `version`; waits until every agent runs it. */
async function install(fleet: Fleet, dir: string, version: string, seed: number, ids: string[]) {
  const file = await writeModel(dir, version, seed);
  const published = await fleet.publish(MODEL, version, file.path);
  assert.equal(published.version.digest, file.digest);
  await fleet.rollout(MODEL, version);
  await fleet.converged(MODEL, file.digest, ids);
  return file;
}

async function activeDigests(dir: string, ids: string[]): Promise<string[]> {
  return await Promise.all(ids.map((id) => activeFileDigest(dir, id, MODEL)));
}

async function refusalOf(dir: string, nodeId: string): Promise<Refusal | undefined> {
  try {
    const state = JSON.parse(
      await Deno.readTextFile(`${dir}/${nodeId}/models/${MODEL}/state.json`),
    );
    return state.refusal ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Rolls `version` out and waits until every agent refused it with `kind`:
 * in its state.json and in the control plane's status of that rollout, both
 * with a reason matching `why`. Returns the status.
 */
async function assertRefused(
  fleet: Fleet,
  dir: string,
  ids: string[],
  version: string,
  kind: string,
  why: RegExp,
): Promise<StatusReport> {
  const { id } = await fleet.rollout(MODEL, version);
  let status: StatusReport | undefined;
  await fleet.waitFor(
    async () => {
      status = await fleet.status().catch(() => undefined);
      const rollout = status?.rollouts.find((r) => r.id === id);
      const refused = ids.every((n) =>
        rollout?.agents.some((a) => a.nodeId === n && /refused: /.test(a.detail))
      );
      const recorded = await Promise.all(ids.map((n) => refusalOf(dir, n)));
      return refused && recorded.every((r) => r?.kind === kind);
    },
    30_000,
    `every agent to refuse ${version} (${kind})`,
    () => JSON.stringify(status?.rollouts.find((r) => r.id === id)?.agents),
  );
  const rollout = status!.rollouts.find((r) => r.id === id)!;
  for (const n of ids) {
    const refusal = (await refusalOf(dir, n))!;
    assert.match(refusal.reason, /^refused: /, `${n}'s state.json says why`);
    assert.match(refusal.reason, why, `${n}'s state.json reason`);
    const agent = rollout.agents.find((a) => a.nodeId === n)!;
    assert.match(agent.detail, why, `the status says why ${n} refused`);
    assert.notEqual(agent.state, "done");
  }
  return status!;
}

/** A release manifest built and signed here (what `publish` would refuse to sign). */
async function manifest(
  keyPath: string,
  fields: {
    model?: string;
    version: string;
    digest: string;
    size: number;
    counter: number;
    expires?: number;
  },
): Promise<string> {
  return await signRelease({
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model: fields.model ?? MODEL,
    version: fields.version,
    target: { blake3: fields.digest, size: fields.size },
    counter: fields.counter,
    expires: fields.expires ?? Date.now() + DAY,
    deviceClass: null,
  }, await readSigningKey(keyPath, "release"));
}

Deno.test({
  name:
    "a rogue control plane on the real one's address rolls out an unsigned file, files signed outside the delegation and the genuine older release: no device changes, each says why",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(41, agents(41, 2), async (fleet, dir, ids) => {
    const v1 = await install(fleet, dir, "v1", 1, ids);
    await install(fleet, dir, "v2", 2, ids);
    const genuineV1 = await fleet.api<unknown>("GET", `/v1/models/${MODEL}/versions/v1/release`);
    const genuineDelegation = await fleet.api<unknown>("GET", "/v1/delegation");
    const before = await activeDigests(dir, ids);

    await fleet.startRogueControlPlane();
    await fleet.waitFor(
      async () => (await fleet.status()).agents.filter((a) => a.online).length === ids.length,
      30_000,
      "every agent to register with the rogue control plane",
    );
    const evil = await writeModel(dir, "evil", 666);
    const notServed = async (status: StatusReport) => {
      assert.deepEqual(await activeDigests(dir, ids), before, "every active model unchanged");
      assert.equal(status.controlPlane.servedByDigest[evil.digest] ?? 0, 0, "no byte of it served");
    };

    // 1. An unsigned file.
    await fleet.publish(MODEL, "evil1", evil.path, { unsigned: true });
    await notServed(await assertRefused(fleet, dir, ids, "evil1", "unsigned", /unsigned/));

    // 2. The genuine delegation, but a manifest signed by a release key it does not name.
    const rogue = await makeKeys(`${dir}/rogue`);
    await fleet.publish(MODEL, "evil2", evil.path, { unsigned: true });
    await fleet.api("PUT", "/v1/delegation", JSON.stringify(genuineDelegation));
    await fleet.api(
      "PUT",
      `/v1/models/${MODEL}/versions/evil2/release`,
      await manifest(rogue.releaseKey, { version: "evil2", ...evil, counter: 100 }),
    );
    await notServed(
      await assertRefused(fleet, dir, ids, "evil2", "unknownKey", /not signed by a key of/),
    );

    // 3. The genuine v1 and its genuine manifest, whose counter is below the installed v2's.
    await fleet.publish(MODEL, "v1", v1.path, { unsigned: true });
    await fleet.api(
      "PUT",
      `/v1/models/${MODEL}/versions/v1/release`,
      JSON.stringify(genuineV1),
    );
    const older = await assertRefused(fleet, dir, ids, "v1", "rollback", /counter 1 .*not above 2/);
    assert.deepEqual(await activeDigests(dir, ids), before, "every active model unchanged");
    assert.equal(older.controlPlane.servedByDigest[v1.digest] ?? 0, 0, "no byte of v1 served");

    // 4. A rogue root's delegation (a higher version) naming the rogue release key.
    const rogueDelegation = `${dir}/rogue/keys-9.json`;
    await fleet.operator([
      "delegate",
      "--root",
      rogue.rootKey,
      "--release",
      rogue.releasePub,
      "--version",
      "9",
      "-o",
      rogueDelegation,
    ]);
    await fleet.publish(MODEL, "evil3", evil.path, {
      key: rogue.releaseKey,
      keys: rogueDelegation,
    });
    await notServed(
      await assertRefused(
        fleet,
        dir,
        ids,
        "evil3",
        "untrustedDelegation",
        /not signed by the pinned root key/,
      ),
    );
  });
});

Deno.test({
  name:
    "an expired release and one for another device class are refused before download; the device of that class installs it",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(42, agents(42, 2, (i) => ["jetson", "pi"][i]), async (fleet, dir, ids) => {
    await install(fleet, dir, "v1", 1, ids);
    const before = await activeDigests(dir, ids);

    // Expired (a freeze): a genuine key signed it, but its expiry has passed. publish will not
    // sign one, so it is signed here with the fleet's release key.
    const v2 = await writeModel(dir, "v2", 2);
    await assert.rejects(
      fleet.publish(MODEL, "v2", v2.path, { expires: "2020-01-01T00:00:00Z" }),
      /in the past/,
    );
    await fleet.publish(MODEL, "v2", v2.path, { unsigned: true });
    await fleet.api(
      "PUT",
      `/v1/models/${MODEL}/versions/v2/release`,
      await manifest(fleet.keys!.releaseKey, {
        version: "v2",
        ...v2,
        counter: 2,
        expires: Date.now() - DAY,
      }),
    );
    const expired = await assertRefused(fleet, dir, ids, "v2", "expired", /expired at/);
    assert.deepEqual(await activeDigests(dir, ids), before);
    assert.equal(expired.controlPlane.servedByDigest[v2.digest] ?? 0, 0);

    // For jetsons only: the pi refuses it, the jetson installs it.
    const v3 = await writeModel(dir, "v3", 3);
    await fleet.publish(MODEL, "v3", v3.path, { deviceClass: "jetson" });
    const { id } = await fleet.rollout(MODEL, "v3");
    await fleet.converged(MODEL, v3.digest, ["dev-0"]);
    assert.equal(await activeFileDigest(dir, "dev-0", MODEL), v3.digest);
    await fleet.waitFor(
      async () => (await refusalOf(dir, "dev-1"))?.kind === "wrongDeviceClass",
      30_000,
      "the pi to refuse the jetson release",
    );
    assert.match((await refusalOf(dir, "dev-1"))!.reason, /device class jetson/);
    assert.equal(
      await activeFileDigest(dir, "dev-1", MODEL),
      before[1],
      "the pi's model unchanged",
    );
    const status = await fleet.status();
    const pi = status.rollouts.find((r) => r.id === id)!.agents.find((a) => a.nodeId === "dev-1");
    assert.match(pi!.detail, /refused: .*device class jetson/);
  });
});

Deno.test({
  name:
    "rotation: after a newer delegation drops release key K1 and names K2, a manifest signed by K1 is refused and K2's is installed",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(43, agents(43, 2), async (fleet, dir, ids) => {
    const k1 = fleet.keys!;
    await install(fleet, dir, "v1", 1, ids);
    // K2, and delegation version 2 naming K2 only.
    const k2 = `${dir}/k2`;
    await fleet.operator(["keygen", "release", "-o", k2]);
    const rotated = `${dir}/keys-v2.json`;
    await fleet.operator([
      "delegate",
      "--root",
      k1.rootKey,
      "--release",
      `${k2}/release.pub`,
      "--version",
      "2",
      "-o",
      rotated,
    ]);
    const v2 = await writeModel(dir, "v2", 2);
    await fleet.publish(MODEL, "v2", v2.path, { key: `${k2}/release.key`, keys: rotated });
    await fleet.rollout(MODEL, "v2");
    await fleet.converged(MODEL, v2.digest, ids);
    const before = await activeDigests(dir, ids);

    // K1 no longer signs: `publish` refuses to sign with it, and a manifest made anyway is refused.
    const v3 = await writeModel(dir, "v3", 3);
    await assert.rejects(
      fleet.publish(MODEL, "v3", v3.path, { key: k1.releaseKey, keys: rotated }),
    );
    await fleet.publish(MODEL, "v3", v3.path, { unsigned: true });
    await fleet.api(
      "PUT",
      `/v1/models/${MODEL}/versions/v3/release`,
      await manifest(k1.releaseKey, { version: "v3", ...v3, counter: 3 }),
    );
    await assertRefused(
      fleet,
      dir,
      ids,
      "v3",
      "unknownKey",
      /not signed by a key of delegation version 2/,
    );
    assert.deepEqual(await activeDigests(dir, ids), before);

    // K2 signs v3: installed.
    await fleet.publish(MODEL, "v3", v3.path, { key: `${k2}/release.key`, keys: rotated });
    await fleet.rollout(MODEL, "v3");
    await fleet.converged(MODEL, v3.digest, ids);
    for (const n of ids) {
      const trust = JSON.parse(await Deno.readTextFile(`${dir}/${n}/trust.json`));
      assert.equal(trust.delegationVersion, 2, `${n} remembers delegation version 2`);
    }
  });
});

Deno.test({
  name:
    "a signed release installs and `poolboy rollback` re-signs the older one; a rollout without a token is refused, changes nothing and is audited",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(44, agents(44, 2), async (fleet, dir, ids) => {
    const v1 = await install(fleet, dir, "v1", 1, ids);
    const v2 = await install(fleet, dir, "v2", 2, ids);
    for (const n of ids) {
      const trust = JSON.parse(await Deno.readTextFile(`${dir}/${n}/trust.json`));
      assert.equal(trust.counters[MODEL].counter, 2, `${n} remembers counter 2`);
      assert.equal(trust.counters[MODEL].target, v2.digest);
    }

    // No token: refused, nothing changes, the audit log shows it.
    const rolloutsBefore = (await fleet.status()).rollouts.length;
    const refused = await runPoolboy([
      "rollout",
      "--control-plane",
      fleet.url,
      "--model",
      MODEL,
      "--version",
      "v1",
    ]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /^poolboy: error: .*401/);
    assert.equal((await fleet.status()).rollouts.length, rolloutsBefore, "no rollout started");
    assert.deepEqual(await activeDigests(dir, ids), [v2.digest, v2.digest]);
    const audit = JSON.parse(
      await fleet.operator(["audit", "--control-plane", fleet.url, "--json"]),
    ) as AuditList;
    const entry = audit.entries.find((e) => e.action === "POST /v1/rollouts" && e.token === null);
    assert.ok(entry, `the audit log shows the refusal: ${JSON.stringify(audit).slice(0, 500)}`);
    assert.equal(entry.status, 401);
    assert.match(entry.reason, /Authorization|token/i);

    // Rollback: a new manifest for v1 with counter 3, and every device returns to v1.
    await fleet.rollback(MODEL, "v1");
    await fleet.converged(MODEL, v1.digest, ids);
    const manifestV1 = await fleet.api<{ signed: { counter: number } }>(
      "GET",
      `/v1/models/${MODEL}/versions/v1/release`,
    );
    assert.equal(manifestV1.signed.counter, 3);
    for (const n of ids) {
      const trust = JSON.parse(await Deno.readTextFile(`${dir}/${n}/trust.json`));
      assert.equal(trust.counters[MODEL].counter, 3, `${n} remembers counter 3`);
      assert.equal(trust.counters[MODEL].target, v1.digest);
    }
  });
});

Deno.test({
  name:
    "mix-and-match: model A's genuine manifest announced as model B by a forged control plane is refused before download",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(45, agents(45, 2), async (fleet, dir, ids) => {
    const v1 = await install(fleet, dir, "v1", 1, ids);
    const text = new TextEncoder();
    const release = text.encode(
      JSON.stringify(await fleet.api<unknown>("GET", `/v1/models/${MODEL}/versions/v1/release`)),
    );
    const delegation = text.encode(
      JSON.stringify(await fleet.api<unknown>("GET", "/v1/delegation")),
    );
    const before = await activeDigests(dir, ids);
    await fleet.killControlPlane();

    // Another process on the control plane's address speaks the protocol itself.
    const store = await BlobStore.open(`${dir}/forged-blobs`);
    const put = async (bytes: Uint8Array) => {
      await Deno.writeFile(`${dir}/doc.tmp`, bytes);
      return (await store.importFile(`${dir}/doc.tmp`)).digest;
    };
    const releaseDigest = await put(release);
    const delegationDigest = await put(delegation);
    const target = (await store.importFile(v1.path)).digest;
    const host = fleet.options.cpHost;
    // It speaks blob protocol version 2 as devices do, and serves anyone.
    const server = BlobServer.start({
      hostname: host,
      port: PORTS.cpP2p,
      store,
      authorize: () => Promise.resolve(true),
    });
    // A compromised control plane: it holds the real one's key, so devices hear it.
    const cpKey = await readSigningKey(`${dir}/cp/controlplane.key`, "controlplane");
    const socket = ControlSocket.open(host, PORTS.cpUdp, { signer: () => cpKey.privateKey });
    const statuses: Status[] = [];
    const listening = (async () => {
      for await (const { message } of socket.messages()) {
        if (message.type === "status") statuses.push(message);
      }
    })();
    try {
      const announce = {
        type: "announce" as const,
        manifestId: "forged-1",
        model: "bert",
        version: "v1",
        targetDigest: target,
        targetSize: v1.size,
        baseDigest: null,
        blobDigest: target,
        blobSize: v1.size,
        cpHost: host,
        cpP2pPort: PORTS.cpP2p,
        releaseDigest,
        delegationDigest,
      };
      await fleet.waitFor(
        async () => {
          for (const spec of fleet.options.agents) {
            await socket.send(announce, { hostname: spec.host, port: PORTS.udp }, spec.nodeId);
          }
          return ids.every((n) =>
            statuses.some((s) =>
              s.nodeId === n && s.manifestId === "forged-1" && s.state === "failed"
            )
          );
        },
        30_000,
        "every agent to answer the forged announce",
      );
      for (const n of ids) {
        const status = statuses.find((s) => s.nodeId === n && s.state === "failed")!;
        assert.match(status.detail, /refused: .*manifest is for model resnet/);
        const state = JSON.parse(
          await Deno.readTextFile(`${dir}/${n}/models/bert/state.json`),
        ) as { refusal?: Refusal };
        assert.equal(state.refusal?.kind, "wrongModel", `${n}'s state.json says why`);
      }
      assert.deepEqual(await activeDigests(dir, ids), before, "model A unchanged");
      for (const n of ids) {
        assert.equal(
          await Deno.stat(`${dir}/${n}/models/bert/current`).then(() => true, () => false),
          false,
          `${n} installed no model B`,
        );
      }
      assert.equal(server.bytesServed < v1.size, true, "the target was not downloaded");
    } finally {
      socket.close();
      await listening.catch(() => {});
      await server.close();
    }
  });
});

Deno.test({
  name:
    "what --insecure gives up: an agent started with it installs an unsigned file and keeps no trust memory",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(46, agents(46, 1), async (fleet, dir, ids) => {
    const unsigned = await writeModel(dir, "anything", 5);
    await fleet.publish(MODEL, "v1", unsigned.path);
    await fleet.rollout(MODEL, "v1");
    await fleet.converged(MODEL, unsigned.digest, ids);
    assert.equal(await activeFileDigest(dir, ids[0], MODEL), unsigned.digest);
    assert.equal(
      await Deno.stat(`${dir}/${ids[0]}/trust.json`).then(() => true, () => false),
      false,
      "an insecure agent keeps no trust memory",
    );
  }, "insecure");
});
