/**
 * End-to-end tests of fleet distribution: a real control plane and real
 * agents (each `deno run` of mod.ts, on its own 127.0.x.y address, with
 * `--allow-net=127.0.0.0/8` and file access to its own data directory only),
 * publishing and rolling out versions of a synthetic model, with the faults
 * docs/design.md says the design survives.
 */

import assert from "node:assert/strict";
import {
  activeFileDigest,
  type AgentSpec,
  Fleet,
  modelBytesServed,
} from "../testkit/fleet_harness.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import type { StatusReport } from "../controlplane/api_types.ts";
import type { TransportFaults } from "../transfer/faults.ts";

const MODEL = "resnet";
/** Quick timings so faults are detected in seconds. */
const CP_ARGS = ["--agent-timeout", "1500ms"];
const AGENT_ARGS = ["--heartbeat-interval", "250ms", "--transfer-timeout", "2s"];

/** Version 1 and version 2 (64 KiB rewritten in the middle) of a model of `size` bytes. */
async function writeVersions(dir: string, size: number): Promise<[string, string]> {
  const v1 = randomBytes(size, 7);
  const v2 = v1.slice();
  v2.set(randomBytes(64 * 1024, 99), Math.floor(size / 2));
  await Deno.writeFile(`${dir}/v1.bin`, v1);
  await Deno.writeFile(`${dir}/v2.bin`, v2);
  return [`${dir}/v1.bin`, `${dir}/v2.bin`];
}

function agents(
  subnet: number,
  regions: string[],
  perRegion: number,
  faults?: (i: number) => (TransportFaults & { seed?: number }) | undefined,
): AgentSpec[] {
  const out: AgentSpec[] = [];
  let i = 0;
  for (const region of regions) {
    for (let k = 0; k < perRegion; k++, i++) {
      out.push({
        nodeId: `${region}-${k}`,
        region,
        host: `127.0.${subnet}.${10 + i}`,
        faults: faults?.(i),
      });
    }
  }
  return out;
}

/** Runs `fn` with a started fleet, stopped (and its logs shown on failure) afterwards. */
async function withFleet(
  options: { subnet: number; agents: AgentSpec[]; cpFaults?: TransportFaults },
  fn: (fleet: Fleet, dir: string) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const fleet = await Fleet.start({
      dir,
      cpHost: `127.0.${options.subnet}.1`,
      agents: options.agents,
      cpArgs: CP_ARGS,
      agentArgs: AGENT_ARGS,
      cpFaults: options.cpFaults,
    });
    try {
      await fn(fleet, dir);
    } catch (err) {
      const cpLog = await Deno.readTextFile(`${dir}/cp.log`).catch(() => "");
      console.error(`--- control plane log ---\n${cpLog.split("\n").slice(-60).join("\n")}`);
      const first = options.agents[0].nodeId;
      const agentLog = await Deno.readTextFile(`${dir}/${first}.log`).catch(() => "");
      console.error(`--- ${first} log ---\n${agentLog.split("\n").slice(-30).join("\n")}`);
      throw err;
    } finally {
      await fleet.stop();
    }
  });
}

/** Publishes v1 and v2 and rolls v1 out to everyone; returns the digests. */
async function installV1(fleet: Fleet, dir: string, size: number) {
  const [v1Path, v2Path] = await writeVersions(dir, size);
  const v1 = (await fleet.publish(MODEL, "v1", v1Path)).version.digest;
  const ids = fleet.options.agents.map((a) => a.nodeId);
  await fleet.waitFor(
    async () => (await fleet.status()).agents.length === ids.length,
    30_000,
    "every agent to register",
  );
  await fleet.rollout(MODEL, "v1");
  await fleet.converged(MODEL, v1, ids);
  const v2 = (await fleet.publish(MODEL, "v2", v2Path)).version.digest;
  return { v1, v2, ids };
}

function rolloutOf(status: StatusReport, id: number) {
  const rollout = status.rollouts.find((r) => r.id === id);
  assert.ok(rollout, `rollout ${id} in the status`);
  return rollout;
}

