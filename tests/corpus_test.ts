/**
 * Tests of the model corpus (`testkit/corpus.ts`): every scenario of every
 * container is written small (1 MiB), parsed back with this file's own readers
 * (SafeTensors JSON, GGUF v3, and a protobuf decoder for ONNX), cross-checked
 * against the corpus's own layout, and compared base to target for the change
 * its scenario promises. Also: same seed, same bytes; the float and varint
 * encoders on known values. The scenarios only some containers have (quantized
 * GGUF, re-exports in another order, alignment or container) likewise, their
 * quantized blocks checked against the float values they came from, and their
 * bytes pinned by golden digests.
 *
 * @module
 */

import assert from "node:assert/strict";
import { blake3, toHex } from "../kernel/blake3.ts";
import {
  ALL_SCENARIOS,
  bf16FromF32Bits,
  type ContainerFormat,
  EXTRA_SCENARIOS,
  f16FromF32Bits,
  float32Bits,
  FORMATS,
  GGUF_ALIGNMENT,
  ggufName,
  hasScenario,
  insertedTensor,
  modelLayout,
  type ModelPlan,
  modelShape,
  REALIGN_ALIGNMENT,
  type Scenario,
  scenarioContainers,
  scenarioPlans,
  SCENARIOS,
  tensorBytes,
  TensorValues,
  varint,
  writeScenario,
} from "../testkit/corpus.ts";
import { f16Value } from "../testkit/ggml_quant.ts";
import { withTempDir } from "./helpers.ts";

const SIZE = 1 << 20;
const SEED = 7;

/** A tensor as a test-side reader found it. */
interface Parsed {
  name: string;
  dtype: "F32" | "BF16" | "F16" | "Q8_0" | "Q4_0";
  shape: number[];
  start: number;
  end: number;
}

/** Bytes per element; ggml's blocks hold 32 elements in 34 (Q8_0) or 18 (Q4_0) bytes. */
const ELEMENT_BYTES = { F32: 4, BF16: 2, F16: 2, Q8_0: 34 / 32, Q4_0: 18 / 32 } as const;

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// ---------------------------------------------------------------------------
// Readers

function parseSafeTensors(bytes: Uint8Array): Parsed[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const n = Number(view.getBigUint64(0, true));
  assert.equal(n % 8, 0, "header length is a multiple of 8");
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.match(text, /^\{.*\} *$/s, "JSON padded with spaces");
  const header = JSON.parse(text) as Record<string, unknown>;
  assert.equal(Object.keys(header)[0], "__metadata__");
  const out: Parsed[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [begin, end] } = info as {
      dtype: Parsed["dtype"];
      shape: number[];
      data_offsets: [number, number];
    };
    assert.ok(dtype in ELEMENT_BYTES, dtype);
    assert.equal(end - begin, numel(shape) * ELEMENT_BYTES[dtype], name);
    out.push({ name, dtype, shape, start: 8 + n + begin, end: 8 + n + end });
  }
  // The offsets cover the data exactly: back to back from the header to the end of the file.
  const sorted = [...out].sort((a, b) => a.start - b.start);
  let at = 8 + n;
  for (const t of sorted) {
    assert.equal(t.start, at, `${t.name} starts where the previous tensor ends`);
    at = t.end;
  }
  assert.equal(at, bytes.length, "the data ends at the end of the file");
  return out;
}

