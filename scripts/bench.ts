/**
 * `deno task bench`: encode/apply throughput, peak memory and patch size of
 * poolboy against xdelta3, zstd --patch-from and bsdiff, on the same generated
 * pairs in the same run.
 *
 * Each tool runs as a child process under `/usr/bin/time` (peak RSS = its
 * "maximum resident set size"); seconds are wall-clock of the whole process,
 * Deno's start-up included. Every output is checked byte-identical to the target.
 * Peers that are not installed are skipped and said so.
 *
 * Usage: deno task bench [--sizes 256MiB,1GiB,4GiB] [--dir DIR] [--json]
 *        [--bsdiff-max 256MiB] [--zstd19-max 1GiB] [--no-peers]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { formatBytes, parseSize } from "../kernel/units.ts";
import { hashFile } from "../codec/hash_file.ts";
import { writePair } from "./bench_pairs.ts";
import {
  exists,
  type Measure,
  measure,
  printTable,
  size,
  TIME,
  which,
  zstdPatchCommand,
} from "./measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    sizes: { type: "string", default: "256MiB,1GiB,4GiB" },
    dir: { type: "string" },
    json: { type: "boolean" },
    "bsdiff-max": { type: "string", default: "256MiB" },
    "zstd19-max": { type: "string", default: "1GiB" },
    "no-peers": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    `deno task bench [--sizes 256MiB,1GiB,4GiB] [--dir DIR] [--json] [--bsdiff-max 256MiB]
                 [--zstd19-max 1GiB] [--no-peers]

Generates a deterministic base/target pair per size (incompressible bytes; the
target has 37 bytes inserted near the front, ~2% rewritten, 1 MiB appended),
then encodes and applies it with poolboy (with --threads 1 and with one thread
per core; with an index file of the base made beforehand; apply in the main
thread and on a Worker) and, where installed, xdelta3 -e -9, zstd
--patch-from --long=31 at -3 and at -19 (-19 only up to --zstd19-max: it runs
at a few MB/s), and bsdiff (only up to --bsdiff-max: it needs ~17x the base in
memory). Prints patch size, seconds, MB/s of target and peak RSS for each, then
each poolboy row as a ratio to the best peer in each column, and checks every
output against the target.
Needs /usr/bin/time (Debian package "time") for peak RSS.`,
  );
  Deno.exit(0);
}

const MOD = fileURLToPath(new URL("../mod.ts", import.meta.url));

interface Row {
  tool: string;
  size: number;
  targetSize: number;
  patchSize?: number;
  encode?: Measure;
  apply?: Measure;
  note?: string;
}

async function runTool(
  tool: string,
  encode: string[],
  apply: string[],
  paths: { patch: string; out: string; target: string; dir: string },
  targetSize: number,
  pairSize: number,
  wantDigest: string,
): Promise<Row> {
  const row: Row = { tool, size: pairSize, targetSize };
  try {
    row.encode = await measure(encode, paths.dir);
    row.patchSize = await size(paths.patch);
    row.apply = await measure(apply, paths.dir);
    const got = await hashFile(paths.out);
    if (got !== wantDigest) row.note = "OUTPUT DIFFERS FROM TARGET";
  } catch (err) {
    row.note = err instanceof Error ? err.message.slice(0, 160) : String(err);
  } finally {
    for (const p of [paths.patch, paths.out]) await Deno.remove(p).catch(() => {});
  }
  return row;
}

function mbps(bytes: number, m?: Measure): string {
  return m && m.seconds > 0 ? (bytes / 1e6 / m.seconds).toFixed(0) : "-";
}

function printRows(rows: Row[]): void {
  const header = [
    "tool",
    "patch",
    "% target",
    "enc s",
    "enc MB/s",
    "enc RSS",
    "app s",
    "app MB/s",
    "app RSS",
  ];
  const lines = rows.map((r) => [
    r.tool,
    r.patchSize === undefined ? "-" : formatBytes(r.patchSize),
    r.patchSize === undefined ? "-" : ((100 * r.patchSize) / r.targetSize).toFixed(2),
    r.encode ? r.encode.seconds.toFixed(2) : "-",
    mbps(r.targetSize, r.encode),
    r.encode ? formatBytes(r.encode.peakRssBytes) : "-",
    r.apply ? r.apply.seconds.toFixed(2) : "-",
    mbps(r.targetSize, r.apply),
    r.apply ? formatBytes(r.apply.peakRssBytes) : "-",
  ]);
  printTable(header, lines);
  for (const r of rows) if (r.note) console.log(`  note: ${r.tool}: ${r.note}`);
}

/**
 * Each poolboy row against the best peer of each column: patch size and peak
 * RSS as ours / best (below 1 is better), speeds as ours / best (above 1 is better).
 */
