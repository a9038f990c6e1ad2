/**
 * A corpus of model files shaped like real ones, and of their updates, for
 * judging patch sizes on data that looks like what poolboy ships: a
 * transformer's tensors (embedding; per layer two norms, q/k/v/o attention
 * matrices hidden × hidden, MLP up/down hidden × 4·hidden; a final norm) in
 * SafeTensors, GGUF v3 or ONNX, with roughly normal values (Box-Muller on a
 * seeded xoshiro128**, per-layer and per-row scales) stored as F32, BF16 or F16.
 *
 * Each scenario is a base file and a target file of the same container:
 *
 * - `last-layer`: the last layer's tensors retrained (new values), BF16;
 * - `finetune-fp32`: every weight × (1 + ε·n), ε = 1e-3, n ~ N(0, 1), F32;
 * - `finetune-bf16`: the same in BF16 (most values then round to the same BF16);
 * - `lora`: a rank-8 update W += A·B merged into every layer's q and v, BF16;
 * - `insert-tensor`: a new tensor (an MLP gate, 4·hidden × hidden) inserted
 *   mid-file, so every later offset shifts, BF16;
 * - `front-bytes`: a description added to the header / metadata at the front
 *   (SafeTensors `__metadata__`, a GGUF KV, the ONNX model's doc_string), BF16;
 * - `rollback`: `finetune-fp32` swapped (the target is the base);
 * - `requant-fp16`: F32 weights, then the same weights as F16.
 *
 * `EXTRA_SCENARIOS`, which only some containers have (`scenarioFormats`):
 *
 * - `q8-finetune`, `q4-finetune`, `q8-last-layer`, `q4-last-layer`, `q8-lora`,
 *   `q4-lora` (GGUF): the change of `finetune-fp32`, `last-layer` or `lora` on
 *   float32 weights, both files then quantized to ggml's Q8_0 or Q4_0 blocks
 *   with the reference quantizers (testkit/ggml_quant.ts); norms stay F32;
 * - `requant-q8-q4` (GGUF): the same weights as Q8_0, then as Q4_0;
 * - `reorder`: the same BF16 tensors, the target's sorted by name (as
 *   Hugging Face's safetensors writer orders them);
 * - `realign` (GGUF): the same BF16 tensors, general.alignment 32 → 4096, so
 *   every tensor after an odd-sized one moves;
 * - `recontainer`: the same BF16 tensors, the base written by another
 *   container's writer (`scenarioContainers`: GGUF's base is SafeTensors, as
 *   llama.cpp's converter reads it; SafeTensors' base ONNX; ONNX's SafeTensors).
 *
 * Every byte is a function of (container, scenario, size, seed): the same call
 * writes the same files on any machine. Files are streamed in pieces of at most
 * 1 MiB of values (memory stays at a few MiB whatever the size), so sizes of
 * several GiB work. `size` is the base's approximate size; the shape (hidden,
 * layers, vocabulary) is chosen to fill it.
 *
 * Containers, as their real writers lay them out:
 *
 * - SafeTensors: u64 LE header length N (a multiple of 8: the JSON is padded
 *   with spaces), N bytes of JSON `{"__metadata__": {...}, name: {dtype, shape,
 *   data_offsets}}` in file order, then the tensors back to back.
 * - GGUF v3: "GGUF", u32 version 3, u64 tensor count, u64 KV count, the KVs
 *   (general.architecture, llama.* sizes, general.alignment = 32, a
 *   tokenizer.ggml.tokens string array, ...), the tensor infos (name, n_dims,
 *   dims innermost first, type 0 = F32 / 1 = F16 / 30 = BF16 / 8 = Q8_0 /
 *   2 = Q4_0, offset), zero padding to 32, then each tensor padded to 32. As
 *   llama.cpp does, 1-D tensors (norms) stay F32.
 * - ONNX: a protobuf ModelProto (ir_version 8, producer, optional doc_string,
 *   a GraphProto of MatMul/Mul/Gather nodes, TensorProto initializers with
 *   dims, data_type 1 = FLOAT / 10 = FLOAT16 / 16 = BFLOAT16, name, raw_data,
 *   graph input and output, then opset_import), fields in field-number order.
 *   The weights stay inline at any size (real exporters move them to external
 *   data above protobuf's 2 GiB limit, and readers may refuse larger files).
 *
 * Usage: deno run -A testkit/corpus.ts --out DIR [--size 64MiB]
 *        [--format safetensors|gguf|onnx|all] [--scenarios a,b,...] [--seed 1]
 * (every scenario of every container given by default).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatBytes, parseSize } from "../kernel/units.ts";
import {
  f16FromF32Bits,
  float32Bits,
  GGML_TYPE_Q4_0,
  GGML_TYPE_Q8_0,
  Q4_0_BLOCK_BYTES,
  Q8_0_BLOCK_BYTES,
  QK,
  quantizeQ4_0,
  quantizeQ8_0,
} from "./ggml_quant.ts";

export { f16FromF32Bits, float32Bits };

// ---------------------------------------------------------------------------
// Names

/** The scenarios every container has, in the order the CLI and the benchmark run them. */
export const SCENARIOS = [
  "last-layer",
  "finetune-fp32",
  "finetune-bf16",
  "lora",
  "insert-tensor",
  "front-bytes",
  "rollback",
  "requant-fp16",
] as const;

/**
 * Scenarios only some containers have (see `scenarioFormats`): quantized GGUF
 * updates, and re-exports of the same weights (another order, alignment or
 * container).
 */
export const EXTRA_SCENARIOS = [
  "q8-finetune",
  "q4-finetune",
  "q8-last-layer",
  "q4-last-layer",
  "q8-lora",
  "q4-lora",
  "requant-q8-q4",
  "reorder",
  "realign",
  "recontainer",
] as const;

