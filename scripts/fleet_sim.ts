/**
 * `deno task fleet:sim`: the fleet simulator. N simulated devices (each with
 * its own key, loopback address, UDP socket and, when it leads, blob server,
 * speaking the real protocol from a few worker processes) and K real agents
 * against the real control plane process, one rollout of a patch measured end
 * to end (testkit/fleet_sim/run.ts). Prints a short summary, or the report as
 * one JSON document with --json (progress lines go to stderr). Every process
 * is stopped at the end, on failure and on Ctrl-C.
 *
 * Usage: deno task fleet:sim --devices N --regions R [--real-agents K]
 *        [--heartbeat 10s] [--size 4MiB] [--per-worker 250] [--timeout T]
 *        [--status-period 250ms] [--upload-slots 4] [--upload-rate RATE] [--piece-size SIZE]
 *        [--stall T]
 *        [--keep] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseSize } from "../kernel/units.ts";
import { FleetSimulation } from "../testkit/fleet_sim/run.ts";
import { formatReport } from "../testkit/fleet_sim/report.ts";

const HELP = `deno task fleet:sim --devices N --regions R [options]

Starts the real control plane (mod.ts controlplane) and K real agents on
loopback, and N simulated devices in worker processes (one per --per-worker
devices), each device with its own Ed25519 key, enrolled over HTTP with a
many-use token, on its own address 127.21+.x.y with its own UDP socket,
heartbeating every --heartbeat. Devices run v1 of a synthetic model from the
start (real agents get it by a first rollout); v2 is published signed and
rolled out to every device; each answers the announce by checking the signed
release, bids, leads (blob from the control plane, its own blob server) or
follows (the swarm: the piece list from the control plane, then pieces from
the sources ElectionClosed names with its ticket, each verified, served to the
others as they arrive; the control plane as fallback), verifies the blob's
BLAKE3 and reports v2 active. Then prints what it measured.

Options:
  --devices N        simulated devices (required)
  --regions R        regions, devices round robin (required)
  --real-agents K    real agents beside them (default 0)
  --heartbeat T      heartbeat period of every device and agent (default 10s);
                     the control plane runs with --agent-timeout 3 × T
  --size SIZE        model file size (default 4MiB; the patch is ~3/64 of it)
  --per-worker N     simulated devices per worker process (default 250: a process
                     holding more swarming devices falls behind its own event loop)
  --timeout T        deadline of the measured rollout (default 120s + 20ms per device);
                     past it the report is still printed (completed: false), exit 1
  --status-period T  period of the measured GET /v1/status calls (default 250ms)
  --upload-slots N   bodies each device's blob server sends at once (default 4, as agents)
  --upload-rate RATE each device's blob server sends at most this fast, all bodies together,
                     e.g. 2MB/s (default 0: unlimited; agents' --upload-rate)
  --piece-size SIZE  the control plane's --piece-size (default: its choice, ~64 pieces)
  --stall T          a device's swarm download turns to the control plane after T
                     without a peer byte (default 10s, as agents)
  --keep             keep the directory (logs: cp.log, worker-*.log)
  --json             the report as JSON on stdout (progress on stderr)
  -h, --help         this help`;

function fail(message: string): never {
  console.error(`fleet:sim: ${message} (see deno task fleet:sim --help)`);
  Deno.exit(2);
}

function count(name: string, text: string | undefined, fallback?: number): number {
  if (text === undefined) {
    if (fallback === undefined) fail(`--${name} is required`);
    return fallback;
  }
  if (!/^[0-9]+$/.test(text)) fail(`--${name}: "${text}" is not a whole number`);
  return Number(text);
}

function rate(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = parseSize(text.trim().replace(/\/s$/i, ""));
  if (n === undefined) fail(`--${name}: "${text}" is not a rate (2MB/s, 512KiB/s, 0)`);
  return n;
}

function duration(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m)$/.exec(text);
  if (!m) fail(`--${name}: "${text}" is not a duration (500ms, 10s, 5m)`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as "ms" | "s" | "m"]);
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    devices: { type: "string" },
    regions: { type: "string" },
    "real-agents": { type: "string" },
    heartbeat: { type: "string" },
    size: { type: "string" },
    "per-worker": { type: "string" },
    timeout: { type: "string" },
    "status-period": { type: "string" },
    "upload-slots": { type: "string" },
    "upload-rate": { type: "string" },
    "piece-size": { type: "string" },
    stall: { type: "string" },
    keep: { type: "boolean" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(HELP);
  Deno.exit(0);
}
const size = values.size === undefined ? undefined : parseSize(values.size);
if (values.size !== undefined && (size === undefined || size < 64 * 1024)) {
  fail(`--size: "${values.size}" is not a size of at least 64KiB`);
}
const pieceSize = values["piece-size"] === undefined ? undefined : parseSize(values["piece-size"]);
if (values["piece-size"] !== undefined && pieceSize === undefined) {
  fail(`--piece-size: "${values["piece-size"]}" is not a size`);
}

let simulation: FleetSimulation;
try {
  simulation = new FleetSimulation({
    devices: count("devices", values.devices),
    regions: count("regions", values.regions),
    realAgents: count("real-agents", values["real-agents"], 0),
    heartbeatMs: duration("heartbeat", values.heartbeat),
    size,
    devicesPerWorker: count("per-worker", values["per-worker"], 250) || fail("--per-worker: 0"),
    rolloutTimeoutMs: duration("timeout", values.timeout),
    statusPeriodMs: duration("status-period", values["status-period"]),
    uploadSlots: count("upload-slots", values["upload-slots"], 4),
    uploadBytesPerSecond: rate("upload-rate", values["upload-rate"]),
    pieceSize,
    stallMs: duration("stall", values.stall),
    keep: values.keep,
    progress: (line) => console.error(`fleet:sim: ${line}`),
  });
} catch (err) {
  fail(err instanceof Error ? err.message : String(err));
}

let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`fleet:sim: ${signal}: stopping every process`);
    simulation.stop().finally(() => Deno.exit(130));
  });
}

try {
  const { report } = await simulation.run();
  console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  Deno.exit(report.done === report.devices + report.realAgents ? 0 : 1);
} catch (err) {
  if (!interrupted) {
    console.error(`fleet:sim: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
