/**
 * `deno task bench:swarm`: how a region's rollout time and the control plane's
 * egress grow with the region's size, on throttled links (issue 15's goal: 64
 * devices within 3× the time of one, control-plane egress ≤ 1.05 patch per region).
 *
 * For each size it runs scripts/swarm-netns.sh once (a fresh fleet: one network
 * namespace per device, each with a real enrolled `mod.ts agent`, links shaped by
 * tc), which rolls a signed v2 (a patch of about --blob-mib MiB) out to the region
 * and reports each device's done time, the control plane's served bytes and the
 * devices' uploads. T1, the time of the 1-device region, is the unit: the table
 * shows max/T1 per size. Needs root and iproute2 (`ip netns`, `tc`); where it
 * cannot run, the helper's "skipped" line is printed and the exit code is 0.
 *
 * Usage: deno task bench:swarm [--sizes 1,8,32,64] [--rate 20mbit] [--delay 50ms]
 *                              [--blob-mib 60] [--cp-unshaped] [--timeout S]
 *                              [--agent-args '--upload-slots 4'] [--cp-args '--swarm-fanout 1']
 *                              [--max-failures P%] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { UsageError } from "../kernel/errors.ts";
import type { SwarmResult } from "./swarm_status.ts";

/** What `deno task bench:swarm` was asked. */
export interface SwarmBenchOptions {
  /** Region sizes, in the order run (ascending, no repeats). */
  readonly sizes: number[];
  /** tc's rate syntax: 20mbit, 512kbit, 1gbit. */
  readonly rate: string;
  /** tc's delay syntax, one way per link direction: 50ms, 0ms. */
  readonly delay: string;
  /** The patch's size in MiB (v1 is this + 4 MiB; v2 rewrites this much of it). */
  readonly blobMib: number;
  /** Leave the control plane's link unshaped. */
  readonly cpUnshaped: boolean;
  /** Per size: seconds the rollout may take (default: the helper's, from size and rate). */
  readonly timeoutS: number | null;
  /** Extra words for every agent's command line (split on spaces), e.g. swarm upload caps. */
  readonly agentArgs: string[];
  /** Extra words for the control plane's command line, e.g. the swarm's piece size. */
  readonly cpArgs: string[];
  /** v2's rollout --max-failures (null: poolboy rollout's default, 20%). */
  readonly maxFailures: string | null;
  readonly json: boolean;
  readonly help: boolean;
}

/** Largest region the helper builds (one namespace and one agent process per device). */
export const MAX_REGION_SIZE = 250;

/** The issue's goals, printed beside the table. */
export const GOAL_MAX_OVER_T1 = 3;
export const GOAL_EGRESS_RATIO = 1.05;

/** The default patch: ~25 s for one device at 20 Mbit/s. */
export const DEFAULT_BLOB_MIB = 60;

export const USAGE =
  `deno task bench:swarm [--sizes 1,8,32,64] [--rate 20mbit] [--delay 50ms] [--blob-mib ${DEFAULT_BLOB_MIB}]
                       [--cp-unshaped] [--timeout S] [--agent-args 'ARGS'] [--cp-args 'ARGS']
                       [--max-failures P%]
                       [--json]

For each region size, a fresh fleet over network namespaces (scripts/swarm-netns.sh;
root and iproute2 needed): a control plane, an operator and SIZE devices, each a real
enrolled agent in its own namespace on a bridge, every device's link shaped to --rate
in both directions with --delay one way per direction (netem; reported when the kernel
lacks it), the control plane's link too unless --cp-unshaped. v1 ((--blob-mib + 4) MiB)
goes to every device unshaped, then v2 (--blob-mib MiB rewritten: a patch) is published
signed and rolled out to the region. Per size: p50 and max of rollout start -> device
done, max / T1 (T1: the 1-device region's time, the unit), the control plane's blob
egress / patch size, its eth0 bytes / patch size, the devices' uploads, CPU.
--agent-args: extra words for every \`mod.ts agent\` (e.g. '--upload-slots 4').
--cp-args: extra words for \`mod.ts controlplane\` (e.g. '--piece-size 256KiB --swarm-fanout 1').
--max-failures: v2's rollout halts when more than P% of the region failed (default 20%,
poolboy rollout's); a halted rollout ends that size's run as a failure, with the reason.
Goal (issue 15): 64 devices within ${GOAL_MAX_OVER_T1}x T1, egress <= ${GOAL_EGRESS_RATIO} patch per region.`;