/** Every scenario: `SCENARIOS`, then `EXTRA_SCENARIOS`. */
export const ALL_SCENARIOS = [...SCENARIOS, ...EXTRA_SCENARIOS] as const;

/** One scenario: how the target differs from the base. */
export type Scenario = typeof ALL_SCENARIOS[number];

/** The containers. */
export const FORMATS = ["safetensors", "gguf", "onnx"] as const;

/** One container format. */
export type ContainerFormat = typeof FORMATS[number];

/**
 * Element types: IEEE float32, bfloat16 (float32's top 16 bits, rounded), IEEE
 * float16, and ggml's Q8_0 and Q4_0 blocks of 32 weights (GGUF only; see
 * ggml_quant.ts).
 */
export type DType = "F32" | "BF16" | "F16" | "Q8_0" | "Q4_0";

/** Bytes per element of each dtype (a fraction for the quantized blocks: 34/32 and 18/32). */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F32: 4,
  BF16: 2,
  F16: 2,
  Q8_0: Q8_0_BLOCK_BYTES / QK,
  Q4_0: Q4_0_BLOCK_BYTES / QK,
};

/** The float dtypes (every container stores them). */
export type FloatDType = Exclude<DType, "Q8_0" | "Q4_0">;

/** Whether a dtype is one of ggml's quantized block types. */
export function isQuantized(dtype: DType): dtype is "Q8_0" | "Q4_0" {
  return dtype === "Q8_0" || dtype === "Q4_0";
}

/** The GGUF alignment of the `realign` scenario's target (the base has `GGUF_ALIGNMENT`). */
export const REALIGN_ALIGNMENT = 4096;

/** Relative size ε of the fine-tuning noise of `finetune-*` (and so of `rollback`). */
export const FINETUNE_EPSILON = 1e-3;

/** Rank of the `lora` update. */
export const LORA_RANK = 8;

/** Standard deviation of the merged LoRA update, relative to the matrix's own. */
export const LORA_RELATIVE_SCALE = 0.02;

/** The description the `front-bytes` target adds at the front. */
export const FRONT_DESCRIPTION = "fine-tuned on 2024-06 data";

// ---------------------------------------------------------------------------
// Random numbers

/** 32-bit FNV-1a of a string: seeds tensors by name, so inserting one moves no other's values. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Mixes two 32-bit values into a seed (a murmur3 finaliser of their combination). */
export function mixSeed(a: number, b: number): number {
  let h = (Math.imul(a >>> 0, 0x9e3779b1) ^ (b >>> 0)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * xoshiro128** seeded through splitmix32: uniform 32-bit words, uniforms in
 * [0, 1) and standard normals (Box-Muller, both values of each pair used).
 */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  #spare: number | undefined;

  /** A generator whose whole stream is a function of `seed`. */
  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next() || 1;
  }

  /** The next uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.#b, 5), 7), 9) >>> 0;
    const t = this.#b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return result;
  }

  /** The next uniform number in [0, 1). */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** The next standard normal number. */
  normal(): number {
    const spare = this.#spare;
    if (spare !== undefined) {
      this.#spare = undefined;
      return spare;
    }
    const u1 = (this.nextU32() + 1) / 4294967296; // (0, 1]: log is finite
    const u2 = this.nextU32() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1));
    const angle = 2 * Math.PI * u2;
    this.#spare = r * Math.sin(angle);
    return r * Math.cos(angle);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---------------------------------------------------------------------------
// Float conversions

/** bfloat16 bits of float32 bits: the top 16 bits, rounded to nearest even (NaN stays NaN). */
export function bf16FromF32Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

// ---------------------------------------------------------------------------
// Models

/** A transformer's sizes. */
export interface ModelShape {
  readonly hidden: number;
  readonly layers: number;
  readonly vocab: number;
}

/** A change applied to a tensor's generated values, element by element. */
export type Edit =
  /** w ← w · (1 + epsilon · n), n ~ N(0, 1) from `seed`. */
  | { readonly kind: "noise"; readonly seed: number; readonly epsilon: number }
  /** W ← W + A·B, A: rows × rank ~ N(0, 1), B: rank × cols ~ N(0, scale² / rank), from `seed`. */
  | { readonly kind: "lora"; readonly seed: number; readonly rank: number; readonly scale: number };

/** One tensor: name, shape (PyTorch order, outermost first), dtype, and how its values come. */
export interface TensorPlan {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Seed of the values. */
  readonly seed: number;
  /** Standard deviation of the values (before the per-row factor of 2-D tensors). */
  readonly scale: number;
  /** Mean of the values: 1 for norms, 0 for matrices. */
  readonly mean: number;
  /** Changes applied after generation, in order. */
  readonly edits: readonly Edit[];
}

/** A model file's content, independent of its container. */
export interface ModelPlan {
  readonly shape: ModelShape;
  /** String metadata (SafeTensors `__metadata__`). */
  readonly metadata: Readonly<Record<string, string>>;
  /** A description, written at the front where the container has room (front-bytes). */
  readonly description?: string;
  /** GGUF's alignment of the data and of each tensor (default `GGUF_ALIGNMENT`). */
  readonly alignment?: number;
  readonly tensors: readonly TensorPlan[];
}

/** Elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes of a tensor's data. */
export function tensorBytes(t: { shape: readonly number[]; dtype: DType }): number {
  return numel(t.shape) * DTYPE_BYTES[t.dtype];
}

const HIDDEN_SIZES = [
  8192,
  6144,
  5120,
  4096,
  3072,
  2560,
  2048,
  1536,
  1024,
  768,
  512,
  384,
  256,
  192,
  128,
  96,
  64,
  48,
  32,
  16,
];

