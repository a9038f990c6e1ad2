/**
 * End to end (real control plane and agents, testkit/fleet_harness.ts): the swarm inside a
 * region (issue 15, docs/design.md "The swarm"). The devices of a region trade the blob piece by
 * piece, each piece checked against the piece list; the control plane sends it about once; upload
 * caps hold; a source that dies mid-piece costs a piece, not the download. Addresses 127.0.60.x
 * and 127.0.61.x.
 */

import assert from "node:assert/strict";
import { activeFileDigest, type AgentSpec, Fleet } from "../testkit/fleet_harness.ts";
import { bucketCapacityFor } from "../transfer/token_bucket.ts";
import { randomBytes, withTempDir } from "./helpers.ts";

const MODEL = "resnet";
const SIZE = 2 * 1024 * 1024;
/** 32 pieces of 64 KiB: enough to trade. */
const CP_ARGS = ["--agent-timeout", "1500ms", "--piece-size", "64KiB"];
const AGENT_ARGS = ["--heartbeat-interval", "250ms", "--transfer-timeout", "2s"];

function agents(subnet: number, count: number, extra?: Partial<AgentSpec>): AgentSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    nodeId: `eu-${i}`,
    region: "eu",
    host: `127.0.${subnet}.${10 + i}`,
    ...extra,
  }));
}

async function withFleet(
  subnet: number,
  specs: AgentSpec[],
  agentArgs: string[],
  fn: (fleet: Fleet, dir: string) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const fleet = await Fleet.start({
      dir,
      cpHost: `127.0.${subnet}.1`,
      agents: specs,
      cpArgs: CP_ARGS,
      agentArgs: [...AGENT_ARGS, ...agentArgs],
    });
    try {
      await fn(fleet, dir);
    } catch (err) {
      const cpLog = await Deno.readTextFile(`${dir}/cp.log`).catch(() => "");
      console.error(`--- control plane log ---\n${cpLog.split("\n").slice(-40).join("\n")}`);
      for (const a of specs.slice(0, 3)) {
        const log = await Deno.readTextFile(`${dir}/${a.nodeId}.log`).catch(() => "");
        console.error(`--- ${a.nodeId} log ---\n${log.split("\n").slice(-20).join("\n")}`);
      }
      throw err;
    } finally {
      await fleet.stop();
    }
  });
}

async function publishAndWait(fleet: Fleet, dir: string, ids: string[]): Promise<string> {
  await Deno.writeFile(`${dir}/v1.bin`, randomBytes(SIZE, 1515));
  const v1 = (await fleet.publish(MODEL, "v1", `${dir}/v1.bin`)).version.digest;
  await fleet.waitFor(
    async () => (await fleet.status()).agents.filter((a) => a.online).length === ids.length,
    30_000,
    "every agent to register",
  );
  return v1;
}