function printRatios(rows: Row[]): void {
  const peersDone = rows.filter((r) => !r.tool.startsWith("poolboy") && r.encode && r.apply);
  if (peersDone.length === 0) return;
  type Pick = (r: Row) => number | undefined;
  const best = (pick: Pick, lowest: boolean): Row => {
    const sorted = [...peersDone].sort((a, b) => (pick(a)! - pick(b)!) * (lowest ? 1 : -1));
    return sorted[0];
  };
  const columns: [string, Pick, boolean][] = [
    ["patch", (r) => r.patchSize, true],
    ["enc speed", (r) => r.encode && r.targetSize / r.encode.seconds, false],
    ["app speed", (r) => r.apply && r.targetSize / r.apply.seconds, false],
    ["enc RSS", (r) => r.encode?.peakRssBytes, true],
    ["app RSS", (r) => r.apply?.peakRssBytes, true],
  ];
  console.log("  ratio to the best peer (patch, RSS: < 1 is better; speed: > 1 is better):");
  for (const column of columns) {
    const [name, pick, lowest] = column;
    const peer = best(pick, lowest);
    const cells = rows.filter((r) => r.tool.startsWith("poolboy") && pick(r) !== undefined).map(
      (r) => `${(pick(r)! / pick(peer)!).toFixed(2)}x`,
    );
    console.log(`    ${name.padEnd(9)} vs ${peer.tool.padEnd(36)} ${cells.join("  ")}`);
  }
}

if (!(await exists(TIME))) {
  console.error(`bench: ${TIME} is missing; install it with: apt-get install -y time`);
  Deno.exit(2);
}
const sizes = values.sizes.split(",").map((s) => {
  const n = parseSize(s);
  if (n === undefined) throw new Error(`--sizes: "${s}" is not a size`);
  return n;
});
const bsdiffMax = parseSize(values["bsdiff-max"]) ?? 0;
const zstd19Max = parseSize(values["zstd19-max"]) ?? 0;
const cores = navigator.hardwareConcurrency;
const peers = values["no-peers"] ? [] : [
  ...((await which("xdelta3")) ? ["xdelta3"] : []),
  ...((await which("zstd")) ? ["zstd"] : []),
  ...((await which("bsdiff")) && (await which("bspatch")) ? ["bsdiff"] : []),
];
const missing = ["xdelta3", "zstd", "bsdiff"].filter((p) => !peers.includes(p));
if (!values["no-peers"] && missing.length > 0) {
  console.error(
    `bench: not installed, skipped: ${missing.join(", ")} (apt-get install -y xdelta3 zstd bsdiff)`,
  );
}

