/**
 * Deterministic synthetic model files shaped like SafeTensors checkpoints, for the
 * demo and the benchmark: an 8-byte little-endian header length, a JSON header
 * (dtype, shape, data_offsets per tensor, plus `__metadata__`), then float32
 * tensors whose values look like trained weights (roughly normal, per-layer scale).
 *
 * Every byte is a function of the seeds, so the same call makes the same file on
 * any machine. Files are written one tensor at a time: memory stays at one tensor.
 *
 * @module
 */

/** One tensor: its name, shape, and the seed its values come from. */
export interface TensorPlan {
  readonly name: string;
  readonly shape: readonly number[];
  readonly seed: number;
  /** Standard deviation of the values. */
  readonly scale: number;
}

/** A model file to write. */
export interface ModelPlan {
  readonly metadata: Record<string, string>;
  readonly tensors: readonly TensorPlan[];
}

/** A transformer-like stack of `layers` blocks of width `hidden` plus an output head. */
export function transformerPlan(layers: number, hidden: number, seed = 1): ModelPlan {
  const tensors: TensorPlan[] = [];
  for (let l = 0; l < layers; l++) {
    const scale = 0.02 / Math.sqrt(1 + l / 4);
    for (const part of ["q_proj", "k_proj", "v_proj", "o_proj"]) {
      tensors.push({
        name: `layers.${l}.attn.${part}.weight`,
        shape: [hidden, hidden],
        seed: seed * 1_000_003 + tensors.length,
        scale,
      });
    }
    tensors.push({
      name: `layers.${l}.mlp.weight`,
      shape: [hidden, 2 * hidden],
      seed: seed * 1_000_003 + tensors.length,
      scale,
    });
  }
  tensors.push({
    name: "lm_head.weight",
    shape: [hidden, 2 * hidden],
    seed: seed * 1_000_003 + tensors.length,
    scale: 0.02,
  });
  return { metadata: { format: "pt", generator: "poolboy synthetic" }, tensors };
}

/** The same model with its last `count` tensors retrained (new values) and new metadata. */
export function retrainLast(plan: ModelPlan, count: number, newSeed: number): ModelPlan {
  const tensors = plan.tensors.map((t, i) =>
    i >= plan.tensors.length - count ? { ...t, seed: newSeed * 7_919 + i } : t
  );
  return {
    metadata: { ...plan.metadata, fine_tuned: "last layers retrained on new data" },
    tensors,
  };
}

/** Bytes in a plan's tensor data. */
export function dataSize(plan: ModelPlan): number {
  return plan.tensors.reduce((sum, t) => sum + 4 * t.shape.reduce((a, b) => a * b, 1), 0);
}

/** Fills `out` with float32 values ~ N(0, scale²) from a xorshift32 stream. */
export function fillWeights(out: Float32Array, seed: number, scale: number): void {
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    // Sum of four uniforms: a cheap, bell-shaped approximation of a normal.
    let sum = 0;
    for (let k = 0; k < 4; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      sum += (x >>> 0) / 4294967296;
    }
    out[i] = (sum - 2) * 1.7320508 * scale;
  }
}

/** Writes `plan` as a SafeTensors file at `path`. */
export async function writeModel(path: string, plan: ModelPlan): Promise<number> {
  const header: Record<string, unknown> = { __metadata__: plan.metadata };
  let offset = 0;
  for (const t of plan.tensors) {
    const bytes = 4 * t.shape.reduce((a, b) => a * b, 1);
    header[t.name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(json.length), true);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.write(prefix);
    await writeAllTo(file, json);
    for (const t of plan.tensors) {
      const values = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
      fillWeights(values, t.seed, t.scale);
      await writeAllTo(file, new Uint8Array(values.buffer));
    }
  } finally {
    file.close();
  }
  return 8 + json.length + offset;
}

async function writeAllTo(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await file.write(data.subarray(done));
}