function parseGguf(
  bytes: Uint8Array,
  wantAlignment = 32,
): { tensors: Parsed[]; kv: Map<string, unknown> } {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  let p = 0;
  const u32 = () => (p += 4, view.getUint32(p - 4, true));
  const u64 = () => (p += 8, Number(view.getBigUint64(p - 8, true)));
  const str = () => {
    const n = u64();
    p += n;
    return new TextDecoder().decode(bytes.subarray(p - n, p));
  };
  const value = (type: number): unknown => {
    switch (type) {
      case 4:
        return u32();
      case 8:
        return str();
      case 9: {
        const elementType = u32();
        const count = u64();
        return Array.from({ length: count }, () => value(elementType));
      }
      default:
        throw new Error(`unexpected GGUF value type ${type}`);
    }
  };
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 4)), "GGUF");
  p = 4;
  assert.equal(u32(), 3, "version 3");
  const tensorCount = u64();
  const kvCount = u64();
  const kv = new Map<string, unknown>();
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    kv.set(key, value(u32()));
  }
  const types: Record<number, Parsed["dtype"]> = {
    0: "F32",
    1: "F16",
    30: "BF16",
    8: "Q8_0",
    2: "Q4_0",
  };
  const infos: { name: string; dims: number[]; dtype: Parsed["dtype"]; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const dims = Array.from({ length: u32() }, u64);
    const dtype = types[u32()];
    assert.ok(dtype !== undefined, name);
    infos.push({ name, dims, dtype, offset: u64() });
  }
  const alignment = kv.get("general.alignment") as number;
  assert.equal(alignment, wantAlignment);
  const dataStart = Math.ceil(p / alignment) * alignment;
  assert.ok(bytes.subarray(p, dataStart).every((b) => b === 0), "zero padding");
  let at = 0;
  const tensors = infos.map((t) => {
    assert.equal(t.offset % alignment, 0, `${t.name} aligned`);
    assert.equal(t.offset, at, `${t.name} follows the previous tensor`);
    const length = numel(t.dims) * ELEMENT_BYTES[t.dtype];
    at = Math.ceil((t.offset + length) / alignment) * alignment;
    // GGUF lists dims innermost first; PyTorch's shape is the reverse.
    const shape = [...t.dims].reverse();
    return {
      name: t.name,
      dtype: t.dtype,
      shape,
      start: dataStart + t.offset,
      end: dataStart + t.offset + length,
    };
  });
  assert.equal(dataStart + at, bytes.length, "the data ends at the end of the file");
  return { tensors, kv };
}

/** A protobuf field: number, and a varint value or a length-delimited [start, end). */
interface Field {
  field: number;
  value?: number;
  start: number;
  end: number;
}

/** Decodes one message's fields in `bytes[start, end)` (wire types 0 and 2 only). */
function decodeFields(bytes: Uint8Array, start: number, end: number): Field[] {
  let p = start;
  const readVarint = () => {
    let n = 0;
    let scale = 1;
    while (true) {
      const b = bytes[p++];
      n += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return n;
    }
  };
  const out: Field[] = [];
  while (p < end) {
    const key = readVarint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      out.push({ field, value: readVarint(), start: p, end: p });
    } else if (wire === 2) {
      const length = readVarint();
      out.push({ field, start: p, end: p + length });
      p += length;
    } else {
      throw new Error(`unexpected wire type ${wire} at ${p}`);
    }
  }
  assert.equal(p, end, "fields end exactly at the message's end");
  return out;
}

function text(bytes: Uint8Array, f: Field): string {
  return new TextDecoder().decode(bytes.subarray(f.start, f.end));
}

function parseOnnx(bytes: Uint8Array): { tensors: Parsed[]; model: Field[] } {
  const model = decodeFields(bytes, 0, bytes.length);
  const fieldNumbers = model.map((f) => f.field);
  assert.deepEqual(fieldNumbers, [...fieldNumbers].sort((a, b) => a - b), "fields in order");
  assert.equal(model.find((f) => f.field === 1)?.value, 8, "ir_version 8");
  const graphs = model.filter((f) => f.field === 7);
  assert.equal(graphs.length, 1, "one graph");
  const graph = decodeFields(bytes, graphs[0].start, graphs[0].end);
  const types: Record<number, Parsed["dtype"]> = { 1: "F32", 10: "F16", 16: "BF16" };
  const tensors = graph.filter((f) => f.field === 5).map((init) => {
    const fields = decodeFields(bytes, init.start, init.end);
    const shape = fields.filter((f) => f.field === 1).map((f) => f.value!);
    const dtype = types[fields.find((f) => f.field === 2)!.value!];
    const name = text(bytes, fields.find((f) => f.field === 8)!);
    const raw = fields.find((f) => f.field === 9)!;
    assert.ok(dtype !== undefined, name);
    assert.equal(raw.end - raw.start, numel(shape) * ELEMENT_BYTES[dtype], name);
    return { name, dtype, shape, start: raw.start, end: raw.end };
  });
  // One node per initializer, each naming it among its inputs.
  const nodes = graph.filter((f) => f.field === 1).map((n) =>
    decodeFields(bytes, n.start, n.end).filter((f) => f.field === 1).map((f) => text(bytes, f))
  );
  assert.equal(nodes.length, tensors.length);
  tensors.forEach((t, i) => assert.ok(nodes[i].includes(t.name), t.name));
  assert.deepEqual(graph.filter((f) => f.field === 11 || f.field === 12).map((f) => f.field), [
    11,
    12,
  ]);
  return { tensors, model };
}