async function assertActiveFiles(dir: string, ids: string[], digest: string): Promise<void> {
  for (const id of ids) {
    assert.equal(await activeFileDigest(dir, id, MODEL), digest, `${id}'s current model`);
  }
}

Deno.test({
  name: "12 agents in 3 regions converge, and the control plane serves one patch per region",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(
    { subnet: 11, agents: agents(11, ["eu", "us", "ap"], 4) },
    async (fleet, dir) => {
      const { v2, ids } = await installV1(fleet, dir, 16 * 1024 * 1024);
      const before = await fleet.status();
      const { id } = await fleet.rollout(MODEL, "v2");
      const status = await fleet.converged(MODEL, v2, ids);
      await assertActiveFiles(dir, ids, v2);
      const rollout = rolloutOf(status, id);
      const closed = rollout.elections.filter((e) => e.state === "closed");
      assert.equal(closed.length, 3, "one election per region");
      assert.deepEqual(closed.map((e) => e.region).sort(), ["ap", "eu", "us"]);
      const patchSize = closed[0].blobSize;
      assert.ok(closed.every((e) => e.base !== null && e.blobSize === patchSize));
      assert.ok(patchSize < 8 * 1024 * 1024, `a patch (${patchSize} bytes), not the 16 MiB file`);
      assert.equal(
        modelBytesServed(status) - modelBytesServed(before),
        3 * patchSize,
        "the control plane served one patch per region",
      );
      // The devices of each region served its 3 followers one patch each among themselves
      // (the leader and, piece by piece, the followers: the swarm).
      const servedSince = (nodeId: string) =>
        status.agents.find((a) => a.nodeId === nodeId)!.served -
        before.agents.find((a) => a.nodeId === nodeId)!.served;
      for (const e of closed) {
        const leader = status.agents.find((a) => a.nodeId === e.leader)!;
        assert.equal(leader.region, e.region);
        const region = status.agents.filter((a) => a.region === e.region);
        assert.equal(
          region.reduce((sum, a) => sum + servedSince(a.nodeId), 0),
          3 * patchSize,
          `the devices of ${e.region} served its followers one patch each`,
        );
      }
    },
  );
});

Deno.test({
  name: "with 30% of control datagrams lost both ways, every agent still converges",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const lossy = (i: number) => ({ udpDropRate: 0.3, seed: 1000 + i });
  await withFleet(
    {
      subnet: 12,
      agents: agents(12, ["eu", "us"], 3, lossy),
      cpFaults: { udpDropRate: 0.3 },
    },
    async (fleet, dir) => {
      const { v2, ids } = await installV1(fleet, dir, 1024 * 1024);
      await fleet.rollout(MODEL, "v2");
      const status = await fleet.converged(MODEL, v2, ids, 90_000);
      await assertActiveFiles(dir, ids, v2);
      assert.ok(status.drops.faultDropped > 0, "the fault layer did drop datagrams");
    },
  );
});

/** A control plane that serves at 1 MB/s, so that a test can act while a leader downloads. */
const SLOW_CP: TransportFaults = { serveBytesPerSecond: 1_000_000 };
const SIZE_4M = 4 * 1024 * 1024;

/** Publishes v1 and starts its rollout once every agent registered; returns its digest and id. */
async function startV1(fleet: Fleet, dir: string, size: number) {
  const [v1Path] = await writeVersions(dir, size);
  const v1 = (await fleet.publish(MODEL, "v1", v1Path)).version.digest;
  const ids = fleet.options.agents.map((a) => a.nodeId);
  await fleet.waitFor(
    async () => (await fleet.status()).agents.filter((a) => a.online).length === ids.length,
    30_000,
    "every agent to register",
  );
  const { id } = await fleet.rollout(MODEL, "v1");
  return { v1, ids, id };
}

/** Waits until an election of the rollout has a leader that is still downloading; returns it. */
async function leaderDownloading(fleet: Fleet, rolloutId: number): Promise<string> {
  let leader: string | undefined;
  await fleet.waitFor(
    async () => {
      const status = await fleet.status().catch(() => undefined);
      const election = status?.rollouts.find((r) => r.id === rolloutId)?.elections.find((e) =>
        e.state === "leading"
      );
      leader = election?.leader ?? undefined;
      return leader !== undefined;
    },
    30_000,
    "a leader to be elected",
  );
  return leader!;
}

