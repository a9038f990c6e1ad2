/**
 * ONNX tensor layouts (`onnxLayout`, and `modelLayout` through it, in
 * codec/tensor_layout.ts): on the corpus's ONNX files (testkit/corpus.ts) every
 * initializer's raw_data range and element width is exactly where the
 * generator put it, for F32, F16 and BF16; a hand-built ModelProto is read
 * field by field; and anything that is not a whole ModelProto with inline
 * tensors — truncated, random, empty, without a graph, with an over-long
 * varint, or a SafeTensors or GGUF file — has no layout, without throwing.
 */

import assert from "node:assert/strict";
import { modelLayout, onnxLayout } from "../codec/tensor_layout.ts";
import {
  type ContainerFormat,
  DTYPE_BYTES,
  modelLayout as generatorLayout,
  type Scenario,
  scenarioPlans,
  varint,
  writeScenario,
} from "../testkit/corpus.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";
import { layoutOfBytes, layoutOfFile } from "./support/layouts.ts";

const KiB = 1024;
const SIZE = 192 * KiB;
const SEED = 3;

/** Writes `scenario` as `format` into `dir`; returns the paths of its base and target. */
async function corpusFiles(dir: string, format: ContainerFormat, scenario: Scenario) {
  return await writeScenario(dir, format, scenario, SIZE, SEED);
}

// Protobuf fields, built by hand.

function key(field: number, wire: 0 | 1 | 2 | 5): Uint8Array {
  return varint(field * 8 + wire);
}

function pbVarint(field: number, n: number): Uint8Array {
  return concat(key(field, 0), varint(n));
}

function pbBytes(field: number, ...parts: Uint8Array[]): Uint8Array {
  const body = concat(...parts);
  return concat(key(field, 2), varint(body.length), body);
}

function pbString(field: number, s: string): Uint8Array {
  return pbBytes(field, new TextEncoder().encode(s));
}

// ---------------------------------------------------------------------------
// The corpus's ONNX files

const CASES: { scenario: Scenario; side: "base" | "target"; dtype: string; width: number }[] = [
  { scenario: "requant-fp16", side: "base", dtype: "F32", width: 4 },
  { scenario: "requant-fp16", side: "target", dtype: "F16", width: 2 },
  { scenario: "lora", side: "base", dtype: "BF16", width: 2 },
  { scenario: "lora", side: "target", dtype: "BF16", width: 2 },
];

for (const { scenario, side, dtype, width } of CASES) {
  Deno.test(`the ${dtype} ONNX ${side} of ${scenario}: every initializer's name and raw_data range is the generator's, with width ${width}`, async () => {
    await withTempDir(async (dir) => {
      const paths = await corpusFiles(dir, "onnx", scenario);
      const plan = scenarioPlans(scenario, SIZE, SEED)[side];
      const expected = generatorLayout(plan, "onnx");
      assert.equal((await Deno.stat(paths[side])).size, expected.size, "the generator's size");
      assert.ok(expected.tensors.length > 10, `${expected.tensors.length} tensors`);
      assert.ok(expected.tensors.every((t) => t.dtype === dtype), `all ${dtype}`);
      const want = expected.tensors.map((t) => ({
        name: t.name,
        start: t.start,
        end: t.end,
        width: DTYPE_BYTES[t.dtype],
      }));
      assert.ok(want.every((t) => t.width === width));
      assert.deepEqual(await layoutOfFile(paths[side], onnxLayout), want);
      assert.deepEqual(await layoutOfFile(paths[side], modelLayout), want, "modelLayout agrees");
    });
  });
}

// ---------------------------------------------------------------------------
// A ModelProto built by hand

Deno.test("a hand-built ModelProto: each inline initializer's raw_data is its range, fields of every wire type skipped", async () => {
  const rawW = new Uint8Array([1, 2, 3, 4, 5, 6]);
  const rawIds = new Uint8Array(16).fill(9);
  const w = pbBytes(
    5, // GraphProto.initializer
    pbVarint(1, 3), // dims
    pbVarint(2, 16), // data_type BFLOAT16
    concat(key(20, 5), new Uint8Array(4)), // an unknown fixed32
    pbString(8, "w"),
    concat(key(21, 1), new Uint8Array(8)), // an unknown fixed64
    pbBytes(9, rawW), // raw_data
  );
  const ids = pbBytes(
    5,
    pbVarint(1, 2),
    pbVarint(2, 7 /* INT64 */),
    pbString(8, "ids"),
    pbBytes(9, rawIds),
  );
  const graph = pbBytes(7, pbString(2, "g"), w, ids);
  const head = concat(pbVarint(1, 8), pbString(2, "pytorch"));
  const model = concat(head, graph, pbBytes(8, pbVarint(2, 17)));
  // raw_data's bytes end each initializer, so the ranges end where the messages do.
  const wEnd = head.length + graph.length - ids.length;
  const idsEnd = head.length + graph.length;
  assert.deepEqual(await layoutOfBytes(model, onnxLayout), [
    { name: "w", start: wEnd - rawW.length, end: wEnd, width: 2 },
    // INT64 is an 8-byte type: no width, left to the encoder.
    { name: "ids", start: idsEnd - rawIds.length, end: idsEnd },
  ]);
});

