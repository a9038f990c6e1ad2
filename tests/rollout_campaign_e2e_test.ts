/**
 * End-to-end tests of rollout campaigns and the device lifecycle (issue 5):
 * a canary whose health check fails halts the rollout with no other device
 * touched; a rolling rollout goes batch by batch; a fleet rollback returns
 * every device to the old version, and devices that hold it download nothing.
 * Real processes on loopback, as in fleet_e2e_test.ts.
 */

import assert from "node:assert/strict";
import {
  activeFileDigest,
  type AgentSpec,
  Fleet,
  modelBytesServed,
} from "../testkit/fleet_harness.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import type { HistoryEntry, StatusReport } from "../controlplane/api_types.ts";

const MODEL = "resnet";
const SIZE = 4 * 1024 * 1024;
/** v2 starts with this marker; the health command below refuses it. */
const MARKER = "POISONED";
const HEALTH_CMD = `! head -c ${MARKER.length} {model} | grep -q ${MARKER}`;

function agents(subnet: number, count: number): AgentSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    nodeId: `dev-${i}`,
    region: "eu",
    host: `127.0.${subnet}.${10 + i}`,
  }));
}

async function withFleet(
  subnet: number,
  count: number,
  healthCmd: boolean,
  fn: (fleet: Fleet, dir: string, ids: string[]) => Promise<void>,
  extra: { agentArgs?: string[]; agentPermissions?: string[] } = {},
): Promise<void> {
  await withTempDir(async (dir) => {
    const fleet = await Fleet.start({
      dir,
      cpHost: `127.0.${subnet}.1`,
      agents: agents(subnet, count),
      cpArgs: ["--agent-timeout", "1500ms"],
      agentArgs: [
        "--heartbeat-interval",
        "250ms",
        ...(healthCmd ? ["--health-cmd", HEALTH_CMD, "--health-timeout", "10s"] : []),
        ...(extra.agentArgs ?? []).map((a) => a.replaceAll("{dir}", dir)),
      ],
      agentPermissions: [
        ...(healthCmd ? ["--allow-run=sh"] : []),
        ...(extra.agentPermissions ?? []),
      ],
    });
    try {
      const ids = fleet.options.agents.map((a) => a.nodeId);
      await fleet.waitFor(
        async () => (await fleet.status()).agents.filter((a) => a.online).length === count,
        30_000,
        "every agent to register",
      );
      await fn(fleet, dir, ids);
    } catch (err) {
      const log = await Deno.readTextFile(`${dir}/cp.log`).catch(() => "");
      console.error(`--- control plane log ---\n${log.split("\n").slice(-40).join("\n")}`);
      throw err;
    } finally {
      await fleet.stop();
    }
  });
}

/** Publishes v1 and v2 (v2 = v1 with 64 KiB rewritten, optionally starting with MARKER). */
async function publishVersions(fleet: Fleet, dir: string, poisoned: boolean) {
  const v1 = randomBytes(SIZE, 5);
  const v2 = v1.slice();
  v2.set(randomBytes(64 * 1024, 6), SIZE / 2);
  if (poisoned) v2.set(new TextEncoder().encode(MARKER), 0);
  await Deno.writeFile(`${dir}/v1.bin`, v1);
  await Deno.writeFile(`${dir}/v2.bin`, v2);
  return {
    v1: (await fleet.publish(MODEL, "v1", `${dir}/v1.bin`)).version.digest,
    v2: (await fleet.publish(MODEL, "v2", `${dir}/v2.bin`)).version.digest,
  };
}

async function rollout(fleet: Fleet, body: Record<string, unknown>): Promise<{ id: number }> {
  return await fleet.api("POST", "/v1/rollouts", JSON.stringify({ model: MODEL, ...body }));
}

function rolloutOf(status: StatusReport, id: number) {
  return status.rollouts.find((r) => r.id === id)!;
}

Deno.test({
  name: "a canary whose health check fails halts the rollout; no other device is touched",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(21, 4, true, async (fleet, dir, ids) => {
    const { v1 } = await publishVersions(fleet, dir, true);
    await rollout(fleet, { version: "v1" });
    await fleet.converged(MODEL, v1, ids);
    const { id } = await rollout(fleet, { version: "v2", strategy: "canary", canary: "1" });
    await fleet.waitFor(
      async () => rolloutOf(await fleet.status(), id).state === "halted",
      30_000,
      "the rollout to halt",
    );
    const status = await fleet.status();
    const r = rolloutOf(status, id);
    assert.match(r.reason, /1 of 1 in the current batch failed \(dev-0\)/);
    const canary = r.agents.find((a) => a.nodeId === "dev-0")!;
    assert.equal(canary.state, "failed");
    assert.match(canary.detail, /health check failed: health command exited 1/);
    for (const other of ids.slice(1)) {
      assert.equal(r.agents.find((a) => a.nodeId === other)?.state, "waiting", other);
      const log = await Deno.readTextFile(`${dir}/${other}.log`);
      assert.doesNotMatch(log, /switched resnet to v2/, `${other} never switched`);
    }
    // Every device, the canary included, runs v1: the canary rolled itself back.
    await fleet.waitFor(
      async () => {
        const s = await fleet.status();
        return ids.every((n) => s.agents.find((a) => a.nodeId === n)?.active[MODEL] === v1);
      },
      10_000,
      "every device on v1",
    );
    for (const n of ids) assert.equal(await activeFileDigest(dir, n, MODEL), v1, n);
    const history =
      (await fleet.api<{ history: HistoryEntry[] }>("GET", "/v1/devices/dev-0/history"))
        .history;
    assert.ok(history.some((h) => h.event === "failed" && /health check failed/.test(h.detail)));
    const state = JSON.parse(await Deno.readTextFile(`${dir}/dev-0/models/${MODEL}/state.json`));
    assert.equal(state.step, "rolledBack");
    assert.equal(state.backup, v1);
  });
});