Deno.test({
  name: "the leader killed mid-download: the election re-runs without it and everyone converges",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(
    { subnet: 13, agents: agents(13, ["eu"], 4), cpFaults: SLOW_CP },
    async (fleet, dir) => {
      const { v1, ids, id } = await startV1(fleet, dir, SIZE_4M);
      const leader = await leaderDownloading(fleet, id);
      await fleet.killAgent(leader);
      const others = ids.filter((n) => n !== leader);
      const status = await fleet.converged(MODEL, v1, others);
      await assertActiveFiles(dir, others, v1);
      const elections = rolloutOf(status, id).elections;
      const failed = elections.find((e) => e.state === "failed");
      assert.ok(failed, "the first election failed");
      assert.equal(failed.leader, leader);
      assert.match(failed.failure!, new RegExp(`leader ${leader} went silent`));
      const closed = elections.find((e) => e.state === "closed");
      assert.ok(closed && closed.leader !== leader, "a new leader was elected");
      // Egress: the dead leader's partial download plus one whole file, as the status reports.
      const served = modelBytesServed(status);
      assert.equal(served, closed.controlPlaneServedForBlob);
      assert.ok(served >= SIZE_4M && served < 2 * SIZE_4M, `served ${served}`);
      // The old leader comes back, resumes from its partial file and converges too.
      await fleet.startAgent(leader);
      await fleet.converged(MODEL, v1, ids);
      await assertActiveFiles(dir, ids, v1);
    },
  );
});

Deno.test({
  name: "a follower killed and restarted mid-rollout rejoins from its heartbeat and converges",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(
    { subnet: 14, agents: agents(14, ["eu"], 4), cpFaults: SLOW_CP },
    async (fleet, dir) => {
      const { v1, ids, id } = await startV1(fleet, dir, SIZE_4M);
      const leader = await leaderDownloading(fleet, id);
      const follower = ids.find((n) => n !== leader)!;
      await fleet.killAgent(follower);
      const others = ids.filter((n) => n !== follower);
      await fleet.converged(MODEL, v1, others);
      const offline = await fleet.status();
      assert.equal(rolloutOf(offline, id).state, "running", "not done while a follower is missing");
      await fleet.startAgent(follower);
      const status = await fleet.converged(MODEL, v1, ids);
      await assertActiveFiles(dir, ids, v1);
      await fleet.waitFor(
        async () => rolloutOf(await fleet.status(), id).state === "done",
        10_000,
        "the rollout to finish",
      );
      assert.equal(modelBytesServed(status), SIZE_4M, "the restarted follower used its leader");
    },
  );
});

Deno.test({
  name: "a connection dropped halfway resumes from the bytes already received",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(
    {
      subnet: 15,
      agents: agents(15, ["eu"], 2),
      cpFaults: { serveDropAfterBytes: SIZE_4M / 2, serveDropTimes: 1 },
    },
    async (fleet, dir) => {
      const { v1, ids } = await startV1(fleet, dir, SIZE_4M);
      const status = await fleet.converged(MODEL, v1, ids);
      await assertActiveFiles(dir, ids, v1);
      const served = status.controlPlane.servedByDigest[v1];
      assert.ok(served < 1.1 * SIZE_4M, `the control plane sent ${served} bytes for ${SIZE_4M}`);
      const leader = status.rollouts[0].elections[0].leader!;
      const log = await Deno.readTextFile(`${dir}/${leader}.log`);
      // Two attempts (cut at 2 MiB, then resumed) that together received the blob's size once.
      assert.match(log, /downloaded \w+ from control-plane: 4194304 bytes received in 2 attempt/);
    },
  );
});