function parse(format: ContainerFormat, bytes: Uint8Array, ggufAlignment = 32): Parsed[] {
  switch (format) {
    case "safetensors":
      return parseSafeTensors(bytes);
    case "gguf":
      return parseGguf(bytes, ggufAlignment).tensors;
    case "onnx":
      return parseOnnx(bytes).tensors;
  }
}

// ---------------------------------------------------------------------------
// Values

/** A tensor's values as numbers. */
function values(bytes: Uint8Array, t: Parsed): Float64Array {
  const data = bytes.slice(t.start, t.end);
  const n = numel(t.shape);
  const out = new Float64Array(n);
  if (t.dtype === "Q8_0" || t.dtype === "Q4_0") {
    // Blocks of 32: f16 scale d, then Q8_0: 32 int8 q (d·q); Q4_0: 16 bytes, low nibbles the
    // first 16 q, high nibbles the last 16 (d·(q − 8)).
    const q8 = t.dtype === "Q8_0";
    const blockBytes = q8 ? 34 : 18;
    for (let b = 0; b < n / 32; b++) {
      const at = b * blockBytes;
      const d = f16Value(data[at] | (data[at + 1] << 8));
      for (let j = 0; j < 32; j++) {
        const q = q8
          ? (data[at + 2 + j] << 24) >> 24
          : ((data[at + 2 + (j % 16)] >> (j < 16 ? 0 : 4)) & 15) - 8;
        out[b * 32 + j] = d * q;
      }
    }
  } else if (t.dtype === "F32") out.set(new Float32Array(data.buffer));
  else if (t.dtype === "BF16") {
    const halves = new Uint16Array(data.buffer);
    const widened = new Uint32Array(n);
    for (let i = 0; i < n; i++) widened[i] = halves[i] << 16;
    out.set(new Float32Array(widened.buffer));
  } else {
    const halves = new Uint16Array(data.buffer);
    for (let i = 0; i < n; i++) out[i] = f16Value(halves[i]);
  }
  return out;
}