/** Parses the command line; throws UsageError on anything it does not accept. */
export function parseSwarmBenchArgs(args: readonly string[]): SwarmBenchOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        sizes: { type: "string", default: "1,8,32,64" },
        rate: { type: "string", default: "20mbit" },
        delay: { type: "string", default: "50ms" },
        "blob-mib": { type: "string", default: String(DEFAULT_BLOB_MIB) },
        "cp-unshaped": { type: "boolean", default: false },
        timeout: { type: "string" },
        "agent-args": { type: "string", default: "" },
        "cp-args": { type: "string", default: "" },
        "max-failures": { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  const sizes: number[] = [];
  for (const part of v.sizes.split(",")) {
    if (!/^[1-9][0-9]*$/.test(part.trim())) {
      throw new UsageError(`--sizes: "${part}" is not a region size (1..${MAX_REGION_SIZE})`);
    }
    const n = Number(part.trim());
    if (n > MAX_REGION_SIZE) {
      throw new UsageError(`--sizes: ${n} is more than ${MAX_REGION_SIZE} devices`);
    }
    if (!sizes.includes(n)) sizes.push(n);
  }
  sizes.sort((a, b) => a - b);
  const rate = /^([1-9][0-9]*)(kbit|mbit|gbit)$/.exec(v.rate);
  if (!rate || (rate[2] === "kbit" && Number(rate[1]) < 64)) {
    throw new UsageError(
      `--rate: "${v.rate}" is not a rate like 20mbit, 512kbit, 1gbit (>= 64kbit)`,
    );
  }
  if (!/^[0-9]+ms$/.test(v.delay) || Number(v.delay.slice(0, -2)) > 10_000) {
    throw new UsageError(`--delay: "${v.delay}" is not a delay like 50ms or 0ms (<= 10000ms)`);
  }
  if (!/^[1-9][0-9]*$/.test(v["blob-mib"]) || Number(v["blob-mib"]) > 1024) {
    throw new UsageError(`--blob-mib: "${v["blob-mib"]}" is not a size in MiB (1..1024)`);
  }
  let timeoutS: number | null = null;
  if (v.timeout !== undefined) {
    if (!/^[1-9][0-9]*$/.test(v.timeout)) {
      throw new UsageError(`--timeout: "${v.timeout}" is not a whole number of seconds`);
    }
    timeoutS = Number(v.timeout);
  }
  const agentArgs = v["agent-args"].split(" ").filter((w) => w !== "");
  if (agentArgs.length > 32 || agentArgs.some((w) => !/^[A-Za-z0-9_./:=,-]+$/.test(w))) {
    throw new UsageError(
      `--agent-args: at most 32 words of letters, digits and _ . / : = , - (got "${
        v["agent-args"]
      }")`,
    );
  }
  const cpArgs = v["cp-args"].split(" ").filter((w) => w !== "");
  if (cpArgs.length > 32 || cpArgs.some((w) => !/^[A-Za-z0-9_./:=,-]+$/.test(w))) {
    throw new UsageError(
      `--cp-args: at most 32 words of letters, digits and _ . / : = , - (got "${v["cp-args"]}")`,
    );
  }
  const maxFailures = v["max-failures"] ?? null;
  if (maxFailures !== null && !/^(100|[1-9]?[0-9])%$/.test(maxFailures)) {
    throw new UsageError(`--max-failures: "${maxFailures}" is not a percentage like 20% (0..100%)`);
  }
  return {
    sizes,
    rate: v.rate,
    delay: v.delay,
    blobMib: Number(v["blob-mib"]),
    cpUnshaped: v["cp-unshaped"],
    timeoutS,
    agentArgs,
    cpArgs,
    maxFailures,
    json: v.json,
    help: v.help,
  };
}

