/**
 * `deno task bench:corpus`: patch sizes of poolboy (formats 1 and 2) against
 * xdelta3, zstd --patch-from, bsdiff and plain zstd of the target, on the
 * model-update scenarios of `corpus.ts` (SafeTensors by default).
 *
 * Per scenario, in a temporary directory removed at the end: writes the base
 * and target, then runs each tool as a child process under `/usr/bin/time`
 * (seconds are wall-clock of the whole process, Deno's start-up included; peak
 * RSS is its "maximum resident set size"), after a `sync` so that no run pays
 * for the writeback of another's output. poolboy's patches are applied and the
 * output's BLAKE3 checked against the target's; the peers' patches are only
 * measured. Peers that are not installed are skipped and said so.
 *
 * Usage: deno task bench:corpus [--size 64MiB] [--format safetensors|gguf|onnx|all]
 *        [--scenarios a,b,...] [--seed 1] [--bsdiff-max 128MiB] [--peers xdelta3,zstd,bsdiff|none]
 *        [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { formatBytes, parseSize } from "../kernel/units.ts";
import { hashFile } from "../codec/hash_file.ts";
import {
  type ContainerFormat,
  parseFormats,
  parseScenarios,
  type Scenario,
  scenarioName,
  scenarioPlans,
  writeScenario,
} from "../testkit/corpus.ts";
import { exists, type Measure, measure, printTable, size, TIME, which } from "./measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "64MiB" },
    format: { type: "string", default: "safetensors" },
    scenarios: { type: "string" },
    seed: { type: "string", default: "1" },
    "bsdiff-max": { type: "string", default: "128MiB" },
    peers: { type: "string", default: "xdelta3,zstd,bsdiff" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    `deno task bench:corpus [--size 64MiB] [--format safetensors|gguf|onnx|all]
                        [--scenarios a,b,...] [--seed 1] [--bsdiff-max 128MiB]
                        [--peers xdelta3,zstd,bsdiff|none] [--json]

For each scenario of testkit/corpus.ts (default: all of them; the base about
--size bytes), writes a base and a target model file in a temporary directory
and measures the patch each tool makes, as bytes and as % of the target:
  poolboy v1       encode --format 1 --threads 1, then apply (output checked)
  poolboy v2       encode --format 2 --threads 1, then apply (output checked)
  xdelta3 -9       xdelta3 -e -9 -s BASE (source window widened above 64 MiB)
  zstd -19 patch   zstd --patch-from=BASE --long=31 -19 -T0
  bsdiff           only up to --bsdiff-max (it needs ~17x the base in memory)
  zstd -19 alone   zstd -19 --long=31 -T0 of the target, no base
with seconds and peak RSS of each encode and of poolboy's applies (a sync
before each timed run). Prints a table per scenario, then the ratio of
poolboy v2's patch to the best other tool's per scenario (< 1: v2 is smaller).
--peers chooses the other tools (none: poolboy only). --json prints the rows as
JSON instead.
Needs /usr/bin/time (Debian package "time").`,
  );
  Deno.exit(0);
}

const MOD = fileURLToPath(new URL("../mod.ts", import.meta.url));
const XDELTA_DEFAULT_WINDOW = 64 * 1024 * 1024;
/** The V8 flags of the `encode` / `apply` tasks (a smaller young generation: ~2 MB less RSS). */
const V8_FLAGS = ["--v8-flags=--max-semi-space-size=1"];

/** Wall seconds and peak RSS of one child process. */

/** One tool on one scenario. */
interface Row {
  tool: string;
  patchSize?: number;
  encode?: Measure;
  apply?: Measure;
  /** Whether the applied output equals the target (poolboy only). */
  verified?: boolean;
  note?: string;
}

/** One scenario's results. */
interface ScenarioResult {
  format: ContainerFormat;
  scenario: Scenario;
  baseSize: number;
  targetSize: number;
  rows: Row[];
}

