/**
 * `deno task bench:swarm` (scripts/swarm_bench.ts, swarm_status.ts, swarm-netns.sh)
 * without network namespaces: its command line, the helper's own argument checks,
 * and the arithmetic of the table (done times, T1 as the unit, egress per patch).
 *
 * @module
 */

import assert from "node:assert/strict";
import { UsageError } from "../kernel/errors.ts";
import {
  formatTable,
  helperArgs,
  parseSwarmBenchArgs,
  rowsOf,
  type SizeOutcome,
} from "../scripts/swarm_bench.ts";
import { buildResult, quantile, type SwarmResult } from "../scripts/swarm_status.ts";
import type { StatusReport } from "../controlplane/api_types.ts";

const HELPER = new URL("../scripts/swarm-netns.sh", import.meta.url).pathname;

Deno.test("bench:swarm with no arguments measures regions of 1, 8, 32 and 64 devices at 20mbit and 50ms with a 60 MiB patch, the control plane's link shaped", () => {
  const o = parseSwarmBenchArgs([]);
  assert.deepEqual(o.sizes, [1, 8, 32, 64]);
  assert.deepEqual(
    [o.rate, o.delay, o.blobMib, o.cpUnshaped, o.timeoutS, o.agentArgs, o.maxFailures, o.json],
    ["20mbit", "50ms", 60, false, null, [], null, false],
  );
});

Deno.test("bench:swarm runs each requested size once, smallest first, and passes its flags to the helper", () => {
  const o = parseSwarmBenchArgs([
    "--sizes",
    "32,1,8,8",
    "--rate",
    "512kbit",
    "--delay",
    "0ms",
    "--blob-mib",
    "8",
    "--cp-unshaped",
    "--timeout",
    "600",
    "--agent-args",
    " --upload-slots 4  --upload-rate 1MiB",
    "--max-failures",
    "100%",
    "--json",
  ]);
  assert.deepEqual(o.sizes, [1, 8, 32]);
  assert(o.json);
  assert.deepEqual(helperArgs(o, 8), [
    "--devices",
    "8",
    "--rate",
    "512kbit",
    "--delay",
    "0ms",
    "--blob-mib",
    "8",
    "--cp-unshaped",
    "--timeout",
    "600",
    "--agent-args",
    "--upload-slots 4 --upload-rate 1MiB",
    "--max-failures",
    "100%",
  ]);
});

Deno.test("bench:swarm refuses sizes, rates, delays and patch sizes it cannot build, and unknown flags", () => {
  for (
    const args of [
      ["--sizes", "0"],
      ["--sizes", "1,x"],
      ["--sizes", "251"],
      ["--sizes", ""],
      ["--rate", "20mb"],
      ["--rate", "10kbit"],
      ["--delay", "50"],
      ["--blob-mib", "0"],
      ["--blob-mib", "2048"],
      ["--timeout", "-1"],
      ["--agent-args", "--x $(reboot)"],
      ["--max-failures", "120%"],
      ["--max-failures", "20"],
      ["--bogus"],
    ]
  ) {
    assert.throws(() => parseSwarmBenchArgs(args), UsageError, args.join(" "));
  }
});

Deno.test("the netns helper prints its usage for --help and exits 2 on a bad argument, before touching any namespace", async () => {
  const run = async (args: string[]) => {
    const out = await new Deno.Command("bash", { args: [HELPER, ...args], stdin: "null" }).output();
    return {
      code: out.code,
      text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
    };
  };
  const help = await run(["--help"]);
  assert.deepEqual(help.code, 0);
  assert(help.text.includes("--blob-mib") && help.text.includes("--max-failures"), help.text);
  assert(!help.text.includes("set -euo"), `--help printed more than the usage:\n${help.text}`);
  for (
    const args of [["--devices", "0"], ["--rate", "fast"], ["--delay", "1s"], ["--blob-mib", "x"], [
      "--max-failures",
      "most",
    ], [
      "--timeout",
      "0",
    ], ["--nope"]]
  ) {
    const r = await run(args);
    assert.deepEqual(r.code, 2, `${args.join(" ")}: ${r.text}`);
  }
});

