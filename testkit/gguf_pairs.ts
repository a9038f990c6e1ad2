/**
 * Quantized GGUF pairs for tests and measurements of the record ops: a small
 * GGUF v3 writer for tensors of any GGML type, and seeded fine-tune pairs (the
 * same normal weights before and after a small nudge, each quantized with
 * ggml's reference quantizers of `ggml_quant.ts`).
 *
 * Usage (writes DIR/base.gguf and DIR/target.gguf):
 *   deno run -A testkit/gguf_pairs.ts --out DIR [--size 64MiB] [--type Q8_0|Q4_0]
 *        [--target-type Q8_0|Q4_0] [--epsilon 0.001] [--seed 1] [--last-layer]
 *
 * @module
 */

import { Prng } from "./corpus.ts";
import {
  GGML_TYPE_Q4_0 as GGML_Q4_0,
  GGML_TYPE_Q8_0 as GGML_Q8_0,
  Q4_0_BLOCK_BYTES as Q4_0_BLOCK,
  Q8_0_BLOCK_BYTES as Q8_0_BLOCK,
  QK,
  quantizeQ4_0 as quantizeQ4_0Into,
  quantizeQ8_0 as quantizeQ8_0Into,
} from "./ggml_quant.ts";

/** GGML's type number of F32. */
export const GGML_F32 = 0;

/** Q8_0 blocks of `x` (its length a multiple of 32), in a new array. */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % QK !== 0) throw new RangeError("Q8_0 needs a multiple of 32 weights");
  const out = new Uint8Array((x.length / QK) * Q8_0_BLOCK);
  quantizeQ8_0Into(x, out);
  return out;
}

/** Q4_0 blocks of `x` (its length a multiple of 32), in a new array. */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % QK !== 0) throw new RangeError("Q4_0 needs a multiple of 32 weights");
  const out = new Uint8Array((x.length / QK) * Q4_0_BLOCK);
  quantizeQ4_0Into(x, out);
  return out;
}

/** A tensor to write: its GGML type, dims (innermost first) and stored bytes. */
export interface GgufTensor {
  readonly name: string;
  readonly type: number;
  readonly dims: readonly number[];
  readonly data: Uint8Array;
}

/** GGUF's default alignment (of the data section and of each tensor). */
const ALIGNMENT = 32;

/** A GGUF v3 file: one KV (general.architecture), the tensor infos, the tensors each padded to 32. */
export function ggufBytes(tensors: readonly GgufTensor[]): Uint8Array {
  const utf8 = new TextEncoder();
  const head: number[] = [];
  const u32 = (n: number) => head.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
  const u64 = (n: number) => {
    u32(n % 2 ** 32);
    u32(Math.floor(n / 2 ** 32));
  };
  const str = (s: string) => {
    const b = utf8.encode(s);
    u64(b.length);
    head.push(...b);
  };
  head.push(...utf8.encode("GGUF"));
  u32(3);
  u64(tensors.length);
  u64(1);
  str("general.architecture");
  u32(8); // string
  str("llama");
  let offset = 0;
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(t.type);
    u64(offset);
    offset += Math.ceil(t.data.length / ALIGNMENT) * ALIGNMENT;
  }
  const dataStart = Math.ceil(head.length / ALIGNMENT) * ALIGNMENT;
  const out = new Uint8Array(dataStart + offset);
  out.set(head);
  let at = dataStart;
  for (const t of tensors) {
    out.set(t.data, at);
    at += Math.ceil(t.data.length / ALIGNMENT) * ALIGNMENT;
  }
  return out;
}

/** The quantized types a pair can be made of. */
export type QuantType = "Q8_0" | "Q4_0";

/** Options of `quantFinetunePair`. */
export interface QuantPairOptions {
  /** Approximate file size in bytes. */
  readonly size: number;
  readonly type: QuantType;
  readonly seed?: number;
  /** The fine-tune's nudge, relative to each row's scale (default 1e-3). */
  readonly epsilon?: number;
  /** Only the last tensor is retrained (new values) instead of all nudged. */
  readonly lastLayerOnly?: boolean;
  /** The target's type, if not `type`: a requantization (epsilon then defaults to 0). */
  readonly targetType?: QuantType;
}

/** Weights per row of the generated matrices. */
export const ROW = 1024;

/**
 * A base model and its fine-tune, quantized to `type` (the fine-tune to
 * `targetType` if given): matrices of
 * `ROW`-weight rows of normal weights with per-row scales, each with a small
 * F32 norm vector; the fine-tune adds `epsilon` × row scale × a normal to
 * every weight (or, `lastLayerOnly`, draws the last matrix anew).
 */