function bytesOf(bytes: Uint8Array, t: Parsed): Uint8Array {
  return bytes.subarray(t.start, t.end);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// ---------------------------------------------------------------------------
// Scenario expectations

/** What a pair of one scenario and container holds, parsed. */
interface Pair {
  format: ContainerFormat;
  scenario: Scenario;
  /** Transformer layers of the base. */
  layers: number;
  base: Uint8Array;
  target: Uint8Array;
  baseTensors: Parsed[];
  targetTensors: Parsed[];
}

function byName(tensors: Parsed[]): Map<string, Parsed> {
  return new Map(tensors.map((t) => [t.name, t]));
}

function changedTensors(p: Pair): string[] {
  const target = byName(p.targetTensors);
  return p.baseTensors.filter((b) => {
    const t = target.get(b.name);
    return !t || !equalBytes(bytesOf(p.base, b), bytesOf(p.target, t));
  }).map((b) => b.name);
}

function assertSameLayout(p: Pair): void {
  assert.equal(p.target.length, p.base.length, "same size");
  assert.deepEqual(p.targetTensors, p.baseTensors, "same tensors at the same offsets");
}

function checkScenario(p: Pair, pairs: Map<string, Pair>): void {
  const label = `${p.format}-${p.scenario}`;
  switch (p.scenario) {
    case "last-layer": {
      assertSameLayout(p);
      const layers = p.layers;
      const last = (name: string) =>
        new RegExp(`(^model\\.layers|^blk)\\.${layers - 1}\\.`).test(name);
      const changed = changedTensors(p);
      assert.deepEqual(changed, p.baseTensors.filter((t) => last(t.name)).map((t) => t.name));
      // An identical prefix up to the last layer's first tensor.
      const firstLast = p.baseTensors.find((t) => last(t.name))!;
      const firstDiff = p.base.findIndex((b, i) => b !== p.target[i]);
      assert.ok(firstDiff >= firstLast.start, `${label}: first difference at ${firstDiff}`);
      break;
    }
    case "finetune-fp32":
    case "finetune-bf16": {
      assertSameLayout(p);
      assert.equal(changedTensors(p).length, p.baseTensors.length, "every tensor changes");
      const relative: number[] = [];
      let same = 0;
      let total = 0;
      for (const [i, b] of p.baseTensors.entries()) {
        const before = values(p.base, b);
        const after = values(p.target, p.targetTensors[i]);
        for (let k = 0; k < before.length; k++) {
          if (before[k] === 0) continue;
          relative.push(Math.abs(after[k] / before[k] - 1));
          if (b.dtype !== "F32") {
            total++;
            if (after[k] === before[k]) same++;
          }
        }
      }
      const largest = relative.reduce((a, b) => Math.max(a, b), 0);
      assert.ok(largest < 0.02, `${label}: max relative change ${largest}`);
      if (p.scenario === "finetune-fp32") {
        const m = median(relative);
        assert.ok(m > 3e-4 && m < 2e-3, `${label}: median relative change ${m}`);
        assert.ok(p.baseTensors.every((t) => t.dtype === "F32"));
      } else {
        // ε = 1e-3 is below half a BF16 step (2^-9 relative) for most values.
        assert.ok(same / total > 0.6 && same / total < 0.98, `${label}: ${same / total} unchanged`);
      }
      break;
    }
    case "lora": {
      assertSameLayout(p);
      const qv = p.baseTensors.filter((t) => /q_proj|v_proj|attn_q\.|attn_v\./.test(t.name));
      assert.equal(qv.length, 2 * p.layers);
      assert.deepEqual(changedTensors(p), qv.map((t) => t.name));
      break;
    }
    case "insert-tensor": {
      assert.equal(p.targetTensors.length, p.baseTensors.length + 1);
      assert.deepEqual(changedTensors(p), [], "every base tensor is in the target, unchanged");
      const names = new Set(p.baseTensors.map((t) => t.name));
      const added = p.targetTensors.filter((t) => !names.has(t.name));
      assert.equal(added.length, 1);
      assert.match(added[0].name, /gate/);
      const index = p.targetTensors.indexOf(added[0]);
      assert.ok(index > 2 && index < p.targetTensors.length - 3, `${label}: inserted mid-file`);
      const tensorSize = added[0].end - added[0].start;
      const growth = p.target.length - p.base.length;
      assert.ok(growth >= tensorSize && growth < tensorSize + 4096, `${label}: grew ${growth}`);
      // Every later tensor moved by at least the new one's size.
      const base = byName(p.baseTensors);
      for (const t of p.targetTensors.slice(index + 1)) {
        assert.ok(t.start - base.get(t.name)!.start >= tensorSize, t.name);
      }
      break;
    }
    case "front-bytes": {
      const growth = p.target.length - p.base.length;
      assert.ok(growth > 0 && growth <= 128, `${label}: grew ${growth}`);
      assert.deepEqual(changedTensors(p), []);
      for (const [i, t] of p.targetTensors.entries()) {
        assert.equal(t.start - p.baseTensors[i].start, growth, `${label}: ${t.name} shifted`);
      }
      if (p.format === "safetensors") assert.equal(growth % 8, 0);
      if (p.format === "gguf") assert.equal(growth % 32, 0);
      break;
    }
    case "rollback": {
      const finetune = pairs.get(`${p.format}-finetune-fp32`)!;
      assert.equal(toHex(blake3(p.base)), toHex(blake3(finetune.target)));
      assert.equal(toHex(blake3(p.target)), toHex(blake3(finetune.base)));
      break;
    }
    case "requant-fp16": {
      assert.ok(p.target.length < 0.6 * p.base.length, `${label}: target smaller`);
      assert.equal(p.targetTensors.length, p.baseTensors.length);
      for (const [i, b] of p.baseTensors.entries()) {
        const t = p.targetTensors[i];
        assert.equal(t.name, b.name);
        assert.equal(b.dtype, "F32");
        // GGUF keeps 1-D tensors in F32, as llama.cpp does.
        assert.equal(t.dtype, p.format === "gguf" && b.shape.length === 1 ? "F32" : "F16", t.name);
        const before = values(p.base, b);
        const after = values(p.target, t);
        for (let k = 0; k < before.length; k++) {
          // Round to nearest: within half a step (2^-11 relative, 2^-25 absolute below 2^-14).
          const bound = Math.max(Math.abs(before[k]) * 2 ** -11, 2 ** -25);
          assert.ok(Math.abs(after[k] - before[k]) <= bound, `${t.name}[${k}]`);
        }
      }
      break;
    }
  }
}

// ---------------------------------------------------------------------------
// Tests

Deno.test("corpus: the same seed writes the same bytes, another seed other bytes", async () => {
  await withTempDir(async (dir) => {
    const digests = async (sub: string, seed: number) => {
      await Deno.mkdir(`${dir}/${sub}`);
      const { base, target } = await writeScenario(
        `${dir}/${sub}`,
        "safetensors",
        "lora",
        SIZE,
        seed,
      );
      return [toHex(blake3(await Deno.readFile(base))), toHex(blake3(await Deno.readFile(target)))];
    };
    const first = await digests("a", SEED);
    assert.deepEqual(await digests("b", SEED), first);
    const other = await digests("c", SEED + 1);
    assert.notEqual(other[0], first[0]);
    assert.notEqual(other[1], first[1]);
    assert.notEqual(first[0], first[1]);
  });
});

for (const format of FORMATS) {
  Deno.test(`corpus: ${format} files parse back and each scenario changes what it says`, async (t) => {
    await withTempDir(async (dir) => {
      const pairs = new Map<string, Pair>();
      for (const scenario of SCENARIOS) {
        const paths = await writeScenario(dir, format, scenario, SIZE, SEED);
        assert.deepEqual(paths, {
          base: `${dir}/${format}-${scenario}.base`,
          target: `${dir}/${format}-${scenario}.target`,
        });
        const base = await Deno.readFile(paths.base);
        const target = await Deno.readFile(paths.target);
        const baseTensors = parse(format, base);
        const targetTensors = parse(format, target);
        // The reader here and the corpus's own layout agree.
        const plans = scenarioPlans(scenario, SIZE, SEED);
        for (
          const [plan, bytes, parsed] of [[plans.base, base, baseTensors], [
            plans.target,
            target,
            targetTensors,
          ]] as const
        ) {
          const layout = modelLayout(plan, format);
          assert.equal(layout.size, bytes.length);
          assert.deepEqual(
            parsed.map((p) => [p.start, p.end, p.dtype]),
            layout.tensors.map((l) => [l.start, l.end, l.dtype]),
          );
        }
        assert.ok(
          Math.abs(base.length - SIZE) < 0.1 * SIZE,
          `${scenario}: base ${base.length} bytes`,
        );
        pairs.set(`${format}-${scenario}`, {
          format,
          scenario,
          layers: plans.base.shape.layers,
          base,
          target,
          baseTensors,
          targetTensors,
        });
      }
      for (const pair of pairs.values()) {
        await t.step(pair.scenario, () => checkScenario(pair, pairs));
      }
    });
  });
}

Deno.test("corpus: weights look trained: centred, per-layer scale, norms near 1", async () => {
  await withTempDir(async (dir) => {
    const { base } = await writeScenario(dir, "safetensors", "finetune-fp32", SIZE, SEED);
    const bytes = await Deno.readFile(base);
    const header = JSON.parse(
      new TextDecoder().decode(
        bytes.subarray(8, 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))),
      ),
    );
    assert.deepEqual(header.__metadata__, { format: "pt" });
    const stds = new Set<string>();
    for (const t of parseSafeTensors(bytes)) {
      const v = values(bytes, t);
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
      if (t.shape.length === 1) {
        assert.ok(Math.abs(mean - 1) < 0.02, `${t.name}: mean ${mean}`);
      } else {
        assert.ok(Math.abs(mean) < 0.2 * std, `${t.name}: mean ${mean}, std ${std}`);
        assert.ok(std > 0.0005 && std < 0.05, `${t.name}: std ${std}`);
        stds.add(std.toFixed(4));
      }
    }
    assert.ok(stds.size > 4, "scales differ between layers and roles");
  });
});