Deno.test({
  name:
    "8 devices of a region trade a blob piece by piece: every copy verified, the control plane sends it once, the followers serve each other within their upload caps",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const specs = agents(60, 8);
  const ids = specs.map((a) => a.nodeId);
  const uploadRate = 1_000_000; // bytes per second, per device
  await withFleet(
    60,
    specs,
    ["--upload-slots", "2", "--upload-rate", `${uploadRate}`],
    async (fleet, dir) => {
      const v1 = await publishAndWait(fleet, dir, ids);
      const before = await fleet.status();
      const started = performance.now();
      const { id } = await fleet.rollout(MODEL, "v1");
      const status = await fleet.converged(MODEL, v1, ids, 120_000);
      for (const n of ids) {
        assert.equal(await activeFileDigest(dir, n, MODEL), v1, `${n} runs the verified file`);
      }
      const election = status.rollouts.find((r) => r.id === id)!.elections[0];
      assert.equal(election.blobSize, SIZE, "the whole file is the blob (no base)");
      // The control plane: the leader's copy, and at most a few pieces of retries.
      const cpSent = status.controlPlane.servedByDigest[v1] -
        (before.controlPlane.servedByDigest[v1] ?? 0);
      assert.ok(cpSent >= SIZE && cpSent <= 1.05 * SIZE, `the control plane sent ${cpSent}`);
      // The 7 followers' copies came from the region's devices: from more than the leader.
      // (`served` travels in heartbeats: the last ones may come a moment after convergence.)
      let served = new Map<string, number>();
      let total = 0;
      await fleet.waitFor(
        async () => {
          const now = await fleet.status();
          served = new Map(ids.map((n) => [
            n,
            now.agents.find((a) => a.nodeId === n)!.served -
            before.agents.find((a) => a.nodeId === n)!.served,
          ]));
          total = [...served.values()].reduce((a, b) => a + b, 0);
          return total >= 7 * SIZE;
        },
        15_000,
        `the devices to report 7 copies served (so far ${total} bytes)`,
      );
      const servers = [...served].filter(([n, bytes]) => n !== election.leader && bytes > 0);
      assert.ok(servers.length >= 2, `followers that served others: ${servers.map(([n]) => n)}`);
      // No device sent faster than its cap: at most the bucket's burst plus rate × time.
      const elapsedS = (performance.now() - started) / 1000;
      for (const [n, bytes] of served) {
        const allowed = bucketCapacityFor(uploadRate) + uploadRate * elapsedS;
        assert.ok(bytes <= allowed, `${n} served ${bytes} bytes in ${elapsedS} s`);
      }
      // Every follower logs its pieces: all of them, from the swarm.
      for (const n of ids.filter((n) => n !== election.leader)) {
        const log = await Deno.readTextFile(`${dir}/${n}.log`);
        assert.match(log, /downloaded [0-9a-f]+ in 32 pieces/, `${n} swarmed`);
      }
    },
  );
});

Deno.test({
  name:
    "a source killed in the middle of serving costs its downloaders a piece: they finish elsewhere",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  // Every device serves slowly (each response at 64 KiB/s: a second a piece, above the
  // minimum rate), so the kill lands mid-piece.
  const specs = agents(61, 6, { faults: { serveBytesPerSecond: 64 * 1024 } });
  const ids = specs.map((a) => a.nodeId);
  await withFleet(61, specs, ["--min-transfer-rate", "16KiB/s"], async (fleet, dir) => {
    const v1 = await publishAndWait(fleet, dir, ids);
    const before = await fleet.status();
    const { id } = await fleet.rollout(MODEL, "v1");
    // Wait until a follower serves others, then kill it.
    let victim = "";
    await fleet.waitFor(
      async () => {
        const status = await fleet.status();
        const leader = status.rollouts.find((r) => r.id === id)?.elections[0]?.leader;
        const serving = status.agents.find((a) =>
          a.nodeId !== leader &&
          a.served > before.agents.find((b) => b.nodeId === a.nodeId)!.served
        );
        victim = serving?.nodeId ?? "";
        return victim !== "";
      },
      60_000,
      "a follower to serve a piece",
    );
    await fleet.killAgent(victim);
    const rest = ids.filter((n) => n !== victim);
    await fleet.converged(MODEL, v1, rest, 120_000);
    for (const n of rest) {
      assert.equal(await activeFileDigest(dir, n, MODEL), v1, `${n} runs the verified file`);
    }
    // Someone had the victim as a source and lost requests to it, yet finished.
    let lost = 0;
    for (const n of rest) {
      const log = await Deno.readTextFile(`${dir}/${n}.log`);
      const m = log.match(
        new RegExp(`source ${victim}: \\d+ pieces, \\d+ bytes, \\d+ refusals, (\\d+) failures`),
      );
      if (m) lost += Number(m[1]);
    }
    assert.ok(lost >= 1, `requests to ${victim} that failed: ${lost}`);
  });
});