export function quantFinetunePair(
  options: QuantPairOptions,
): { base: Uint8Array; target: Uint8Array } {
  const { size, type } = options;
  const targetType = options.targetType ?? type;
  const epsilon = options.epsilon ?? (targetType === type ? 1e-3 : 0);
  const prng = new Prng(options.seed ?? 1);
  const quantizer = (t: QuantType) => t === "Q8_0" ? quantizeQ8_0 : quantizeQ4_0;
  const quantize = quantizer(type);
  const quantizeTarget = quantizer(targetType);
  const ggmlType = type === "Q8_0" ? GGML_Q8_0 : GGML_Q4_0;
  const ggmlTargetType = targetType === "Q8_0" ? GGML_Q8_0 : GGML_Q4_0;
  const blockBytes = type === "Q8_0" ? Q8_0_BLOCK : Q4_0_BLOCK;
  const rowBytes = (ROW / QK) * blockBytes;
  const rowsTotal = Math.max(2, Math.floor(size / rowBytes));
  const matrices = Math.max(1, Math.min(16, Math.floor(rowsTotal / 64)));
  const base: GgufTensor[] = [];
  const target: GgufTensor[] = [];
  for (let m = 0; m < matrices; m++) {
    const rows = Math.floor(rowsTotal / matrices);
    const w = new Float32Array(rows * ROW);
    const tuned = new Float32Array(rows * ROW);
    const retrain = options.lastLayerOnly === true && m === matrices - 1;
    for (let r = 0; r < rows; r++) {
      const scale = 0.02 * (0.5 + prng.uniform());
      for (let c = 0; c < ROW; c++) {
        const v = scale * prng.normal();
        w[r * ROW + c] = v;
        tuned[r * ROW + c] = retrain
          ? scale * prng.normal()
          : options.lastLayerOnly
          ? v
          : v + epsilon * scale * prng.normal();
      }
    }
    const norm = new Float32Array(ROW).map(() => 1 + 0.1 * prng.normal());
    const normBytes = new Uint8Array(norm.buffer);
    const name = `blk.${m}`;
    base.push({ name: `${name}.attn_norm.weight`, type: GGML_F32, dims: [ROW], data: normBytes });
    target.push({ name: `${name}.attn_norm.weight`, type: GGML_F32, dims: [ROW], data: normBytes });
    base.push({ name: `${name}.ffn.weight`, type: ggmlType, dims: [ROW, rows], data: quantize(w) });
    target.push({
      name: `${name}.ffn.weight`,
      type: ggmlTargetType,
      dims: [ROW, rows],
      data: quantizeTarget(tuned),
    });
  }
  return { base: ggufBytes(base), target: ggufBytes(target) };
}

function parseSize(text: string): number {
  const m = /^(\d+)(KiB|MiB|GiB)?$/.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  return Number(m[1]) * (m[2] === "GiB" ? 2 ** 30 : m[2] === "MiB" ? 2 ** 20 : m[2] ? 1024 : 1);
}

if (import.meta.main) {
  const args = Deno.args;
  const get = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const out = get("--out");
  if (out === undefined) {
    console.error(
      "usage: ggml_quant.ts --out DIR [--size 64MiB] [--type Q8_0|Q4_0] [--target-type Q8_0|Q4_0] [--epsilon 0.001] [--seed 1] [--last-layer]",
    );
    Deno.exit(2);
  }
  const type = (get("--type") ?? "Q8_0") as QuantType;
  if (type !== "Q8_0" && type !== "Q4_0") throw new Error(`bad type ${type}`);
  const targetType = (get("--target-type") ?? type) as QuantType;
  if (targetType !== "Q8_0" && targetType !== "Q4_0") throw new Error(`bad type ${targetType}`);
  const epsilon = get("--epsilon");
  const pair = quantFinetunePair({
    size: parseSize(get("--size") ?? "64MiB"),
    type,
    targetType,
    seed: Number(get("--seed") ?? 1),
    ...(epsilon !== undefined && { epsilon: Number(epsilon) }),
    lastLayerOnly: args.includes("--last-layer"),
  });
  await Deno.mkdir(out, { recursive: true });
  await Deno.writeFile(`${out}/base.gguf`, pair.base);
  await Deno.writeFile(`${out}/target.gguf`, pair.target);
  console.log(`${out}/base.gguf ${pair.base.length} B, ${out}/target.gguf ${pair.target.length} B`);
}
