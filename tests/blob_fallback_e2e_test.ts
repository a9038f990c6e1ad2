/**
 * End to end (real control plane and agents, testkit/fleet_harness.ts): a
 * leader that trickles its blob to its followers does not hold them: they
 * leave it for the control plane (agent `--min-transfer-rate` over
 * `--min-rate-window`) and converge. Addresses 127.0.15.200-203.
 */

import assert from "node:assert/strict";
import { type AgentSpec, Fleet } from "../testkit/fleet_harness.ts";
import { randomBytes, withTempDir } from "./helpers.ts";

const MODEL = "resnet";
const SIZE = 1024 * 1024;

Deno.test({
  name: "followers of a leader that trickles fall back to the control plane and converge",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (dir) => {
    // Whichever agent leads serves 2000 bytes/s: far below the 64 KiB/s minimum.
    const agents: AgentSpec[] = [0, 1, 2].map((i) => ({
      nodeId: `eu-${i}`,
      region: "eu",
      host: `127.0.15.${201 + i}`,
      faults: { serveBytesPerSecond: 2000 },
    }));
    const fleet = await Fleet.start({
      dir,
      cpHost: "127.0.15.200",
      agents,
      cpArgs: ["--agent-timeout", "1500ms"],
      agentArgs: ["--heartbeat-interval", "250ms", "--min-rate-window", "2s"],
    });
    try {
      await Deno.writeFile(`${dir}/v1.bin`, randomBytes(SIZE, 1416));
      const v1 = (await fleet.publish(MODEL, "v1", `${dir}/v1.bin`)).version.digest;
      const ids = agents.map((a) => a.nodeId);
      await fleet.waitFor(
        async () => (await fleet.status()).agents.filter((a) => a.online).length === ids.length,
        30_000,
        "every agent to register",
      );
      const { id } = await fleet.rollout(MODEL, "v1");
      const status = await fleet.converged(MODEL, v1, ids);
      const election = status.rollouts.find((r) => r.id === id)?.elections[0];
      const leader = election?.leader;
      assert.ok(leader, "a leader was elected");
      for (const follower of ids.filter((n) => n !== leader)) {
        const log = await Deno.readTextFile(`${dir}/${follower}.log`);
        assert.match(
          log,
          /downloaded [0-9a-f]+ in \d+ pieces .*control-plane \d+\)/,
          `${follower} finished at the CP`,
        );
        assert.match(log, new RegExp(`source ${leader}: `), `${follower} tried its leader`);
      }
      // The leader's whole copy and (nearly) both followers' came from the control plane.
      assert.ok(status.controlPlane.servedByDigest[v1] > 2 * SIZE);
    } catch (err) {
      const cpLog = await Deno.readTextFile(`${dir}/cp.log`).catch(() => "");
      console.error(`--- control plane log ---\n${cpLog.split("\n").slice(-40).join("\n")}`);
      for (const a of agents) {
        const log = await Deno.readTextFile(`${dir}/${a.nodeId}.log`).catch(() => "");
        console.error(`--- ${a.nodeId} log ---\n${log.split("\n").slice(-15).join("\n")}`);
      }
      throw err;
    } finally {
      await fleet.stop();
    }
  });
});