const dir = values.dir ?? await Deno.makeTempDir({ prefix: "poolboy-bench-" });
await Deno.mkdir(dir, { recursive: true });
const all: Row[] = [];
try {
  for (const pairSize of sizes) {
    const { base, target } = await writePair(dir, pairSize);
    const targetSize = await size(target);
    const want = await hashFile(target);
    const patch = `${dir}/patch`;
    const out = `${dir}/out`;
    const paths = { patch, out, target, dir };
    const deno = Deno.execPath();
    const rows: Row[] = [];
    const poolboy = (...args: string[]) => [deno, "run", "-R", "-W", MOD, ...args, "--quiet"];
    // Encode with one Worker and with one per core; apply in the main thread
    // (the default) and on a Worker. The default encode is one per core but one.
    for (const threads of [...new Set([1, cores])]) {
      const worker = threads > 1;
      rows.push(
        await runTool(
          `poolboy v1 --threads ${threads}${worker ? ", apply --threads 1" : ""}`,
          poolboy(
            "encode",
            base,
            target,
            "-o",
            patch,
            "--format",
            "1",
            "--threads",
            String(threads),
          ),
          poolboy("apply", base, patch, "-o", out, "--threads", worker ? "1" : "0"),
          paths,
          targetSize,
          pairSize,
          want,
        ),
      );
    }
    // The same encode with the base's chunk index file made beforehand (as the
    // control plane keeps one per stored version): only the target is read.
    const idx = `${dir}/base.idx`;
    const indexing = await measure(
      poolboy("index", base, "-o", idx),
      dir,
    );
    const withIndex = await runTool(
      "poolboy v1 --base-index",
      poolboy("encode", base, target, "-o", patch, "--format", "1", "--base-index", idx),
      poolboy("apply", base, patch, "-o", out),
      paths,
      targetSize,
      pairSize,
      want,
    );
    withIndex.note = `index file made beforehand in ${indexing.seconds.toFixed(2)} s, peak RSS ${
      formatBytes(indexing.peakRssBytes)
    }, ${formatBytes(await size(idx))}${withIndex.note ? "; " + withIndex.note : ""}`;
    rows.push(withIndex);
    await Deno.remove(idx);
    if (peers.includes("xdelta3")) {
      rows.push(
        await runTool(
          "xdelta3 -e -9",
          ["xdelta3", "-e", "-9", "-f", "-s", base, target, patch],
          ["xdelta3", "-d", "-f", "-s", base, patch, out],
          paths,
          targetSize,
          pairSize,
          want,
        ),
      );
    }
    if (peers.includes("zstd")) {
      rows.push(
        await runTool(
          "zstd -3 --patch-from --long=31",
          zstdPatchCommand(["-3"], base, target, patch),
          ["zstd", "-q", "-f", "-d", "--long=31", `--patch-from=${base}`, patch, "-o", out],
          paths,
          targetSize,
          pairSize,
          want,
        ),
      );
      if (pairSize <= zstd19Max) {
        rows.push(
          await runTool(
            "zstd -19 -T0 --patch-from --long=31",
            zstdPatchCommand(["-19", "-T0"], base, target, patch),
            ["zstd", "-q", "-f", "-d", "--long=31", `--patch-from=${base}`, patch, "-o", out],
            paths,
            targetSize,
            pairSize,
            want,
          ),
        );
      } else {
        rows.push({
          tool: "zstd -19 -T0 --patch-from --long=31",
          size: pairSize,
          targetSize,
          note: `skipped above --zstd19-max ${formatBytes(zstd19Max)} (runs at a few MB/s)`,
        });
      }
    }
    if (peers.includes("bsdiff")) {
      if (pairSize <= bsdiffMax) {
        rows.push(
          await runTool(
            "bsdiff",
            ["bsdiff", base, target, patch],
            ["bspatch", base, out, patch],
            paths,
            targetSize,
            pairSize,
            want,
          ),
        );
      } else {
        rows.push({
          tool: "bsdiff",
          size: pairSize,
          targetSize,
          note: `skipped above --bsdiff-max ${formatBytes(bsdiffMax)} (needs ~17x the base in RAM)`,
        });
      }
    }
    for (const p of [base, target]) await Deno.remove(p);
    if (!values.json) {
      console.log(`\npair ${formatBytes(pairSize)} (target ${formatBytes(targetSize)})`);
      printRows(rows);
      printRatios(rows);
    }
    all.push(...rows);
  }
} finally {
  if (!values.dir) await Deno.remove(dir, { recursive: true });
}

const ours = all.filter((r) => r.tool.startsWith("poolboy"));
if (values.json) {
  console.log(JSON.stringify(all, null, 2));
} else {
  console.log("\npoolboy peak RSS by size (budget: encode <= 100 MB, apply <= 64 MB):");
  for (const r of ours) {
    console.log(
      `  ${formatBytes(r.size).padStart(10)}  ${r.tool.padEnd(42)}  encode ${
        r.encode ? (r.encode.peakRssBytes / 1e6).toFixed(1) : "-"
      } MB  apply ${r.apply ? (r.apply.peakRssBytes / 1e6).toFixed(1) : "-"} MB`,
    );
  }
}