/** A status report with the fields the result reads. */
function status(
  served: number,
  agents: { nodeId: string; served: number }[],
  rollout?: { created: number; done: Record<string, number> },
): StatusReport {
  return {
    boot: 0,
    versions: [],
    patches: [],
    agents: agents.map((a) => ({
      nodeId: a.nodeId,
      region: "r0",
      host: "",
      online: true,
      lastSeenMsAgo: 0,
      active: {},
      served: a.served,
    })),
    rollouts: rollout
      ? [{
        strategy: "all",
        canary: 0,
        canaryPercent: false,
        batch: 0,
        maxFailures: 0,
        rollback: false,
        reason: "",
        id: 2,
        model: "m",
        version: "v2",
        digest: "d",
        region: "r0",
        state: "done",
        created: rollout.created,
        finished: null,
        agents: Object.entries(rollout.done).map(([nodeId, at]) => ({
          rolloutId: 2,
          nodeId,
          state: "active",
          detail: "",
          updated: at,
        })),
        elections: [],
      }]
      : [],
    controlPlane: {
      served,
      servedByDigest: {},
      tick: { count: 0, totalMs: 0, maxMs: 0, lastMs: 0 },
      datagramBacklog: 0,
    },
    drops: {},
    patchErrors: {},
  };
}

Deno.test("a run's result counts done times from the rollout's creation, and only the bytes served during the rollout", () => {
  const before = status(1000, [{ nodeId: "a", served: 50 }, { nodeId: "b", served: 0 }]);
  const after = status(0, [], { created: 10_000, done: { a: 14_000, b: 12_000, c: 19_000 } });
  const end = status(1000 + 2100, [{ nodeId: "a", served: 50 + 4000 }, { nodeId: "b", served: 0 }]);
  const r = buildResult(before, after, end, {
    devices: "3",
    "patch-bytes": "2000",
    rate: "20mbit",
    delay: "50ms",
    netem: "0",
    "cp-shaped": "1",
    "cp-tx-bytes": "2200",
    "busy-ticks": "50",
    "total-ticks": "200",
    cpus: "2",
    "cp-cpu-ms": "1500",
    "agents-cpu-ms": "3000",
    "window-ms": "9000",
  });
  assert.deepEqual(r.doneMs, [2000, 4000, 9000]);
  assert.deepEqual([r.doneP50S, r.doneMaxS], [4, 9]);
  assert.deepEqual(r.egressRatio, 2100 / 2000);
  assert.deepEqual(r.uploads, { a: 4000, b: 0 });
  assert.deepEqual([r.maxUploadBytes, r.uploaders], [4000, 1]);
  assert.deepEqual([r.delayApplied, r.cpShaped], [false, true]);
  assert.deepEqual(r.cpu, {
    cpus: 2,
    busyShare: 0.25,
    fleetShare: 4500 / 18000,
    windowS: 9,
    cpCpuS: 1.5,
    agentsCpuS: 3,
  });
  assert.deepEqual(quantile([1, 2, 3, 4], 0.5), 2);
});

Deno.test("the table takes the 1-device region's time as the unit of every other size", () => {
  const result = (devices: number, maxS: number): SwarmResult => ({
    devices,
    rate: "20mbit",
    delay: "50ms",
    delayApplied: true,
    cpShaped: true,
    patchBytes: 1000,
    rolloutId: 2,
    doneMs: [maxS * 1000],
    doneP50S: maxS,
    doneMaxS: maxS,
    cpServedBytes: 1010,
    egressRatio: 1.01,
    cpTxBytes: 1020,
    uploads: {},
    maxUploadBytes: 0,
    uploaders: 0,
    elections: [],
    cpu: { cpus: 2, busyShare: 0.5, fleetShare: 0.03, windowS: 50, cpCpuS: 1, agentsCpuS: 2 },
  });
  const outcomes: SizeOutcome[] = [
    { kind: "measured", size: 1, wallS: 60, result: result(1, 25) },
    { kind: "measured", size: 8, wallS: 90, result: result(8, 50) },
    { kind: "failed", size: 32, wallS: 900, reason: "timeout" },
  ];
  const rows = rowsOf(outcomes);
  assert.deepEqual(rows.map((r) => [r.size, r.maxOverT1]), [[1, 1], [8, 2]]);
  assert.deepEqual(rows[1].cpTxRatio, 1.02);
  const table = formatTable(rows);
  assert(table.includes("max/T1") && table.includes("2.00"), table);
  assert.deepEqual(rowsOf([outcomes[1]])[0].maxOverT1, null);
});
