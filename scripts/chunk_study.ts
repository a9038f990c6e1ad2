/**
 * `deno task bench:chunks`: v2 patch size per average chunk size (64 KiB ...
 * 1 MiB, min = avg / 4, max = avg × 4) on each corpus scenario, to choose the
 * default from numbers. Encodes in-process (sizes only; one thread), applies
 * each patch and checks the output's BLAKE3.
 *
 * Usage: deno task bench:chunks [--size 32MiB] [--format safetensors|gguf|onnx|all]
 *        [--scenarios a,b,...] [--avg 64KiB,128KiB,256KiB,512KiB,1MiB] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { applyFile } from "../codec/applier.ts";
import { encodeFile } from "../codec/encoder.ts";
import { formatBytes, parseSize } from "../kernel/units.ts";
import { parseFormats, parseScenarios, scenarioName, writeScenario } from "../testkit/corpus.ts";
import { printTable } from "./measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "32MiB" },
    format: { type: "string", default: "safetensors" },
    scenarios: { type: "string" },
    avg: { type: "string", default: "64KiB,128KiB,256KiB,512KiB,1MiB" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`deno task bench:chunks [--size 32MiB] [--format safetensors|gguf|onnx|all]
                       [--scenarios a,b,...] [--avg 64KiB,128KiB,256KiB,512KiB,1MiB] [--json]

Encodes each corpus scenario as a v2 patch once per average chunk size (min =
avg / 4, max = avg x 4), applies it (output BLAKE3 checked) and prints the
patch sizes in % of the target, the smallest per scenario in bold.`);
  Deno.exit(0);
}
const size = parseSize(values.size);
if (size === undefined) throw new Error(`--size: "${values.size}" is not a size`);
const averages = values.avg.split(",").map((text) => {
  const avg = parseSize(text.trim());
  if (avg === undefined) throw new Error(`--avg: "${text}" is not a size`);
  return avg;
});

const dir = await Deno.makeTempDir({ prefix: "poolboy-chunk-study-" });
const rows: { scenario: string; targetSize: number; sizes: number[] }[] = [];
try {
  for (const format of parseFormats(values.format)) {
    for (const scenario of parseScenarios(values.scenarios)) {
      const { base, target } = await writeScenario(dir, format, scenario, size, 1);
      const sizes: number[] = [];
      let targetSize = 0;
      for (const avg of averages) {
        const chunk = { min: avg / 4, avg, max: avg * 4 };
        const patch = `${dir}/patch`;
        const encoded = await encodeFile(base, target, patch, { format: 2, chunk, threads: 1 });
        const applied = await applyFile(base, patch, `${dir}/out`);
        if (applied.targetBlake3 !== encoded.targetBlake3) {
          throw new Error(`${scenario} at avg ${formatBytes(avg)}: output does not verify`);
        }
        sizes.push(encoded.patchSize);
        targetSize = encoded.targetSize;
      }
      rows.push({ scenario: scenarioName(format, scenario), targetSize, sizes });
      await Deno.remove(base);
      await Deno.remove(target);
      if (!values.json) console.error(`${scenarioName(format, scenario)} done`);
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}

if (values.json) {
  console.log(JSON.stringify({ averages, rows }, null, 2));
} else {
  const percent = (n: number, of: number) =>
    n < 10_000 ? `${n} B` : `${(100 * n / of).toFixed(2)}%`;
  printTable(
    ["scenario", ...averages.map((a) => `avg ${formatBytes(a)}`)],
    rows.map((r) => {
      const best = Math.min(...r.sizes);
      return [
        r.scenario,
        ...r.sizes.map((s) =>
          s === best ? `**${percent(s, r.targetSize)}**` : percent(s, r.targetSize)
        ),
      ];
    }),
  );
}