/** The helper's arguments for one region size. */
export function helperArgs(options: SwarmBenchOptions, size: number): string[] {
  return [
    "--devices",
    String(size),
    "--rate",
    options.rate,
    "--delay",
    options.delay,
    "--blob-mib",
    String(options.blobMib),
    ...(options.cpUnshaped ? ["--cp-unshaped"] : []),
    ...(options.timeoutS !== null ? ["--timeout", String(options.timeoutS)] : []),
    ...(options.agentArgs.length > 0 ? ["--agent-args", options.agentArgs.join(" ")] : []),
    ...(options.cpArgs.length > 0 ? ["--cp-args", options.cpArgs.join(" ")] : []),
    ...(options.maxFailures !== null ? ["--max-failures", options.maxFailures] : []),
  ];
}

/** One size's outcome. */
export type SizeOutcome =
  | {
    readonly kind: "measured";
    readonly size: number;
    readonly wallS: number;
    readonly result: SwarmResult;
  }
  | {
    readonly kind: "failed";
    readonly size: number;
    readonly wallS: number;
    readonly reason: string;
  }
  | { readonly kind: "skipped"; readonly size: number; readonly reason: string };

/** Longest line read from the helper. */
const MAX_LINE_CHARS = 1 << 20;

/** Set by SIGINT/SIGTERM: no further size is started. */
let interrupted = false;