Deno.test({
  name: "a seeder serving corrupted bytes is refused: followers fetch from the control plane",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  // Every agent's blob server corrupts what it sends: whoever leads is a bad seeder.
  const corrupt = () => ({ serveCorrupt: true });
  await withFleet(
    { subnet: 16, agents: agents(16, ["eu"], 3, corrupt) },
    async (fleet, dir) => {
      const { v1, v2, ids } = await installV1(fleet, dir, 16 * 1024 * 1024);
      const before = await fleet.status();
      const { id } = await fleet.rollout(MODEL, "v2");
      // While the rollout runs, no agent's active model is ever anything but v1 or v2.
      await fleet.waitFor(
        async () => {
          for (const n of ids) {
            const digest = await activeFileDigest(dir, n, MODEL);
            assert.ok(digest === v1 || digest === v2, `${n} runs ${digest}`);
          }
          const status = await fleet.status();
          return ids.every((n) => status.agents.find((a) => a.nodeId === n)?.active[MODEL] === v2);
        },
        60_000,
        "every agent to run v2",
      );
      await assertActiveFiles(dir, ids, v2);
      const status = await fleet.status();
      const election = rolloutOf(status, id).elections.find((e) => e.state === "closed")!;
      // The leader fetched the patch, then each of the 2 followers after refusing the leader's bytes.
      assert.equal(
        modelBytesServed(status) - modelBytesServed(before),
        3 * election.blobSize,
      );
      const follower = ids.find((n) => n !== election.leader)!;
      const log = await Deno.readTextFile(`${dir}/${follower}.log`);
      // Piece by piece: every peer's pieces failed their digest, so each peer was dropped and
      // every piece came from the control plane.
      assert.match(log, /downloaded \w+ in \d+ pieces .*from control-plane \d+\)/);
      assert.match(log, /source \S+: .*dropped: piece \d+ does not match its digest/);
    },
  );
});

Deno.test({
  name: "the control plane restarted mid-rollout comes back from SQLite and the rollout finishes",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(
    { subnet: 17, agents: agents(17, ["eu", "us"], 2), cpFaults: SLOW_CP },
    async (fleet, dir) => {
      const { v1, ids, id } = await startV1(fleet, dir, SIZE_4M);
      await leaderDownloading(fleet, id);
      await fleet.killControlPlane();
      await fleet.startControlPlane();
      const status = await fleet.converged(MODEL, v1, ids);
      await assertActiveFiles(dir, ids, v1);
      assert.equal(status.boot, 2, "a second boot");
      assert.equal(rolloutOf(status, id).model, MODEL, "the rollout survived the restart");
      await fleet.waitFor(
        async () => rolloutOf(await fleet.status(), id).state === "done",
        10_000,
        "the rollout to finish",
      );
    },
  );
});

Deno.test({
  name:
    "SIGTERM mid-download: the agent stops, leaves no temporary file, and resumes after a restart",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(
    { subnet: 18, agents: agents(18, ["eu"], 1), cpFaults: SLOW_CP },
    async (fleet, dir) => {
      const { v1, ids, id } = await startV1(fleet, dir, SIZE_4M);
      const [agent] = ids;
      await leaderDownloading(fleet, id);
      await new Promise((r) => setTimeout(r, 1500)); // part of the 4 MiB has arrived
      await fleet.killAgent(agent, "SIGTERM");
      const temporaries = [];
      for await (const e of Deno.readDir(`${dir}/${agent}/blobs`)) {
        if (e.name.endsWith(".tmp")) temporaries.push(e.name);
      }
      assert.deepEqual(temporaries, []);
      const state = JSON.parse(
        await Deno.readTextFile(`${dir}/${agent}/models/${MODEL}/state.json`),
      );
      assert.equal(state.step, "downloading", "the state file says where it stopped");
      const partial = (await Deno.stat(`${dir}/${agent}/blobs/.partial/${v1}.part`)).size;
      assert.ok(partial > 0 && partial < SIZE_4M, `a partial download of ${partial} bytes is kept`);
      await fleet.startAgent(agent);
      const status = await fleet.converged(MODEL, v1, ids);
      await assertActiveFiles(dir, ids, v1);
      assert.ok(status.controlPlane.served < 1.1 * SIZE_4M, "the download resumed, not restarted");
    },
  );
});
