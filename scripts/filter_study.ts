/**
 * `deno task bench:filters`: what each v2 filter makes of model bytes, to show
 * why the encoder tries the ones it does. For each corpus scenario whose base
 * and target have the same layout (every tensor at the same offset), every
 * 1 MiB piece of the target that differs from the base is compressed with zstd
 * (levels 1 and 3) after each filter: the raw bytes, byte or bit planes of
 * them, and the XOR or SUB residue against the base piece at the same offset,
 * plain or in planes. Prints the total per filter in % of the target.
 *
 * Usage: deno task bench:filters [--size 32MiB] [--scenarios a,b,...] [--width 2|4]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { constants, zstdCompressSync } from "node:zlib";
import { combine, shuffle } from "../codec/residue_filter.ts";
import { type Filter, filterName } from "../codec/patch_format.ts";
import { parseSize } from "../kernel/units.ts";
import { DTYPE_BYTES, parseScenarios, scenarioPlans, writeScenario } from "../testkit/corpus.ts";
import { printTable } from "./measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "32MiB" },
    scenarios: { type: "string", default: "last-layer,finetune-fp32,finetune-bf16,lora" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`deno task bench:filters [--size 32MiB] [--scenarios a,b,...]

Compresses the differing 1 MiB pieces of each SafeTensors scenario (same layout
in base and target) after each v2 filter, at zstd levels 1 and 3, and prints
the totals in % of the target. The element width is the scenario's dtype.`);
  Deno.exit(0);
}
const size = parseSize(values.size);
if (size === undefined) throw new Error(`--size: "${values.size}" is not a size`);
const PIECE = 1024 * 1024;

const dir = await Deno.makeTempDir({ prefix: "poolboy-filter-study-" });
const header = ["scenario", "filter", "zstd -1", "zstd -3"];
const lines: string[][] = [];
try {
  for (const scenario of parseScenarios(values.scenarios)) {
    const plans = scenarioPlans(scenario, size, 1);
    const width = DTYPE_BYTES[plans.target.tensors[1].dtype] as 2 | 4;
    const paths = await writeScenario(dir, "safetensors", scenario, size, 1);
    const base = await Deno.readFile(paths.base);
    const target = await Deno.readFile(paths.target);
    await Deno.remove(paths.base);
    await Deno.remove(paths.target);
    if (base.length !== target.length) {
      console.error(`${scenario}: base and target differ in length; skipped`);
      continue;
    }
    const candidates: { label: string; kind: "z" | "delta"; filter: Filter }[] = [
      { label: "ZLITERAL", kind: "z", filter: { width: 1, shuffle: "none", combine: "xor" } },
      { label: "ZLITERAL", kind: "z", filter: { width, shuffle: "bytes", combine: "xor" } },
      { label: "ZLITERAL", kind: "z", filter: { width, shuffle: "bits", combine: "xor" } },
      { label: "DELTA", kind: "delta", filter: { width: 1, shuffle: "none", combine: "xor" } },
      { label: "DELTA", kind: "delta", filter: { width, shuffle: "bytes", combine: "xor" } },
      { label: "DELTA", kind: "delta", filter: { width, shuffle: "none", combine: "sub" } },
      { label: "DELTA", kind: "delta", filter: { width, shuffle: "bytes", combine: "sub" } },
      { label: "DELTA", kind: "delta", filter: { width, shuffle: "bits", combine: "sub" } },
    ];
    const totals = candidates.map(() => [0, 0]);
    const residue = new Uint8Array(PIECE);
    const planes = new Uint8Array(PIECE);
    for (let at = 0; at < target.length; at += PIECE) {
      const t = target.subarray(at, Math.min(at + PIECE, target.length));
      const b = base.subarray(at, at + t.length);
      if (t.every((v, i) => v === b[i])) continue;
      candidates.forEach(({ kind, filter }, c) => {
        const r = residue.subarray(0, t.length);
        if (kind === "delta") combine(t, b, filter, r);
        else r.set(t);
        const p = planes.subarray(0, t.length);
        shuffle(r, filter, p);
        [1, 3].forEach((level, l) => {
          totals[c][l] += zstdCompressSync(p, {
            params: { [constants.ZSTD_c_compressionLevel]: level },
          }).length;
        });
      });
    }
    candidates.forEach(({ label, filter }, c) => {
      lines.push([
        scenario,
        `${label} ${filterName(filter)}`,
        ...totals[c].map((n) => `${(100 * n / target.length).toFixed(2)}%`),
      ]);
    });
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
printTable(header, lines);