Deno.test("initializers without inline raw_data (external data, or a graph without any) give no layout", async () => {
  const external = pbBytes(
    5,
    pbVarint(1, 4),
    pbVarint(2, 1),
    pbString(8, "w"),
    pbVarint(14, 1), // data_location EXTERNAL
  );
  assert.equal(await layoutOfBytes(concat(pbVarint(1, 8), pbBytes(7, external)), onnxLayout), null);
  assert.equal(
    await layoutOfBytes(concat(pbVarint(1, 8), pbBytes(7, pbString(2, "g"))), onnxLayout),
    null,
  );
});

// ---------------------------------------------------------------------------
// Not ONNX, or not whole

Deno.test("a truncated ONNX file has no layout, wherever it is cut", async () => {
  await withTempDir(async (dir) => {
    const { base } = await corpusFiles(dir, "onnx", "lora");
    const bytes = await Deno.readFile(base);
    assert.notEqual(await layoutOfBytes(bytes, onnxLayout), null, "the whole file has one");
    for (const cut of [bytes.length - 1, bytes.length - 100, Math.floor(bytes.length / 2), 100]) {
      assert.equal(await layoutOfBytes(bytes.subarray(0, cut), onnxLayout), null, `cut at ${cut}`);
      assert.equal(await layoutOfBytes(bytes.subarray(0, cut), modelLayout), null, `cut at ${cut}`);
    }
  });
});

Deno.test("random bytes and an empty file have no layout", async () => {
  for (const seed of [1, 2, 3]) {
    assert.equal(
      await layoutOfBytes(randomBytes(64 * KiB, seed), onnxLayout),
      null,
      `seed ${seed}`,
    );
  }
  assert.equal(await layoutOfBytes(new Uint8Array(0), onnxLayout), null);
  assert.equal(await layoutOfBytes(new Uint8Array(0), modelLayout), null);
});

Deno.test("a protobuf with no graph field has no layout", async () => {
  const model = concat(
    pbVarint(1, 8), // ir_version
    pbString(2, "pytorch"), // producer_name
    pbString(3, "2.3.0"), // producer_version
    pbString(6, "no graph here"), // doc_string
    pbBytes(8, pbVarint(2, 17)), // opset_import
  );
  assert.equal(await layoutOfBytes(model, onnxLayout), null);
  assert.equal(await layoutOfBytes(model, modelLayout), null);
});

Deno.test("a varint longer than 10 bytes gives no layout rather than throwing", async () => {
  const long = concat(new Uint8Array(10).fill(0x80), new Uint8Array([0x01])); // 11 bytes
  // As a field's tag, as the graph's length, and as an initializer's data_type.
  const tag = concat(long, new Uint8Array(4));
  const graphLength = concat(key(7, 2), long, new Uint8Array(4));
  const inner = concat(key(2, 0), long);
  const dataType = concat(
    key(7, 2),
    varint(inner.length + 2),
    key(5, 2),
    varint(inner.length),
    inner,
  );
  const cases: [string, Uint8Array][] = [
    ["tag", tag],
    ["graph length", graphLength],
    ["data_type", dataType],
  ];
  for (const [name, bytes] of cases) {
    assert.equal(await layoutOfBytes(bytes, onnxLayout), null, name);
    assert.equal(await layoutOfBytes(bytes, modelLayout), null, name);
  }
});

for (const format of ["safetensors", "gguf"] as const) {
  Deno.test(`${format} files are not mistaken for ONNX: onnxLayout finds nothing in them`, async () => {
    await withTempDir(async (dir) => {
      for (const scenario of ["lora", "requant-fp16", "front-bytes"] as const) {
        const paths = await corpusFiles(dir, format, scenario);
        for (const side of ["base", "target"] as const) {
          const name = `${format} ${scenario} ${side}`;
          assert.equal(await layoutOfFile(paths[side], onnxLayout), null, name);
          assert.notEqual(await layoutOfFile(paths[side], modelLayout), null, name);
        }
      }
    });
  });
}
