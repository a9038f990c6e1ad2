/**
 * `deno task demo`: the main job on built-in defaults. Makes a synthetic model
 * (a ~100 MB SafeTensors file) and a fine-tuned version of it (last layers
 * retrained, header metadata grown so every later byte shifts), encodes the
 * patch, applies it, checks the rebuilt file is byte-identical, and prints what
 * was saved. Everything happens in a temporary directory, removed at the end
 * unless `--keep` is given.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { applyFile } from "../codec/applier.ts";
import { encodeFile } from "../codec/encoder.ts";
import { hashFile } from "../codec/hash_file.ts";
import { countOf, formatBytes, megabytesPerSecond } from "../kernel/units.ts";
import { retrainLast, transformerPlan, writeModel } from "./synthetic_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    keep: { type: "boolean" },
    layers: { type: "string", default: "12" },
    hidden: { type: "string", default: "640" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`deno task demo [--keep] [--layers N] [--hidden N]

Makes a synthetic SafeTensors model (N transformer blocks of width H, float32)
and a fine-tuned version (last two tensors retrained, metadata grown), then
encodes, applies and verifies the patch, and prints the numbers.
--keep leaves the files in the temporary directory and prints its path.`);
  Deno.exit(0);
}

const layers = Number(values.layers);
const hidden = Number(values.hidden);
const dir = await Deno.makeTempDir({ prefix: "poolboy-demo-" });
try {
  const base = `${dir}/model-v1.safetensors`;
  const target = `${dir}/model-v2.safetensors`;
  const patch = `${dir}/v1-to-v2.patch`;
  const rebuilt = `${dir}/model-v2.rebuilt.safetensors`;

  const plan = transformerPlan(layers, hidden);
  console.log(`1. making a synthetic model: ${layers} blocks of width ${hidden}, float32`);
  const baseSize = await writeModel(base, plan);
  const targetSize = await writeModel(target, retrainLast(plan, 2, 42));
  console.log(`   v1 ${formatBytes(baseSize)}, v2 ${formatBytes(targetSize)}`);
  console.log(
    "   v2 = v1 with the last 2 tensors retrained and its header grown (all offsets shift)",
  );

  console.log("2. encode v1 + v2 -> patch");
  const enc = await encodeFile(base, target, patch);
  const ops = (
    [
      ["COPY", enc.copyBytes, enc.copyOps],
      ["LITERAL", enc.literalBytes, enc.literalOps],
      ["ZLITERAL", enc.zliteralBytes, enc.zliteralOps],
      ["DELTA", enc.deltaBytes, enc.deltaOps],
    ] as const
  ).filter(([, , count]) => count > 0)
    .map(([name, bytes, count]) => `${name} ${formatBytes(bytes)} (${countOf(count, "op")})`);
  console.log(
    `   patch ${formatBytes(enc.patchSize)} (format v2): ${ops.join(", ")}, ${
      (enc.elapsedMs / 1000).toFixed(2)
    } s, ${megabytesPerSecond(enc.targetSize, enc.elapsedMs).toFixed(0)} MB/s`,
  );

  console.log("3. apply patch to v1 -> rebuilt v2 (streamed, BLAKE3-verified, atomic rename)");
  const app = await applyFile(base, patch, rebuilt);
  console.log(
    `   ${formatBytes(app.targetSize)} in ${(app.elapsedMs / 1000).toFixed(2)} s, ${
      megabytesPerSecond(app.targetSize, app.elapsedMs).toFixed(0)
    } MB/s`,
  );

  console.log("4. verify");
  const [want, got] = await Promise.all([hashFile(target), hashFile(rebuilt)]);
  if (want !== got) throw new Error(`rebuilt file differs: ${got} != ${want}`);
  console.log(`   rebuilt v2 BLAKE3 ${got} = original v2`);

  const saved = 100 * (1 - enc.patchSize / targetSize);
  console.log(
    `\nshipping the patch instead of the model saves ${saved.toFixed(1)}%: ${
      formatBytes(enc.patchSize)
    } instead of ${formatBytes(targetSize)} per device.`,
  );
  if (values.keep) console.log(`files kept in ${dir}`);
} finally {
  if (!values.keep) await Deno.remove(dir, { recursive: true });
}