Deno.test("corpus: insert-tensor's target is longer by the tensor plus its header entry", () => {
  const { base, target } = scenarioPlans("insert-tensor", SIZE, SEED);
  const { tensor } = insertedTensor(base, SEED);
  for (const format of FORMATS) {
    const growth = modelLayout(target, format).size - modelLayout(base, format).size;
    assert.ok(
      growth >= tensorBytes(tensor) && growth < tensorBytes(tensor) + 512,
      `${format}: ${growth}`,
    );
  }
});

Deno.test("corpus: shapes fill the requested size with at least 4 layers", () => {
  for (const size of [2 ** 20, 16 * 2 ** 20, 64 * 2 ** 20, 2 ** 30, 4 * 2 ** 30]) {
    for (const bytes of [2, 4]) {
      const { hidden, layers, vocab } = modelShape(size, bytes);
      const params = vocab * hidden + layers * (12 * hidden * hidden + 2 * hidden) + hidden;
      assert.ok(layers >= 4, `${size}: ${layers} layers`);
      assert.ok(
        Math.abs(params * bytes - size) / size < 0.01,
        `${size}/${bytes}: ${params * bytes}`,
      );
    }
  }
});

Deno.test("corpus: float16, bfloat16 and varint encodings of known values", () => {
  const f16 = (x: number) => f16FromF32Bits(float32Bits(x));
  assert.equal(f16(1), 0x3c00);
  assert.equal(f16(-2), 0xc000);
  assert.equal(f16(65504), 0x7bff);
  assert.equal(f16(65520), 0x7c00, "rounds up to infinity");
  assert.equal(f16(2 ** -14), 0x0400, "smallest normal");
  assert.equal(f16(2 ** -24), 0x0001, "smallest subnormal");
  assert.equal(f16(2 ** -25), 0x0000, "a tie rounds to even (zero)");
  assert.equal(f16(1.5 * 2 ** -25), 0x0001);
  assert.equal(f16(1 + 2 ** -11), 0x3c00, "a tie rounds to even");
  assert.equal(f16(1 + 3 * 2 ** -11), 0x3c02, "a tie rounds to even (up)");
  assert.equal(bf16FromF32Bits(0x3f800000), 0x3f80);
  assert.equal(bf16FromF32Bits(0x3f808000), 0x3f80, "a tie rounds to even");
  assert.equal(bf16FromF32Bits(0x3f818000), 0x3f82, "a tie rounds to even (up)");
  assert.equal(bf16FromF32Bits(0x3f808001), 0x3f81);
  assert.equal(bf16FromF32Bits(0x7fc00000), 0x7fc0, "NaN stays NaN");
  assert.deepEqual([...varint(0)], [0]);
  assert.deepEqual([...varint(300)], [0xac, 0x02]);
  assert.deepEqual([...varint(2 ** 35)], [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
  assert.throws(() => varint(-1), RangeError);
});

// ---------------------------------------------------------------------------
// Scenarios only some containers have: quantized GGUF and re-exports

/**
 * BLAKE3 (first 16 hex digits) of each extra scenario's base and target at
 * 1 MiB, seed 7: any change to the generator, the quantizers or a container
 * shows here (update them only for a deliberate change of the corpus).
 */
const GOLDEN: Readonly<Record<string, readonly [string, string]>> = {
  "safetensors-reorder": ["ff2e83d5d2cfe979", "00b0e5959db7855c"],
  "safetensors-recontainer": ["d9d0d419c70ab49e", "ff2e83d5d2cfe979"],
  "gguf-q8-finetune": ["0b75087ffa1e506e", "b8cbacfc8365e458"],
  "gguf-q4-finetune": ["a13efb5d3506d778", "2a175c32f35821e7"],
  "gguf-q8-last-layer": ["0b75087ffa1e506e", "0c2850338582029b"],
  "gguf-q4-last-layer": ["a13efb5d3506d778", "6ec9ba9e0cfa3b2f"],
  "gguf-q8-lora": ["0b75087ffa1e506e", "fb77ed15031ebc65"],
  "gguf-q4-lora": ["a13efb5d3506d778", "fbaa7ec637c5d339"],
  "gguf-requant-q8-q4": ["0b75087ffa1e506e", "a3966a0d93165cb3"],
  "gguf-reorder": ["dce5daaf47c7c32e", "d8afd2b00e7c704e"],
  "gguf-realign": ["dce5daaf47c7c32e", "2f6afd584a9423eb"],
  "gguf-recontainer": ["ff2e83d5d2cfe979", "dce5daaf47c7c32e"],
  "onnx-reorder": ["d9d0d419c70ab49e", "49fcec3e29fbfb79"],
  "onnx-recontainer": ["ff2e83d5d2cfe979", "d9d0d419c70ab49e"],
};

function digest(bytes: Uint8Array): string {
  return toHex(blake3(bytes)).slice(0, 16);
}

/** The name a tensor of the plan has in `format`'s files. */
function nameIn(format: ContainerFormat, name: string): string {
  return format === "gguf" ? ggufName(name) : name;
}

/**
 * Every quantized tensor of a file holds the float values its plan generates,
 * quantized: within half a step (Q8_0) or one step (Q4_0, whose largest value
 * of the other sign may be clamped) of d, where the block's largest magnitude
 * is q = ±127 (Q8_0) or the nibble 0 (Q4_0: d = max / −8).
 */
function checkQuantized(bytes: Uint8Array, parsed: Parsed[], plan: ModelPlan): number {
  const plans = new Map(plan.tensors.map((t) => [nameIn("gguf", t.name), t]));
  let checked = 0;
  for (const t of parsed) {
    if (t.dtype !== "Q8_0" && t.dtype !== "Q4_0") continue;
    const tensorPlan = plans.get(t.name)!;
    const want = new Float32Array(numel(t.shape));
    new TensorValues(tensorPlan).fill(want);
    const got = values(bytes, t);
    const data = bytesOf(bytes, t);
    const q8 = t.dtype === "Q8_0";
    const blockBytes = q8 ? 34 : 18;
    for (let b = 0; b < want.length / 32; b++) {
      const d = Math.abs(f16Value(data[b * blockBytes] | (data[b * blockBytes + 1] << 8)));
      const bound = (q8 ? 0.6 : 1.01) * d;
      for (let j = b * 32; j < b * 32 + 32; j++) {
        assert.ok(Math.abs(got[j] - want[j]) <= bound, `${t.name}[${j}]: ${got[j]} vs ${want[j]}`);
      }
      const block = data.subarray(b * blockBytes + 2, (b + 1) * blockBytes);
      if (q8) {
        assert.ok(block.some((q) => q === 127 || q === 0x81), `${t.name} block ${b}: q = ±127`);
      } else {
        assert.ok(block.some((q) => (q & 15) === 0 || q >> 4 === 0), `${t.name} block ${b}: 0`);
      }
    }
    checked++;
  }
  return checked;
}

function checkExtraScenario(
  format: ContainerFormat,
  scenario: Scenario,
  p: { base: Uint8Array; target: Uint8Array; baseTensors: Parsed[]; targetTensors: Parsed[] },
  plans: { base: ModelPlan; target: ModelPlan },
): void {
  const layers = plans.base.shape.layers;
  const sameBytes = () => {
    // Every tensor of the base is in the target under its name there, byte for byte.
    const target = byName(p.targetTensors);
    for (const b of p.baseTensors) {
      const t = target.get(b.name);
      assert.ok(t, `${b.name} is in the target`);
      assert.ok(equalBytes(bytesOf(p.base, b), bytesOf(p.target, t)), `${b.name}: same bytes`);
    }
    assert.equal(p.targetTensors.length, p.baseTensors.length);
  };
  switch (scenario) {
    case "q8-finetune":
    case "q4-finetune":
    case "q8-last-layer":
    case "q4-last-layer":
    case "q8-lora":
    case "q4-lora": {
      const dtype = scenario.startsWith("q8") ? "Q8_0" : "Q4_0";
      assert.equal(p.target.length, p.base.length, "same size");
      assert.deepEqual(p.targetTensors, p.baseTensors, "same tensors at the same offsets");
      for (const t of p.baseTensors) assert.equal(t.dtype, t.shape.length === 1 ? "F32" : dtype);
      assert.equal(checkQuantized(p.base, p.baseTensors, plans.base), 1 + 6 * layers);
      assert.equal(checkQuantized(p.target, p.targetTensors, plans.target), 1 + 6 * layers);
      const changed = changedTensors({ ...p, format, scenario, layers });
      if (scenario.endsWith("finetune")) {
        assert.equal(changed.length, p.baseTensors.length, "every tensor changes");
      } else if (scenario.endsWith("last-layer")) {
        assert.deepEqual(
          changed,
          p.baseTensors.filter((t) => t.name.startsWith(`blk.${layers - 1}.`)).map((t) => t.name),
        );
      } else {
        assert.deepEqual(
          changed,
          p.baseTensors.filter((t) => /attn_[qv]\./.test(t.name)).map((t) => t.name),
        );
      }
      break;
    }
    case "requant-q8-q4": {
      assert.ok(p.target.length < 0.6 * p.base.length, "Q4_0 is about 18/34 of Q8_0");
      assert.deepEqual(p.targetTensors.map((t) => t.name), p.baseTensors.map((t) => t.name));
      for (const [i, b] of p.baseTensors.entries()) {
        const t = p.targetTensors[i];
        assert.deepEqual(t.shape, b.shape);
        if (b.shape.length === 1) {
          assert.ok(equalBytes(bytesOf(p.base, b), bytesOf(p.target, t)), "norms stay F32");
        } else assert.deepEqual([b.dtype, t.dtype], ["Q8_0", "Q4_0"]);
      }
      assert.equal(checkQuantized(p.base, p.baseTensors, plans.base), 1 + 6 * layers);
      assert.equal(checkQuantized(p.target, p.targetTensors, plans.target), 1 + 6 * layers);
      break;
    }
    case "reorder": {
      sameBytes();
      const baseOrder = p.baseTensors.map((t) => t.name);
      const targetOrder = p.targetTensors.map((t) => t.name);
      assert.notDeepEqual(targetOrder, baseOrder, "another order");
      const sortedHf = plans.base.tensors.map((t) => t.name).sort();
      assert.deepEqual(targetOrder, sortedHf.map((n) => nameIn(format, n)), "sorted by name");
      break;
    }
    case "realign": {
      sameBytes();
      assert.deepEqual(p.targetTensors.map((t) => t.name), p.baseTensors.map((t) => t.name));
      assert.ok(p.target.length > p.base.length, "more padding");
      // parseGguf checked the alignments (32 in the base, 4096 in the target); some tensors move.
      const moved = p.targetTensors.filter((t, i) => t.start !== p.baseTensors[i].start);
      assert.ok(moved.length > 0);
      break;
    }
    case "recontainer": {
      const { base: from } = scenarioContainers(format, scenario);
      const baseByName = new Map(p.baseTensors.map((t) => [nameIn(format, t.name), t]));
      if (from === "gguf") throw new Error("unexpected");
      assert.equal(p.targetTensors.length, p.baseTensors.length);
      for (const t of p.targetTensors) {
        const b = baseByName.get(t.name);
        assert.ok(b, `${t.name} is in the base`);
        if (format === "gguf" && t.shape.length === 1) {
          // GGUF keeps norms in F32; the base has them in BF16: the same values, rounded.
          assert.equal(t.dtype, "F32");
          const [x, y] = [values(p.base, b), values(p.target, t)];
          for (let i = 0; i < x.length; i++) {
            assert.ok(Math.abs(x[i] - y[i]) <= Math.abs(y[i]) * 2 ** -8, `${t.name}[${i}]`);
          }
        } else {
          assert.ok(equalBytes(bytesOf(p.base, b), bytesOf(p.target, t)), `${t.name}: same bytes`);
        }
      }
      break;
    }
    default:
      throw new Error(`${scenario} is not an extra scenario`);
  }
}

for (const format of FORMATS) {
  const extras = EXTRA_SCENARIOS.filter((s) => hasScenario(format, s));
  Deno.test(`corpus: ${format}'s quantized and re-export scenarios parse back, change what they say, and keep their golden digests`, async (t) => {
    await withTempDir(async (dir) => {
      for (const scenario of extras) {
        await t.step(scenario, async () => {
          const paths = await writeScenario(dir, format, scenario, SIZE, SEED);
          const containers = scenarioContainers(format, scenario);
          const base = await Deno.readFile(paths.base);
          const target = await Deno.readFile(paths.target);
          const alignment = scenario === "realign" ? REALIGN_ALIGNMENT : GGUF_ALIGNMENT;
          const baseTensors = parse(containers.base, base);
          const targetTensors = parse(containers.target, target, alignment);
          const plans = scenarioPlans(scenario, SIZE, SEED);
          for (
            const [plan, bytes, parsed, container] of [
              [plans.base, base, baseTensors, containers.base],
              [plans.target, target, targetTensors, containers.target],
            ] as const
          ) {
            const layout = modelLayout(plan, container);
            assert.equal(layout.size, bytes.length);
            assert.deepEqual(
              parsed.map((p) => [p.start, p.end, p.dtype]),
              layout.tensors.map((l) => [l.start, l.end, l.dtype]),
            );
          }
          assert.ok(Math.abs(base.length - SIZE) < 0.1 * SIZE, `base ${base.length} bytes`);
          checkExtraScenario(format, scenario, { base, target, baseTensors, targetTensors }, plans);
          const name = `${format}-${scenario}`;
          assert.deepEqual([digest(base), digest(target)], GOLDEN[name], `${name}: golden digests`);
        });
      }
    });
  });
}

Deno.test("corpus: quantized scenarios and realign are GGUF's only; the others every container's", async () => {
  for (const scenario of ALL_SCENARIOS) {
    const gguf = /^q[48]-|^requant-q8|^realign$/.test(scenario);
    for (const format of FORMATS) {
      assert.equal(hasScenario(format, scenario), !gguf || format === "gguf", scenario);
    }
  }
  await withTempDir(async (dir) => {
    await assert.rejects(() => writeScenario(dir, "safetensors", "q8-finetune", SIZE, SEED));
    await assert.rejects(() => writeScenario(dir, "onnx", "realign", SIZE, SEED));
  });
  assert.deepEqual(scenarioContainers("gguf", "recontainer"), {
    base: "safetensors",
    target: "gguf",
  });
  assert.deepEqual(scenarioContainers("safetensors", "recontainer"), {
    base: "onnx",
    target: "safetensors",
  });
});