/**
 * The widest transformer (hidden from a list of real widths) with at least 4
 * layers taking ~85% of `size` bytes of `bytesPerElement` elements; the
 * embedding's vocabulary takes the rest.
 */
export function modelShape(size: number, bytesPerElement: number): ModelShape {
  const params = Math.floor(size / bytesPerElement);
  for (const hidden of HIDDEN_SIZES) {
    const perLayer = 12 * hidden * hidden + 2 * hidden;
    const layers = Math.floor((0.85 * params) / perLayer);
    if (layers >= 4 || hidden === HIDDEN_SIZES[HIDDEN_SIZES.length - 1]) {
      const n = Math.max(1, layers);
      const vocab = Math.max(16, Math.floor((params - n * perLayer - hidden) / hidden));
      return { hidden, layers: n, vocab };
    }
  }
  throw new Error("unreachable");
}

/** Names of a layer's tensors, in file order (Hugging Face Llama names). */
function layerTensors(l: number, hidden: number): { name: string; shape: number[] }[] {
  const p = `model.layers.${l}`;
  return [
    { name: `${p}.input_layernorm.weight`, shape: [hidden] },
    { name: `${p}.self_attn.q_proj.weight`, shape: [hidden, hidden] },
    { name: `${p}.self_attn.k_proj.weight`, shape: [hidden, hidden] },
    { name: `${p}.self_attn.v_proj.weight`, shape: [hidden, hidden] },
    { name: `${p}.self_attn.o_proj.weight`, shape: [hidden, hidden] },
    { name: `${p}.post_attention_layernorm.weight`, shape: [hidden] },
    { name: `${p}.mlp.up_proj.weight`, shape: [4 * hidden, hidden] },
    { name: `${p}.mlp.down_proj.weight`, shape: [hidden, 4 * hidden] },
  ];
}

/** A tensor's plan: seeded by (model seed, name), scaled by layer and role. */
function tensor(
  name: string,
  shape: readonly number[],
  dtype: DType,
  seed: number,
  layer: number,
  layers: number,
): TensorPlan {
  const tensorSeed = mixSeed(seed, fnv1a(name));
  if (shape.length === 1) {
    return { name, shape, dtype, seed: tensorSeed, scale: 0.05, mean: 1, edits: [] };
  }
  // Per-layer scale between 0.6 and 1.4 of 0.02 (a golden-ratio walk, no two layers alike);
  // output projections are scaled down by sqrt(2 · layers), as GPT-2 initialises them.
  const walk = (layer * 0.6180339887) % 1;
  let scale = 0.02 * (0.6 + 0.8 * walk);
  if (/o_proj|down_proj/.test(name)) scale /= Math.sqrt(2 * layers);
  return { name, shape, dtype, seed: tensorSeed, scale, mean: 0, edits: [] };
}

/** The plan of a base model of `shape` in `dtype`. */
export function basePlan(shape: ModelShape, dtype: DType, seed: number): ModelPlan {
  const { hidden, layers, vocab } = shape;
  const tensors: TensorPlan[] = [
    tensor("model.embed_tokens.weight", [vocab, hidden], dtype, seed, 0, layers),
  ];
  for (let l = 0; l < layers; l++) {
    for (const t of layerTensors(l, hidden)) {
      tensors.push(tensor(t.name, t.shape, dtype, seed, l, layers));
    }
  }
  tensors.push(tensor("model.norm.weight", [hidden], dtype, seed, layers, layers));
  return { shape, metadata: { format: "pt" }, tensors };
}

/** The tensor `insert-tensor` adds, and the index it is inserted at in `plan`. */
export function insertedTensor(
  plan: ModelPlan,
  seed: number,
): { index: number; tensor: TensorPlan } {
  const { hidden, layers } = plan.shape;
  const mid = Math.floor(layers / 2);
  const after = `model.layers.${mid}.post_attention_layernorm.weight`;
  const index = plan.tensors.findIndex((t) => t.name === after) + 1;
  const dtype = plan.tensors[index].dtype;
  const name = `model.layers.${mid}.mlp.gate_proj.weight`;
  return { index, tensor: tensor(name, [4 * hidden, hidden], dtype, seed, mid, layers) };
}

/** Whether a tensor belongs to the last layer of a `layers`-layer model. */
export function inLastLayer(name: string, layers: number): boolean {
  return name.startsWith(`model.layers.${layers - 1}.`);
}