/** Encodes (and, given `apply`, applies and checks) with one tool; never throws. */
async function runTool(
  tool: string,
  encode: string[],
  apply: string[] | undefined,
  paths: { patch: string; out: string; dir: string },
  wantDigest: string,
): Promise<Row> {
  const row: Row = { tool };
  try {
    row.encode = await measure(encode, paths.dir);
    row.patchSize = await size(paths.patch);
    if (apply) {
      row.apply = await measure(apply, paths.dir);
      row.verified = (await hashFile(paths.out)) === wantDigest;
      if (!row.verified) row.note = "OUTPUT DIFFERS FROM TARGET";
    }
  } catch (err) {
    row.note = err instanceof Error ? err.message.slice(0, 160) : String(err);
  } finally {
    for (const p of [paths.patch, paths.out]) await Deno.remove(p).catch(() => {});
  }
  return row;
}

function printScenario(result: ScenarioResult): void {
  const header = ["tool", "patch", "% target", "enc s", "enc RSS", "app s", "app RSS"];
  const lines = result.rows.map((r) => [
    r.tool,
    r.patchSize === undefined ? "-" : formatBytes(r.patchSize),
    r.patchSize === undefined ? "-" : ((100 * r.patchSize) / result.targetSize).toFixed(2),
    r.encode ? r.encode.seconds.toFixed(2) : "-",
    r.encode ? formatBytes(r.encode.peakRssBytes) : "-",
    r.apply ? r.apply.seconds.toFixed(2) : "-",
    r.apply ? formatBytes(r.apply.peakRssBytes) : "-",
  ]);
  printTable(header, lines);
  for (const r of result.rows) if (r.note) console.log(`  note: ${r.tool}: ${r.note}`);
}

/** poolboy v2's patch over the smallest other tool's (poolboy v1 excluded). */
function v2VersusBestPeer(
  result: ScenarioResult,
): { ratio: number; v2: Row; peer: Row } | undefined {
  const v2 = result.rows.find((r) => r.tool === "poolboy v2");
  const peers = result.rows.filter((r) => !r.tool.startsWith("poolboy") && r.patchSize);
  if (!v2?.patchSize || peers.length === 0) return undefined;
  const peer = peers.reduce((a, b) => (b.patchSize! < a.patchSize! ? b : a));
  return { ratio: v2.patchSize / peer.patchSize!, v2, peer };
}

if (!(await exists(TIME))) {
  console.error(`bench:corpus: ${TIME} is missing; install it with: apt-get install -y time`);
  Deno.exit(2);
}
const pairSize = parseSize(values.size);
if (pairSize === undefined || pairSize < 64 * 1024) {
  console.error(`bench:corpus: --size: "${values.size}" is not a size >= 64KiB`);
  Deno.exit(2);
}
const bsdiffMax = parseSize(values["bsdiff-max"]) ?? 0;
const seed = Number(values.seed);
const formats = parseFormats(values.format);
const scenarios = parseScenarios(values.scenarios);
const wanted = values.peers.split(",").map((p) => p.trim()).filter((p) => p !== "" && p !== "none");
const unknownPeer = wanted.find((p) => !["xdelta3", "zstd", "bsdiff"].includes(p));
if (unknownPeer !== undefined) {
  console.error(
    `bench:corpus: --peers: unknown tool "${unknownPeer}" (xdelta3, zstd, bsdiff, none)`,
  );
  Deno.exit(2);
}
const peers: string[] = [];
for (const p of wanted) if (await which(p)) peers.push(p);
const missing = wanted.filter((p) => !peers.includes(p));
if (missing.length > 0) {
  console.error(
    `bench:corpus: not installed, skipped: ${
      missing.join(", ")
    } (apt-get install -y xdelta3 zstd bsdiff)`,
  );
}