Deno.test({
  name: "a rolling rollout goes batch by batch: batch 2 starts after batch 1 runs the version",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(22, 4, false, async (fleet, dir, ids) => {
    const { v1, v2 } = await publishVersions(fleet, dir, false);
    await rollout(fleet, { version: "v1" });
    await fleet.converged(MODEL, v1, ids);
    const { id } = await rollout(fleet, { version: "v2", strategy: "rolling", batch: 2 });
    await fleet.converged(MODEL, v2, ids);
    await fleet.waitFor(
      async () => rolloutOf(await fleet.status(), id).state === "done",
      10_000,
      "the rollout to finish",
    );
    const ranV2At = async (n: string) => {
      const { history } = await fleet.api<{ history: HistoryEntry[] }>(
        "GET",
        `/v1/devices/${n}/history`,
      );
      return history.find((h) => h.event === "running" && h.digest === v2)!.at;
    };
    const batch1 = await Promise.all(["dev-0", "dev-1"].map(ranV2At));
    const batch2 = await Promise.all(["dev-2", "dev-3"].map(ranV2At));
    assert.ok(Math.max(...batch1) <= Math.min(...batch2), `${batch1} then ${batch2}`);
    for (const n of ids) assert.equal(await activeFileDigest(dir, n, MODEL), v2, n);
  });
});

Deno.test({
  name:
    "a fleet rollback returns every device to the old version; devices that hold it download nothing",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(23, 3, false, async (fleet, dir, ids) => {
    const { v1, v2 } = await publishVersions(fleet, dir, false);
    await rollout(fleet, { version: "v1" });
    await fleet.converged(MODEL, v1, ids);
    await rollout(fleet, { version: "v2" });
    await fleet.converged(MODEL, v2, ids);
    // Heartbeats carry the bytes each agent served: let the last ones of the v2 rollout arrive.
    await new Promise((r) => setTimeout(r, 1000));
    const before = await fleet.status();
    // `poolboy rollback` signs a new manifest for v1 (a higher counter), then rolls it out.
    const back = await fleet.rollback(MODEL);
    assert.equal(back.version, "v1");
    assert.equal(back.rollback, true);
    const after = await fleet.converged(MODEL, v1, ids);
    for (const n of ids) assert.equal(await activeFileDigest(dir, n, MODEL), v1, n);
    assert.equal(
      modelBytesServed(after),
      modelBytesServed(before),
      "the control plane sent nothing",
    );
    for (const n of ids) {
      const served = (s: StatusReport) => s.agents.find((a) => a.nodeId === n)!.served;
      assert.equal(served(after), served(before), `${n} sent nothing`);
    }
  });
});

for (const [i, step] of (["downloading", "staged", "applied", "switched"] as const).entries()) {
  Deno.test({
    name: `an agent killed right after "${step}" restarts consistent and converges`,
    sanitizeResources: false,
    sanitizeOps: false,
  }, async () => {
    await withFleet(30 + i, 1, false, async (fleet, dir, [id]) => {
      const { v1, v2 } = await publishVersions(fleet, dir, false);
      await rollout(fleet, { version: "v1" });
      await fleet.converged(MODEL, v1, [id]);
      await fleet.killAgent(id);
      await fleet.startAgent(id, { crashAfterStep: step, crashTarget: v2 });
      await rollout(fleet, { version: "v2" });
      assert.equal(await fleet.agentExited(id), 137, "it crashed at the hook");
      // What a power cut leaves: current is v1 or v2, whole, never anything else.
      const current = await activeFileDigest(dir, id, MODEL);
      assert.ok(current === v1 || current === v2, `current is ${current}`);
      const state = JSON.parse(await Deno.readTextFile(`${dir}/${id}/models/${MODEL}/state.json`));
      assert.equal(state.step, step);
      await fleet.startAgent(id, {});
      await fleet.converged(MODEL, v2, [id]);
      assert.equal(await activeFileDigest(dir, id, MODEL), v2);
      await fleet.waitFor(
        async () => {
          const s = JSON.parse(await Deno.readTextFile(`${dir}/${id}/models/${MODEL}/state.json`));
          return s.step === "committed";
        },
        10_000,
        "the update to be committed",
      );
      const leftovers = [];
      for await (const e of Deno.readDir(`${dir}/${id}/blobs`)) {
        if (e.name.endsWith(".tmp")) leftovers.push(e.name);
      }
      assert.deepEqual(leftovers, [], "no temporary file left");
    });
  });
}

