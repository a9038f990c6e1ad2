/**
 * `deno task bench:speed`: encode and apply speed and peak memory of poolboy
 * v2 on large fine-tunes, each printed beside the floors measured in the same
 * run on the same files: one pass of BLAKE3 over the target (`poolboy hash`),
 * a durable copy of the target (`dd conv=fsync`: what writing the output costs
 * any apply on this disk) and xdelta3 -9 (when installed). The machine may be
 * shared and noisy: the ratios to the floors are the numbers to compare
 * across runs.
 *
 * For each scenario (default: finetune-fp32 and finetune-bf16 of
 * testkit/corpus.ts, safetensors), writes a base of about --size bytes and its
 * target into a temporary directory, measures, and deletes them (--inputs DIR
 * uses DIR/<format>-<scenario>.base/.target instead, writing them there first
 * when missing, and leaves them).
 *
 * Usage: deno task bench:speed [--size 1GiB] [--scenarios a,b] [--format safetensors]
 *                              [--inputs DIR] [--no-xdelta3] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { formatBytes, parseSize } from "../kernel/units.ts";
import {
  type ContainerFormat,
  parseFormats,
  parseScenarios,
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
  which,
  xdeltaSourceWindow,
} from "./measure.ts";

const MOD = fileURLToPath(new URL("../mod.ts", import.meta.url));
/** The permissions and flags of the `deno task hash` entry in deno.json (encode and apply: `leanCommand` first). */
const RUN = [
  "run",
  "--v8-flags=--max-semi-space-size=1",
  "--allow-read",
  "--allow-write",
  "--allow-env=INIT_CWD",
  MOD,
];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "1GiB" },
    scenarios: { type: "string", default: "finetune-fp32,finetune-bf16" },
    format: { type: "string", default: "safetensors" },
    inputs: { type: "string" },
    "no-xdelta3": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h" },
  },
});

if (values.help) {
  console.log(`deno task bench:speed [--size 1GiB] [--scenarios a,b] [--format safetensors]
                         [--inputs DIR] [--no-xdelta3] [--json]

Per scenario: poolboy hash (one BLAKE3 pass over the target: the floor),
dd conv=fsync of the target into a new file (the write floor: an apply writes
and fsyncs as many bytes), poolboy encode (the default format and threads),
poolboy apply, xdelta3 -e -9 (source window widened to the base), each with
seconds, MB/s of target (decimal) and peak RSS (/usr/bin/time, decimal MB),
and each MB/s as a fraction of the BLAKE3 floor's and of the write floor's. Inputs are written to a temporary
directory and deleted (--inputs DIR: use DIR's files, written there first when
missing, and keep them).`);
  Deno.exit(0);
}

const parsedSize = parseSize(values.size);
if (parsedSize === undefined || parsedSize <= 0) {
  console.error(`bench:speed: --size: not a size: ${values.size}`);
  Deno.exit(2);
}
const baseSize: number = parsedSize;
const scenarios = parseScenarios(values.scenarios);
const [format] = parseFormats(values.format) as ContainerFormat[];
const xdelta = !values["no-xdelta3"] && await which("xdelta3");

interface Row {
  readonly scenario: string;
  readonly step: string;
  readonly measure: Measure;
  readonly targetBytes: number;
  readonly patchBytes?: number;
}

const rows: Row[] = [];
const work = await Deno.makeTempDir({ prefix: "poolboy-speed-" });
try {
  for (const scenario of scenarios) {
    const name = scenarioName(format, scenario);
    const kept = values.inputs
      ? { base: `${values.inputs}/${name}.base`, target: `${values.inputs}/${name}.target` }
      : undefined;
    const files = kept && await exists(kept.base) && await exists(kept.target)
      ? kept
      : await writeScenario(values.inputs ?? work, format, scenario, baseSize);
    const targetBytes = await size(files.target);
    const patch = `${work}/${name}.patch`;
    const out = `${work}/${name}.out`;
    const row = (step: string, m: Measure, patchBytes?: number) => {
      rows.push({ scenario: name, step, measure: m, targetBytes, patchBytes });
      // Each result as soon as it is known (a long xdelta3 run may be cut short).
      if (!values.json) {
        console.error(`${name} ${step}: ${m.seconds} s, ${(m.peakRssBytes / 1e6).toFixed(1)} MB`);
      }
    };
    row("BLAKE3 one pass", await measure(["deno", ...RUN, "hash", files.target], work));
    const copy = `${work}/${name}.copy`;
    row(
      "write floor (dd conv=fsync)",
      await measure(
        ["dd", `if=${files.target}`, `of=${copy}`, "bs=1M", "conv=fsync", "status=none"],
        work,
      ),
    );
    await Deno.remove(copy);
    row(
      "poolboy encode",
      await measure(
        [...leanCommand("deno"), ...RUN.slice(2), "encode", files.base, files.target, "-o", patch],
        work,
      ),
      await size(patch),
    );
    row(
      "poolboy apply",
      await measure([
        ...leanCommand("deno"),
        ...RUN.slice(2),
        "apply",
        files.base,
        patch,
        "-o",
        out,
      ], work),
    );
    await Deno.remove(out);
    await Deno.remove(patch);
    if (xdelta) {
      const window = String(xdeltaSourceWindow(baseSize));
      const xpatch = `${work}/${name}.xdelta`;
      row(
        "xdelta3 -9 encode",
        await measure(
          ["xdelta3", "-e", "-9", "-f", "-B", window, "-s", files.base, files.target, xpatch],
          work,
        ),
        await size(xpatch),
      );
      await Deno.remove(xpatch);
    }
    if (!values.inputs) {
      await Deno.remove(files.base);
      await Deno.remove(files.target);
    }
  }
} finally {
  await Deno.remove(work, { recursive: true });
}

const mbps = (r: Row) => r.targetBytes / 1e6 / r.measure.seconds;
if (values.json) {
  console.log(JSON.stringify(rows.map((r) => ({ ...r, mbPerSecond: mbps(r) })), null, 2));
} else {
  const floorOf = (step: string) =>
    new Map(rows.filter((r) => r.step === step).map((r) => [r.scenario, mbps(r)]));
  const floor = floorOf("BLAKE3 one pass");
  const writeFloor = floorOf("write floor (dd conv=fsync)");
  printTable(
    [
      "scenario / step",
      "seconds",
      "MB/s of target",
      "× BLAKE3 floor",
      "× write floor",
      "peak RSS MB",
      "patch",
    ],
    rows.map((r) => [
      `${r.scenario} ${r.step}`,
      r.measure.seconds.toFixed(2),
      mbps(r).toFixed(0),
      (mbps(r) / floor.get(r.scenario)!).toFixed(2),
      (mbps(r) / writeFloor.get(r.scenario)!).toFixed(2),
      (r.measure.peakRssBytes / 1e6).toFixed(1),
      r.patchBytes === undefined ? "" : formatBytes(r.patchBytes),
    ]),
  );
  console.log(
    `base about ${formatBytes(baseSize)}; load average ${
      Deno.loadavg().map((x) => x.toFixed(1)).join(" ")
    } on ${navigator.hardwareConcurrency} cores`,
  );
}