const dir = await Deno.makeTempDir({ prefix: "poolboy-corpus-bench-" });
const results: ScenarioResult[] = [];
try {
  for (const format of formats) {
    for (const scenario of scenarios) {
      const { base, target } = await writeScenario(dir, format, scenario, pairSize, seed);
      const baseSize = await size(base);
      const targetSize = await size(target);
      const want = await hashFile(target);
      const paths = { patch: `${dir}/patch`, out: `${dir}/out`, dir };
      const { patch, out } = paths;
      const deno = Deno.execPath();
      const poolboy = (...args: string[]) => [deno, "run", ...V8_FLAGS, "-A", MOD, ...args, "-q"];
      const rows: Row[] = [];
      for (const version of ["1", "2"]) {
        rows.push(
          await runTool(
            `poolboy v${version}`,
            poolboy("encode", base, target, "-o", patch, "--format", version, "--threads", "1"),
            poolboy("apply", base, patch, "-o", out),
            paths,
            want,
          ),
        );
      }
      if (peers.includes("xdelta3")) {
        // xdelta3 matches only within its source window (64 MiB by default): widen it to the base.
        const window = baseSize > XDELTA_DEFAULT_WINDOW
          ? ["-B", String(Math.min(2 ** 31 - 2 ** 20, Math.ceil(baseSize / 2 ** 20) * 2 ** 20))]
          : [];
        rows.push(
          await runTool(
            "xdelta3 -9",
            ["xdelta3", "-e", "-9", "-f", ...window, "-s", base, target, patch],
            undefined,
            paths,
            want,
          ),
        );
      }
      if (peers.includes("zstd")) {
        rows.push(
          await runTool(
            "zstd -19 --patch-from",
            [
              "zstd",
              "-q",
              "-f",
              "-19",
              "-T0",
              "--long=31",
              `--patch-from=${base}`,
              target,
              "-o",
              patch,
            ],
            undefined,
            paths,
            want,
          ),
        );
      }
      if (peers.includes("bsdiff")) {
        if (Math.max(baseSize, targetSize) <= bsdiffMax) {
          rows.push(
            await runTool("bsdiff", ["bsdiff", base, target, patch], undefined, paths, want),
          );
        } else {
          rows.push({
            tool: "bsdiff",
            note: `skipped above --bsdiff-max ${
              formatBytes(bsdiffMax)
            } (needs ~17x the base in RAM)`,
          });
        }
      }
      if (peers.includes("zstd")) {
        rows.push(
          await runTool(
            "zstd -19 alone (no base)",
            ["zstd", "-q", "-f", "-19", "-T0", "--long=31", target, "-o", patch],
            undefined,
            paths,
            want,
          ),
        );
      }
      for (const p of [base, target]) await Deno.remove(p);
      const result = { format, scenario, baseSize, targetSize, rows };
      results.push(result);
      if (!values.json) {
        const plans = scenarioPlans(scenario, pairSize, seed);
        const { hidden, layers, vocab } = plans.base.shape;
        console.log(
          `\n${scenarioName(format, scenario)}: base ${formatBytes(baseSize)}, target ${
            formatBytes(targetSize)
          } (hidden ${hidden}, ${layers} layers, vocab ${vocab}, ${
            plans.base.tensors[1].dtype
          } -> ${plans.target.tensors[1].dtype})`,
        );
        printScenario(result);
      }
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}

if (values.json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  console.log("\npoolboy v2 patch / best other tool's patch (< 1: v2 is smaller):");
  for (const result of results) {
    const name = scenarioName(result.format, result.scenario).padEnd(28);
    const cmp = v2VersusBestPeer(result);
    if (!cmp) {
      console.log(`  ${name} -`);
      continue;
    }
    console.log(
      `  ${name} ${cmp.ratio.toFixed(2).padStart(6)}x  (v2 ${
        formatBytes(cmp.v2.patchSize!)
      } vs ${cmp.peer.tool} ${formatBytes(cmp.peer.patchSize!)})`,
    );
  }
}

// Every poolboy output must have been rebuilt byte-identical to its target.
const failed = results.flatMap((r) =>
  r.rows.filter((row) => row.tool.startsWith("poolboy") && row.verified !== true).map((row) =>
    `${scenarioName(r.format, r.scenario)} ${row.tool}`
  )
);
if (failed.length > 0) {
  console.error(`\nbench:corpus: NOT VERIFIED: ${failed.join(", ")}`);
  Deno.exitCode = 1;
}