/** The base and target plans of a scenario, the base about `size` bytes. */
export function scenarioPlans(
  scenario: Scenario,
  size: number,
  seed: number,
): { base: ModelPlan; target: ModelPlan } {
  const withDtype = (plan: ModelPlan, dtype: DType): ModelPlan => ({
    ...plan,
    tensors: plan.tensors.map((t) => ({ ...t, dtype })),
  });
  const finetuned = (plan: ModelPlan): ModelPlan => ({
    ...plan,
    tensors: plan.tensors.map((t) => ({
      ...t,
      edits: [...t.edits, {
        kind: "noise" as const,
        seed: mixSeed(t.seed, 0xf1e7),
        epsilon: FINETUNE_EPSILON,
      }],
    })),
  });
  const lastLayerRetrained = (plan: ModelPlan): ModelPlan => ({
    ...plan,
    tensors: plan.tensors.map((t) =>
      inLastLayer(t.name, plan.shape.layers) ? { ...t, seed: mixSeed(t.seed, 0x1a57) } : t
    ),
  });
  const loraMerged = (plan: ModelPlan): ModelPlan => ({
    ...plan,
    tensors: plan.tensors.map((t) =>
      /self_attn\.[qv]_proj/.test(t.name)
        ? {
          ...t,
          edits: [...t.edits, {
            kind: "lora" as const,
            seed: mixSeed(t.seed, 0x10fa),
            rank: LORA_RANK,
            scale: LORA_RELATIVE_SCALE * t.scale,
          }],
        }
        : t
    ),
  });
  /** The Q8_0 or Q4_0 base of a `q8-*` / `q4-*` scenario (its 2-D weights quantized). */
  const quantizedBase = (name: string): ModelPlan => {
    const dtype = name.startsWith("q8-") ? "Q8_0" : "Q4_0";
    return basePlan(modelShape(size, DTYPE_BYTES[dtype]), dtype, seed);
  };
  const bf16 = basePlan(modelShape(size, 2), "BF16", seed);
  switch (scenario) {
    case "last-layer":
      return { base: bf16, target: lastLayerRetrained(bf16) };
    case "finetune-fp32": {
      const base = basePlan(modelShape(size, 4), "F32", seed);
      return { base, target: finetuned(base) };
    }
    case "finetune-bf16":
      return { base: bf16, target: finetuned(bf16) };
    case "lora":
      return { base: bf16, target: loraMerged(bf16) };
    case "insert-tensor": {
      const { index, tensor } = insertedTensor(bf16, seed);
      const tensors = [...bf16.tensors];
      tensors.splice(index, 0, tensor);
      return { base: bf16, target: { ...bf16, tensors } };
    }
    case "front-bytes":
      return {
        base: bf16,
        target: {
          ...bf16,
          metadata: { ...bf16.metadata, description: FRONT_DESCRIPTION },
          description: FRONT_DESCRIPTION,
        },
      };
    case "rollback": {
      const { base, target } = scenarioPlans("finetune-fp32", size, seed);
      return { base: target, target: base };
    }
    case "requant-fp16": {
      const base = basePlan(modelShape(size, 4), "F32", seed);
      return { base, target: withDtype(base, "F16") };
    }
    case "q8-finetune":
    case "q4-finetune": {
      const base = quantizedBase(scenario);
      return { base, target: finetuned(base) };
    }
    case "q8-last-layer":
    case "q4-last-layer": {
      const base = quantizedBase(scenario);
      return { base, target: lastLayerRetrained(base) };
    }
    case "q8-lora":
    case "q4-lora": {
      const base = quantizedBase(scenario);
      return { base, target: loraMerged(base) };
    }
    case "requant-q8-q4": {
      const base = basePlan(modelShape(size, DTYPE_BYTES.Q8_0), "Q8_0", seed);
      return { base, target: withDtype(base, "Q4_0") };
    }
    case "reorder":
      return {
        base: bf16,
        target: {
          ...bf16,
          tensors: [...bf16.tensors].sort((a, b) => compareNames(a.name, b.name)),
        },
      };
    case "realign":
      return { base: bf16, target: { ...bf16, alignment: REALIGN_ALIGNMENT } };
    case "recontainer":
      return { base: bf16, target: bf16 };
  }
}