Deno.test({
  name:
    "a version that fails its health check 3 times is poisoned: not tried again in that rollout",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(35, 1, true, async (fleet, dir, [id]) => {
    const { v1, v2 } = await publishVersions(fleet, dir, true);
    await rollout(fleet, { version: "v1" });
    await fleet.converged(MODEL, v1, [id]);
    // 100%: the rollout never halts by itself, so ElectionClosed keeps coming.
    const { id: rolloutId } = await rollout(fleet, { version: "v2", maxFailures: "100%" });
    await fleet.waitFor(
      async () => {
        const r = rolloutOf(await fleet.status(), rolloutId);
        return /^poisoned: failed 3 times/.test(
          r.agents.find((a) => a.nodeId === id)?.detail ?? "",
        );
      },
      60_000,
      "the poison pill",
    );
    await new Promise((r) => setTimeout(r, 3000)); // more ElectionClosed repeats arrive meanwhile
    const log = await Deno.readTextFile(`${dir}/${id}.log`);
    assert.equal(log.match(/switched resnet to v2/g)?.length, 3, "exactly 3 tries");
    const state = JSON.parse(await Deno.readTextFile(`${dir}/${id}/models/${MODEL}/state.json`));
    assert.equal(state.failures[v2].count, 3);
    assert.equal(await activeFileDigest(dir, id, MODEL), v1);
  });
});

Deno.test({
  name: "an update the disk has no room for is refused before downloading, and reported",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(36, 1, false, async (fleet, dir) => {
    const { v1 } = await publishVersions(fleet, dir, false);
    const { id } = await rollout(fleet, { version: "v1" });
    await fleet.waitFor(
      async () => rolloutOf(await fleet.status(), id).state === "halted",
      30_000,
      "the rollout to halt",
    );
    const agent = rolloutOf(await fleet.status(), id).agents[0];
    assert.equal(agent.state, "failed");
    assert.match(agent.detail, /not enough disk space for resnet v1: needs 4\.00 MiB plus/);
    const status = await fleet.status();
    assert.equal(modelBytesServed(status), 0, "nothing was downloaded");
    assert.notEqual(status.agents[0].active[MODEL], v1);
  }, { agentArgs: ["--min-free", "1000000GiB"] });
});

Deno.test({
  name: "after a commit an agent keeps the active version, one backup and the latest patch only",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(37, 1, false, async (fleet, dir, [id]) => {
    const { v1, v2 } = await publishVersions(fleet, dir, false);
    const v3bytes = await Deno.readFile(`${dir}/v2.bin`);
    v3bytes.set(randomBytes(64 * 1024, 9), 0);
    await Deno.writeFile(`${dir}/v3.bin`, v3bytes);
    const v3 = (await fleet.publish(MODEL, "v3", `${dir}/v3.bin`)).version.digest;
    for (const [version, digest] of [["v1", v1], ["v2", v2], ["v3", v3]]) {
      await rollout(fleet, { version });
      await fleet.converged(MODEL, digest, [id]);
    }
    await fleet.waitFor(
      async () => {
        const names = [];
        for await (const e of Deno.readDir(`${dir}/${id}/blobs`)) if (e.isFile) names.push(e.name);
        return !names.includes(v1) && names.length === 3;
      },
      10_000,
      "the clean-up",
    );
    const names = [];
    for await (const e of Deno.readDir(`${dir}/${id}/blobs`)) if (e.isFile) names.push(e.name);
    const status = await fleet.status();
    const patch = status.patches.find((p) => p.base === v2 && p.target === v3)!.digest;
    assert.deepEqual(names.sort(), [v2, v3, patch].sort());
  });
});

Deno.test({
  name: "--on-switch runs after every switch with the new file's path",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withFleet(38, 1, false, async (fleet, dir) => {
    const { v1, v2 } = await publishVersions(fleet, dir, false);
    await rollout(fleet, { version: "v1" });
    await fleet.converged(MODEL, v1, ["dev-0"]);
    await rollout(fleet, { version: "v2" });
    await fleet.converged(MODEL, v2, ["dev-0"]);
    const lines = (await Deno.readTextFile(`${dir}/dev-0/switches.log`)).trim().split("\n");
    assert.equal(lines.length, 2, "one run per switch");
    for (const line of lines) assert.ok(line.startsWith(`${dir}/dev-0/`), line);
  }, {
    // One line per switch, in the agent's data directory.
    agentArgs: [
      "--on-switch",
      `echo "$POOLBOY_MODEL" >> {dir}/dev-0/switches.log && test -f {model}`,
    ],
    agentPermissions: ["--allow-run=sh"],
  });
});