/** Runs the helper for one size, echoing its lines to stderr. */
async function runSize(options: SwarmBenchOptions, size: number): Promise<SizeOutcome> {
  const script = new URL("./swarm-netns.sh", import.meta.url).pathname;
  const started = performance.now();
  const child = new Deno.Command("bash", {
    args: [script, ...helperArgs(options, size)],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
    env: { DENO: Deno.execPath() },
  }).spawn();
  // A signal to this script stops the helper, whose trap tears its fleet down.
  const stop = () => {
    interrupted = true;
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  let result: SwarmResult | null = null;
  let skipped: string | null = null;
  // The failure's first line (log tails follow it).
  let failedLine: string | null = null;
  let buffer = "";
  const decoder = new TextDecoder();
  const take = (line: string) => {
    console.error(line);
    const r = /^swarm-netns: result (\{.*\})$/.exec(line);
    if (r) result = JSON.parse(r[1]) as SwarmResult;
    const s = /^swarm-netns: skipped: (.*)$/.exec(line);
    if (s) skipped = s[1];
    if (failedLine === null && line.startsWith("swarm-netns: FAILED")) failedLine = line;
  };
  for await (const chunk of child.stdout) {
    buffer += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      take(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
    if (buffer.length > MAX_LINE_CHARS) buffer = buffer.slice(-MAX_LINE_CHARS);
  }
  if (buffer) take(buffer);
  const status = await child.status;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  const wallS = (performance.now() - started) / 1000;
  if (skipped !== null) return { kind: "skipped", size, reason: skipped };
  if (status.code === 0 && result !== null) return { kind: "measured", size, wallS, result };
  const failure = failedLine ?? `the helper exited ${status.code} without a result`;
  return { kind: "failed", size, wallS, reason: failure.replace(/^swarm-netns: /, "") };
}

/** A row of the table (and of --json's `rows`). */
export interface SwarmRow {
  readonly size: number;
  readonly doneP50S: number;
  readonly doneMaxS: number;
  /** max ÷ T1; null without a 1-device run. */
  readonly maxOverT1: number | null;
  readonly egressRatio: number;
  readonly cpTxRatio: number;
  readonly maxUploadMiB: number;
  readonly uploaders: number;
  readonly cpuBusyShare: number;
  readonly cpuFleetShare: number;
  readonly cpCpuS: number;
  readonly agentsCpuS: number;
  readonly wallS: number;
  readonly leaders: string;
}

/** Rows from the measured outcomes; T1 is the 1-device region's max. */
export function rowsOf(outcomes: readonly SizeOutcome[]): SwarmRow[] {
  const measured = outcomes.filter((o) => o.kind === "measured");
  const one = measured.find((o) => o.size === 1);
  const t1 = one ? one.result.doneMaxS : null;
  return measured.map((o) => {
    const r = o.result;
    return {
      size: o.size,
      doneP50S: r.doneP50S,
      doneMaxS: r.doneMaxS,
      maxOverT1: t1 !== null && t1 > 0 ? r.doneMaxS / t1 : null,
      egressRatio: r.egressRatio,
      cpTxRatio: r.patchBytes > 0 ? r.cpTxBytes / r.patchBytes : 0,
      maxUploadMiB: r.maxUploadBytes / 1048576,
      uploaders: r.uploaders,
      cpuBusyShare: r.cpu.busyShare,
      cpuFleetShare: r.cpu.fleetShare ?? 0,
      cpCpuS: r.cpu.cpCpuS,
      agentsCpuS: r.cpu.agentsCpuS,
      wallS: o.wallS,
      leaders: r.elections.map((e) => `${e.leader ?? "-"}:${e.state}`).join(" "),
    };
  });
}

/** The table, as text. */
export function formatTable(rows: readonly SwarmRow[]): string {
  const head = [
    "devices",
    "p50 s",
    "max s",
    "max/T1",
    "CP blob/patch",
    "CP eth0/patch",
    "max upload MiB",
    "uploaders",
    "CPU busy",
    "fleet CPU",
    "CP cpu s",
    "agents cpu s",
    "run s",
  ];
  const lines = rows.map((r) => [
    String(r.size),
    r.doneP50S.toFixed(1),
    r.doneMaxS.toFixed(1),
    r.maxOverT1 === null ? "-" : r.maxOverT1.toFixed(2),
    r.egressRatio.toFixed(3),
    r.cpTxRatio.toFixed(3),
    r.maxUploadMiB.toFixed(1),
    String(r.uploaders),
    `${(r.cpuBusyShare * 100).toFixed(0)}%`,
    `${(r.cpuFleetShare * 100).toFixed(0)}%`,
    r.cpCpuS.toFixed(1),
    r.agentsCpuS.toFixed(1),
    r.wallS.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(" | ")} |`;
  return [fmt(head), `|${widths.map((w) => "-".repeat(w + 1) + ":").join("|")}|`, ...lines.map(fmt)]
    .join("\n");
}

async function main(): Promise<number> {
  let options: SwarmBenchOptions;
  try {
    options = parseSwarmBenchArgs(Deno.args);
  } catch (e) {
    console.error(`bench:swarm: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const outcomes: SizeOutcome[] = [];
  for (const size of options.sizes) {
    console.error(`bench:swarm: region of ${size} device(s) ...`);
    const outcome = await runSize(options, size);
    outcomes.push(outcome);
    if (outcome.kind === "skipped" || interrupted) break;
  }
  const skipped = outcomes.find((o) => o.kind === "skipped");
  const rows = rowsOf(outcomes);
  const first = outcomes.find((o) => o.kind === "measured");
  const links = first?.kind === "measured"
    ? `${first.result.rate} each way per device link; ${
      first.result.delayApplied
        ? `${first.result.delay} one way per direction (netem)`
        : `delay ${first.result.delay} NOT applied (no sch_netem in this kernel)`
    }; control plane link ${first.result.cpShaped ? "shaped the same" : "unshaped"}; patch ${
      (first.result.patchBytes / 1048576).toFixed(1)
    } MiB`
    : "";
  const failures = outcomes.filter((o) => o.kind === "failed");
  if (options.json) {
    console.log(JSON.stringify(
      {
        rate: options.rate,
        delay: options.delay,
        delayApplied: first?.kind === "measured" ? first.result.delayApplied : null,
        cpShaped: !options.cpUnshaped,
        blobMib: options.blobMib,
        patchBytes: first?.kind === "measured" ? first.result.patchBytes : null,
        goal: { maxOverT1: GOAL_MAX_OVER_T1, egressRatio: GOAL_EGRESS_RATIO },
        rows,
        outcomes,
        skipped: skipped?.kind === "skipped" ? skipped.reason : null,
      },
      null,
      2,
    ));
  } else if (skipped?.kind === "skipped") {
    console.log(`bench:swarm: skipped: ${skipped.reason}`);
  } else {
    console.log(`bench:swarm: ${links}`);
    console.log(formatTable(rows));
    console.log(
      `goal (issue 15): 64 devices max/T1 <= ${GOAL_MAX_OVER_T1}, CP blob/patch <= ${GOAL_EGRESS_RATIO}`,
    );
    for (const f of failures) {
      if (f.kind === "failed") {
        console.log(`size ${f.size}: FAILED after ${f.wallS.toFixed(0)} s: ${f.reason}`);
      }
    }
  }
  return interrupted ? 130 : failures.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
