/**
 * The v2 literal coder's probing (codec/literal_coder.ts `#probe`): trying
 * each candidate filter on a sample of a piece and compressing only the best
 * one or two whole writes patches within 0.5 % of compressing every candidate
 * whole, on the corpus's fine-tunes, LoRA merge and requantization.
 */

import assert from "node:assert/strict";
import { LiteralCoder } from "../codec/literal_coder.ts";
import { OpWriter } from "../codec/op_writer.ts";
import { BufferedWriter } from "../kernel/file_io.ts";
import { alignTensors, modelLayout } from "../codec/tensor_layout.ts";
import { writeScenario } from "../testkit/corpus.ts";

/** Bytes of ops the coder writes for the whole target, every 1 MiB of it an unmatched chunk. */
async function codedSize(base: string, target: string, probe: boolean, dir: string) {
  const baseFile = await Deno.open(base);
  const targetBytes = await Deno.readFile(target);
  const targetFile = await Deno.open(target);
  const out = await Deno.open(`${dir}/ops-${probe}`, { write: true, create: true, truncate: true });
  try {
    const baseSize = (await baseFile.stat()).size;
    const baseLayout = modelLayout(baseFile, baseSize);
    const targetLayout = modelLayout(targetFile, targetBytes.length);
    const chunk = 1024 * 1024;
    const coder = new LiteralCoder(baseFile, baseSize, {
      tensors: targetLayout ?? [],
      alignments: baseLayout && targetLayout ? alignTensors(baseLayout, targetLayout) : [],
      maxChunk: chunk,
      probe,
    });
    const writer = new BufferedWriter(out);
    const ops = new OpWriter(writer);
    for (let at = 0; at < targetBytes.length; at += chunk) {
      await coder.unmatched(ops, at, targetBytes.subarray(at, at + chunk));
    }
    await coder.finish(ops);
    await ops.finish();
    await writer.flush();
    coder.close();
    return writer.position;
  } finally {
    baseFile.close();
    targetFile.close();
    out.close();
  }
}

for (const scenario of ["finetune-fp32", "finetune-bf16", "lora", "requant-fp16"] as const) {
  Deno.test(`probing writes a ${scenario} patch within 0.5 % of trying every filter whole`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "poolboy-probe-" });
    try {
      const { base, target } = await writeScenario(dir, "safetensors", scenario, 6 * 1024 * 1024);
      const probed = await codedSize(base, target, true, dir);
      const full = await codedSize(base, target, false, dir);
      assert.ok(
        probed <= full * 1.005,
        `${scenario}: probed ${probed} bytes, every filter whole ${full} bytes`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