/** Code-unit order of two names (as `sort()` would order them, without locale). */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The containers a scenario is written in. Every scenario of `SCENARIOS`, and
 * `reorder` and `recontainer`, has all three; the quantized ones and `realign`
 * (GGUF's general.alignment) only GGUF.
 */
export function scenarioFormats(scenario: Scenario): readonly ContainerFormat[] {
  if (/^q[48]-|^requant-q8|^realign$/.test(scenario)) return ["gguf"];
  return FORMATS;
}

/** Whether `scenario` is written in `format` (see `scenarioFormats`). */
export function hasScenario(format: ContainerFormat, scenario: Scenario): boolean {
  return scenarioFormats(scenario).includes(format);
}

/**
 * The containers of the base and target of `format`'s `scenario`: both
 * `format`, except `recontainer`, whose base is the same weights in another
 * container (GGUF's from SafeTensors, as llama.cpp's converter makes it;
 * SafeTensors' from ONNX; ONNX's from SafeTensors, as an exporter would).
 */
export function scenarioContainers(
  format: ContainerFormat,
  scenario: Scenario,
): { base: ContainerFormat; target: ContainerFormat } {
  if (!hasScenario(format, scenario)) {
    throw new Error(
      `scenario "${scenario}" has no ${format} files (only ${
        scenarioFormats(scenario).join(", ")
      })`,
    );
  }
  if (scenario !== "recontainer") return { base: format, target: format };
  const from: Record<ContainerFormat, ContainerFormat> = {
    gguf: "safetensors",
    safetensors: "onnx",
    onnx: "safetensors",
  };
  return { base: from[format], target: format };
}

// ---------------------------------------------------------------------------
// Values

/** Elements generated per piece: 1 MiB of float32. */
const PIECE_ELEMENTS = 1 << 18;

/** A tensor's values, generated in order, piece by piece. */
export class TensorValues {
  readonly #t: TensorPlan;
  readonly #cols: number;
  readonly #values: Prng;
  readonly #rows: Prng;
  readonly #noise: { prng: Prng; epsilon: number }[] = [];
  readonly #lora: { a: Float64Array; b: Float64Array; rank: number }[] = [];
  #index = 0;
  #rowFactor = 1;

  /** A generator of `t`'s values from the first. */
  constructor(t: TensorPlan) {
    this.#t = t;
    this.#cols = t.shape[t.shape.length - 1] ?? 1;
    this.#values = new Prng(t.seed);
    this.#rows = new Prng(mixSeed(t.seed, 0x0e0e));
    const rows = numel(t.shape) / this.#cols;
    for (const edit of t.edits) {
      if (edit.kind === "noise") {
        this.#noise.push({ prng: new Prng(edit.seed), epsilon: edit.epsilon });
      } else {
        const prng = new Prng(edit.seed);
        const a = new Float64Array(rows * edit.rank);
        const b = new Float64Array(edit.rank * this.#cols);
        for (let i = 0; i < a.length; i++) a[i] = prng.normal();
        const bScale = edit.scale / Math.sqrt(edit.rank);
        for (let i = 0; i < b.length; i++) b[i] = bScale * prng.normal();
        this.#lora.push({ a, b, rank: edit.rank });
      }
    }
  }

  /** Fills `out` with the next `out.length` values (rounded to float32). */
  fill(out: Float32Array): void {
    const { scale, mean } = this.#t;
    const twoD = this.#t.shape.length >= 2;
    const cols = this.#cols;
    for (let i = 0; i < out.length; i++) {
      const index = this.#index++;
      const col = index % cols;
      // Rows of a matrix differ in scale (log-normal factor), as trained weights do.
      if (twoD && col === 0) this.#rowFactor = Math.exp(0.25 * this.#rows.normal());
      let v = mean + scale * this.#rowFactor * this.#values.normal();
      for (const n of this.#noise) v *= 1 + n.epsilon * n.prng.normal();
      for (const { a, b, rank } of this.#lora) {
        const row = (index - col) / cols;
        let delta = 0;
        for (let k = 0; k < rank; k++) delta += a[row * rank + k] * b[k * cols + col];
        v += delta;
      }
      out[i] = v;
    }
  }
}

/**
 * Encodes float32 values as `dtype` little-endian bytes into `out` (Q8_0 / Q4_0:
 * ggml's reference quantizers, `values` a multiple of 32); returns the bytes written.
 */
export function encodeValues(values: Float32Array, dtype: DType, out: Uint8Array): number {
  if (dtype === "Q8_0") return quantizeQ8_0(values, out);
  if (dtype === "Q4_0") return quantizeQ4_0(values, out);
  if (dtype === "F32") {
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return values.byteLength;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const halves = new Uint16Array(out.buffer, out.byteOffset, values.length);
  if (dtype === "BF16") {
    for (let i = 0; i < bits.length; i++) {
      halves[i] = bf16FromF32Bits(bits[i]);
    }
  } else for (let i = 0; i < bits.length; i++) halves[i] = f16FromF32Bits(bits[i]);
  return 2 * values.length;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("corpus: a little-endian machine is needed");
}

// ---------------------------------------------------------------------------
// Containers

/** Part of a file: fixed bytes, or a tensor's data (streamed when written). */
export type Piece = Uint8Array | { readonly tensor: TensorPlan; readonly dtype: DType };

/** Bytes of a piece. */
export function pieceSize(p: Piece): number {
  return p instanceof Uint8Array ? p.length : numel(p.tensor.shape) * DTYPE_BYTES[p.dtype];
}

function piecesSize(pieces: readonly Piece[]): number {
  return pieces.reduce((sum, p) => sum + pieceSize(p), 0);
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Adjacent fixed pieces joined into one. */
function merged(pieces: readonly Piece[]): Piece[] {
  const out: Piece[] = [];
  let run: Uint8Array[] = [];
  for (const p of pieces) {
    if (p instanceof Uint8Array) {
      run.push(p);
    } else {
      if (run.length > 0) out.push(concatBytes(run));
      run = [];
      out.push(p);
    }
  }
  if (run.length > 0) out.push(concatBytes(run));
  return out;
}

const utf8 = new TextEncoder();

/** Refuses a plan with quantized tensors: only GGUF stores ggml's blocks. */
function refuseQuantized(plan: ModelPlan, format: ContainerFormat): void {
  const t = plan.tensors.find((t) => isQuantized(t.dtype));
  if (t !== undefined) throw new Error(`${format} cannot store ${t.dtype} (${t.name}); only gguf`);
}

/** SafeTensors: u64 LE header length, JSON header padded with spaces to a multiple of 8, data. */
function safeTensorsPieces(plan: ModelPlan): Piece[] {
  refuseQuantized(plan, "safetensors");
  const header: Record<string, unknown> = { __metadata__: plan.metadata };
  let offset = 0;
  for (const t of plan.tensors) {
    const bytes = tensorBytes(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (utf8.encode(json).length % 8)) % 8);
  const body = utf8.encode(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(body.length), true);
  return [prefix, body, ...plan.tensors.map((t) => ({ tensor: t, dtype: t.dtype }))];
}

/** Little-endian binary builder for GGUF headers. */
class ByteBuilder {
  readonly #parts: Uint8Array[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  bytes(b: Uint8Array): this {
    this.#parts.push(b);
    this.#size += b.length;
    return this;
  }

  u32(n: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    return this.bytes(b);
  }

  u64(n: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
    return this.bytes(b);
  }

  /** A GGUF string: u64 length, UTF-8 bytes. */
  str(s: string): this {
    const b = utf8.encode(s);
    return this.u64(b.length).bytes(b);
  }

  build(): Uint8Array {
    return concatBytes(this.#parts);
  }
}

/** GGUF's alignment of the tensor data and of each tensor. */
export const GGUF_ALIGNMENT = 32;

/** GGUF metadata value types used here. */
const GGUF_UINT32 = 4;
const GGUF_STRING = 8;
const GGUF_ARRAY = 9;

/** ggml tensor types. */
export const GGML_TYPE: Readonly<Record<DType, number>> = {
  F32: 0,
  F16: 1,
  BF16: 30,
  Q8_0: GGML_TYPE_Q8_0,
  Q4_0: GGML_TYPE_Q4_0,
};

/** llama.cpp's name of a Hugging Face tensor name. */
export function ggufName(name: string): string {
  const table: [RegExp, string][] = [
    [/^model\.embed_tokens\.weight$/, "token_embd.weight"],
    [/^model\.norm\.weight$/, "output_norm.weight"],
    [/^model\.layers\.(\d+)\.input_layernorm\.weight$/, "blk.$1.attn_norm.weight"],
    [/^model\.layers\.(\d+)\.self_attn\.q_proj\.weight$/, "blk.$1.attn_q.weight"],
    [/^model\.layers\.(\d+)\.self_attn\.k_proj\.weight$/, "blk.$1.attn_k.weight"],
    [/^model\.layers\.(\d+)\.self_attn\.v_proj\.weight$/, "blk.$1.attn_v.weight"],
    [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, "blk.$1.attn_output.weight"],
    [/^model\.layers\.(\d+)\.post_attention_layernorm\.weight$/, "blk.$1.ffn_norm.weight"],
    [/^model\.layers\.(\d+)\.mlp\.up_proj\.weight$/, "blk.$1.ffn_up.weight"],
    [/^model\.layers\.(\d+)\.mlp\.down_proj\.weight$/, "blk.$1.ffn_down.weight"],
    [/^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$/, "blk.$1.ffn_gate.weight"],
  ];
  for (const [pattern, replacement] of table) {
    if (pattern.test(name)) return name.replace(pattern, replacement);
  }
  return name;
}

/**
 * The dtype GGUF stores a tensor in: 1-D tensors (norms) stay F32, as
 * llama.cpp writes them; a quantized tensor whose rows are not whole blocks of
 * 32 falls back to F16 (as llama.cpp falls back to another type).
 */
export function ggufDtype(t: TensorPlan): DType {
  if (t.shape.length === 1) return "F32";
  if (isQuantized(t.dtype) && t.shape[t.shape.length - 1] % QK !== 0) return "F16";
  return t.dtype;
}

function pad(n: number, alignment: number): Uint8Array {
  return new Uint8Array((alignment - (n % alignment)) % alignment);
}

/** GGUF v3: header, KVs, tensor infos, padding, tensors each padded to the alignment (32). */
function ggufPieces(plan: ModelPlan): Piece[] {
  const { hidden, layers, vocab } = plan.shape;
  const dtype = plan.tensors.find((t) => t.shape.length === 2)?.dtype ?? "F32";
  // llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16, MOSTLY_Q8_0, MOSTLY_Q4_0.
  const fileType = { F32: 0, F16: 1, BF16: 32, Q8_0: 7, Q4_0: 2 }[dtype];
  const alignment = plan.alignment ?? GGUF_ALIGNMENT;
  const kvs = new ByteBuilder();
  let kvCount = 0;
  const kvString = (key: string, value: string) => {
    kvs.str(key).u32(GGUF_STRING).str(value);
    kvCount++;
  };
  const kvU32 = (key: string, value: number) => {
    kvs.str(key).u32(GGUF_UINT32).u32(value);
    kvCount++;
  };
  kvString("general.architecture", "llama");
  kvString("general.name", "poolboy-corpus");
  if (plan.description !== undefined) kvString("general.description", plan.description);
  kvU32("general.file_type", fileType);
  kvU32("general.alignment", alignment);
  kvU32("llama.block_count", layers);
  kvU32("llama.context_length", 4096);
  kvU32("llama.embedding_length", hidden);
  kvU32("llama.feed_forward_length", 4 * hidden);
  kvU32("llama.attention.head_count", Math.max(1, hidden / 64));
  kvs.str("tokenizer.ggml.tokens").u32(GGUF_ARRAY).u32(GGUF_STRING).u64(vocab);
  for (let i = 0; i < vocab; i++) kvs.str(i < 3 ? ["<unk>", "<s>", "</s>"][i] : `tok${i}`);
  kvCount++;

  const infos = new ByteBuilder();
  const data: Piece[] = [];
  let offset = 0;
  for (const t of plan.tensors) {
    const type = ggufDtype(t);
    infos.str(ggufName(t.name)).u32(t.shape.length);
    for (const d of [...t.shape].reverse()) infos.u64(d); // ne[0] is the innermost dimension
    infos.u32(GGML_TYPE[type]).u64(offset);
    const bytes = numel(t.shape) * DTYPE_BYTES[type];
    data.push({ tensor: t, dtype: type }, pad(bytes, alignment));
    offset += bytes + pad(bytes, alignment).length;
  }
  const head = new ByteBuilder()
    .bytes(utf8.encode("GGUF"))
    .u32(3)
    .u64(plan.tensors.length)
    .u64(kvCount)
    .bytes(kvs.build())
    .bytes(infos.build());
  return [head.build(), pad(head.size, alignment), ...data];
}

// Protobuf: just what ONNX needs (varints and length-delimited fields).

/** A non-negative integer (up to 2^53 − 1) as a protobuf varint. */
export function varint(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`varint: ${n}`);
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return new Uint8Array(out);
}

function fieldKey(field: number, wireType: 0 | 2): Uint8Array {
  return varint(field * 8 + wireType);
}

function pbVarint(field: number, n: number): Uint8Array {
  return concatBytes([fieldKey(field, 0), varint(n)]);
}

function pbString(field: number, s: string): Uint8Array {
  const b = utf8.encode(s);
  return concatBytes([fieldKey(field, 2), varint(b.length), b]);
}

/** A length-delimited field holding a message made of `pieces`. */
function pbMessage(field: number, pieces: readonly Piece[]): Piece[] {
  return [concatBytes([fieldKey(field, 2), varint(piecesSize(pieces))]), ...pieces];
}

/** ONNX TensorProto.DataType of each dtype. */
export const ONNX_DATA_TYPE: Readonly<Record<FloatDType, number>> = { F32: 1, F16: 10, BF16: 16 };

/** ONNX's data type of a float dtype; throws for a quantized one (ONNX has no ggml blocks). */
function onnxDataType(dtype: DType): number {
  if (isQuantized(dtype)) throw new Error(`onnx cannot store ${dtype}`);
  return ONNX_DATA_TYPE[dtype];
}

/** A ValueInfoProto: name, and a tensor type of `elemType` with dims (numbers or named). */
function valueInfo(
  field: number,
  name: string,
  elemType: number,
  dims: (number | string)[],
): Piece[] {
  const dimPieces = dims.flatMap((d) =>
    pbMessage(1, [typeof d === "number" ? pbVarint(1, d) : pbString(2, d)])
  );
  const tensorType = pbMessage(1, [pbVarint(1, elemType), ...pbMessage(2, dimPieces)]);
  return pbMessage(field, [pbString(1, name), ...pbMessage(2, tensorType)]);
}

/** ONNX: a ModelProto whose graph's initializers carry the tensors as raw_data. */
function onnxPieces(plan: ModelPlan): Piece[] {
  refuseQuantized(plan, "onnx");
  const nodes: Piece[] = [];
  let previous = "input_ids";
  plan.tensors.forEach((t, i) => {
    const op = t.shape.length === 1 ? "Mul" : i === 0 ? "Gather" : "MatMul";
    const output = i === plan.tensors.length - 1 ? "logits" : `/${t.name}/${op}_output_0`;
    nodes.push(
      ...pbMessage(1, [
        pbString(1, op === "Gather" ? t.name : previous),
        pbString(1, op === "Gather" ? previous : t.name),
        pbString(2, output),
        pbString(3, `/${t.name}/${op}`),
        pbString(4, op),
      ]),
    );
    previous = output;
  });
  const initializers = plan.tensors.flatMap((t) => {
    const bytes = tensorBytes(t);
    return pbMessage(5, [
      ...t.shape.map((d) => pbVarint(1, d)),
      pbVarint(2, onnxDataType(t.dtype)),
      pbString(8, t.name),
      concatBytes([fieldKey(9, 2), varint(bytes)]),
      { tensor: t, dtype: t.dtype },
    ]);
  });
  const elemType = onnxDataType(plan.tensors[0].dtype);
  const graph = [
    ...nodes,
    pbString(2, "main_graph"),
    ...initializers,
    ...valueInfo(11, "input_ids", 7, /* INT64 */ ["batch", "sequence"]),
    ...valueInfo(12, "logits", elemType, ["batch", "sequence", plan.shape.vocab]),
  ];
  return [
    pbVarint(1, 8), // ir_version
    pbString(2, "pytorch"),
    pbString(3, "2.3.0"),
    ...(plan.description !== undefined ? [pbString(6, plan.description)] : []),
    ...pbMessage(7, graph),
    ...pbMessage(8, [pbVarint(2, 17)]), // opset_import { version: 17 } (default domain)
  ];
}

/** The pieces of `plan` in `format`, in file order. */
export function containerPieces(plan: ModelPlan, format: ContainerFormat): Piece[] {
  switch (format) {
    case "safetensors":
      return merged(safeTensorsPieces(plan));
    case "gguf":
      return merged(ggufPieces(plan));
    case "onnx":
      return merged(onnxPieces(plan));
  }
}

/** Where each tensor's data sits in a file: [start, end), in file order. */
export interface TensorExtent {
  readonly name: string;
  readonly dtype: DType;
  readonly start: number;
  readonly end: number;
}

/** The file size and tensor extents of `plan` written as `format` (without writing it). */
export function modelLayout(
  plan: ModelPlan,
  format: ContainerFormat,
): { size: number; tensors: TensorExtent[] } {
  const tensors: TensorExtent[] = [];
  let at = 0;
  for (const p of containerPieces(plan, format)) {
    const n = pieceSize(p);
    if (!(p instanceof Uint8Array)) {
      tensors.push({ name: p.tensor.name, dtype: p.dtype, start: at, end: at + n });
    }
    at += n;
  }
  return { size: at, tensors };
}

/** Buffered sequential writes to a file. */
class Sink {
  readonly #file: Deno.FsFile;
  readonly #buffer = new Uint8Array(1 << 20);
  #used = 0;
  written = 0;

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  async write(data: Uint8Array): Promise<void> {
    this.written += data.length;
    if (this.#used + data.length > this.#buffer.length) await this.flush();
    if (data.length >= this.#buffer.length) return await writeAll(this.#file, data);
    this.#buffer.set(data, this.#used);
    this.#used += data.length;
  }

  async flush(): Promise<void> {
    await writeAll(this.#file, this.#buffer.subarray(0, this.#used));
    this.#used = 0;
  }
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await file.write(data.subarray(done));
}

/**
 * Writes `plan` as a `format` file at `path`, streaming each tensor in pieces of
 * 1 MiB of values. Returns the bytes written.
 */
export async function writeModel(
  path: string,
  plan: ModelPlan,
  format: ContainerFormat,
): Promise<number> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const sink = new Sink(file);
  const values = new Float32Array(PIECE_ELEMENTS);
  const bytes = new Uint8Array(4 * PIECE_ELEMENTS);
  try {
    for (const p of containerPieces(plan, format)) {
      if (p instanceof Uint8Array) {
        await sink.write(p);
        continue;
      }
      const generator = new TensorValues(p.tensor);
      const total = numel(p.tensor.shape);
      for (let done = 0; done < total;) {
        const n = Math.min(PIECE_ELEMENTS, total - done);
        const piece = values.subarray(0, n);
        generator.fill(piece);
        await sink.write(bytes.subarray(0, encodeValues(piece, p.dtype, bytes)));
        done += n;
      }
    }
    await sink.flush();
  } finally {
    file.close();
  }
  return sink.written;
}

/** One line on a scenario's pair: shape, tensors, dtypes and containers. */
export function describeScenario(
  format: ContainerFormat,
  scenario: Scenario,
  size: number,
  seed: number,
): string {
  const plans = scenarioPlans(scenario, size, seed);
  const { hidden, layers, vocab } = plans.base.shape;
  const containers = scenarioContainers(format, scenario);
  const where = containers.base === containers.target
    ? ""
    : `, ${containers.base} -> ${containers.target}`;
  const align = plans.target.alignment === undefined
    ? ""
    : `, alignment ${GGUF_ALIGNMENT} -> ${plans.target.alignment}`;
  return `hidden ${hidden}, ${layers} layers, vocab ${vocab}, ` +
    `${plans.base.tensors.length} -> ${plans.target.tensors.length} tensors, ${
      plans.base.tensors[1].dtype
    } -> ${plans.target.tensors[1].dtype}${where}${align}`;
}

/** File extension-free name of a scenario's files: `<format>-<scenario>`. */
export function scenarioName(format: ContainerFormat, scenario: Scenario): string {
  return `${format}-${scenario}`;
}

/**
 * Writes `dir/<format>-<scenario>.base` and `.target` (the base about `size`
 * bytes) from `seed`, in the containers `scenarioContainers` says; returns
 * their paths. Throws for a scenario `format` does not have.
 */
export async function writeScenario(
  dir: string,
  format: ContainerFormat,
  scenario: Scenario,
  size: number,
  seed = 1,
): Promise<{ base: string; target: string }> {
  const { base, target } = scenarioPlans(scenario, size, seed);
  const containers = scenarioContainers(format, scenario);
  const stem = `${dir}/${scenarioName(format, scenario)}`;
  await writeModel(`${stem}.base`, base, containers.base);
  await writeModel(`${stem}.target`, target, containers.target);
  return { base: `${stem}.base`, target: `${stem}.target` };
}

/**
 * Parses a comma-separated scenario list (`all` or empty: `all`, by default
 * `SCENARIOS`, those every container has); any name of `ALL_SCENARIOS` may be listed.
 */
export function parseScenarios(
  text: string | undefined,
  all: readonly Scenario[] = SCENARIOS,
): Scenario[] {
  if (text === undefined || text === "" || text === "all") return [...all];
  return text.split(",").map((s) => {
    const name = s.trim();
    if (!(ALL_SCENARIOS as readonly string[]).includes(name)) {
      throw new Error(`unknown scenario "${name}" (known: ${ALL_SCENARIOS.join(", ")})`);
    }
    return name as Scenario;
  });
}

/** Parses a container name (`all`: every container). */
export function parseFormats(text: string): ContainerFormat[] {
  if (text === "all") return [...FORMATS];
  if (!(FORMATS as readonly string[]).includes(text)) {
    throw new Error(`unknown format "${text}" (known: ${FORMATS.join(", ")}, all)`);
  }
  return [text as ContainerFormat];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string" },
      size: { type: "string", default: "64MiB" },
      format: { type: "string", default: "safetensors" },
      scenarios: { type: "string" },
      seed: { type: "string", default: "1" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(`deno run -A testkit/corpus.ts --out DIR [--size 64MiB]
    [--format safetensors|gguf|onnx|all] [--scenarios a,b,...] [--seed 1]

Writes DIR/<format>-<scenario>.base and .target: transformer-shaped model files
(the base about --size bytes) and an update of each, deterministic in --seed.
Scenarios (default: all): ${ALL_SCENARIOS.join(", ")}.
  last-layer     the last layer's tensors retrained (BF16)
  finetune-fp32  every weight x (1 + 1e-3 n), F32
  finetune-bf16  the same in BF16 (many values stay the same)
  lora           rank-8 A.B merged into every layer's q and v (BF16)
  insert-tensor  a new 4h x h tensor inserted mid-file, later offsets shift (BF16)
  front-bytes    a description added to the header at the front (BF16)
  rollback       finetune-fp32 swapped: the target is the older file
  requant-fp16   F32 weights, then the same as F16
  q8-finetune, q4-finetune      (gguf) finetune-fp32's change, quantized to Q8_0 / Q4_0
  q8-last-layer, q4-last-layer  (gguf) last-layer, quantized
  q8-lora, q4-lora              (gguf) lora, quantized
  requant-q8-q4  (gguf) the same weights as Q8_0, then as Q4_0
  reorder        the same BF16 tensors, the target's sorted by name
  realign        (gguf) the same BF16 tensors, general.alignment 32 -> ${REALIGN_ALIGNMENT}
  recontainer    the same BF16 tensors, the base in another container
                 (gguf <- safetensors, safetensors <- onnx, onnx <- safetensors)`);
    return;
  }
  if (values.out === undefined) throw new Error("--out DIR is required (see --help)");
  const size = parseSize(values.size);
  if (size === undefined || size < 1024) {
    throw new Error(`--size: "${values.size}" is not a size >= 1KiB`);
  }
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new Error(`--seed: "${values.seed}" is not an integer`);
  const formats = parseFormats(values.format);
  const scenarios = parseScenarios(values.scenarios, ALL_SCENARIOS);
  await Deno.mkdir(values.out, { recursive: true });
  for (const format of formats) {
    for (const scenario of scenarios) {
      if (!hasScenario(format, scenario)) continue;
      const started = performance.now();
      const paths = await writeScenario(values.out, format, scenario, size, seed);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      console.log(
        `${scenarioName(format, scenario)}: ${
          describeScenario(format, scenario, size, seed)
        } (${seconds} s)`,
      );
      for (const path of [paths.base, paths.target]) {
        console.log(`  ${path}  ${formatBytes((await Deno.stat(path)).size)}`);
      }
    }
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`corpus: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(2);
  }
}
