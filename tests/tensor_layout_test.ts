/**
 * Tensor layouts for v2's DELTA alignment (codec/tensor_layout.ts): SafeTensors
 * headers read exactly, anything else read as "no layout", and tensors paired
 * by name and length.
 */

import assert from "node:assert/strict";
import {
  alignmentAt,
  alignTensors,
  modelLayout,
  safeTensorsLayout,
} from "../codec/tensor_layout.ts";
import { concat } from "./helpers.ts";
import { layoutOfBytes } from "./support/layouts.ts";
import { gguf } from "./support/model_files.ts";

function file(json: string, dataLength: number): Uint8Array {
  const header = new TextEncoder().encode(json);
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(header.length), true);
  return concat(head, header, new Uint8Array(dataLength));
}

Deno.test("a SafeTensors header gives each tensor's absolute byte range, sorted, metadata skipped", async () => {
  const json =
    '{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const start = 8 + json.length;
  assert.deepEqual(await layoutOfBytes(file(json, 16), safeTensorsLayout), [
    { name: "a", start, end: start + 8, width: 4 },
    { name: "b", start: start + 8, end: start + 16, width: 4 },
  ]);
});

Deno.test("anything else has no layout: not JSON, offsets past the end, a header longer than the file", async () => {
  assert.equal(await layoutOfBytes(new Uint8Array(100), safeTensorsLayout), null);
  assert.equal(await layoutOfBytes(file('{"a": nope}', 8), safeTensorsLayout), null);
  assert.equal(
    await layoutOfBytes(file('{"a":{"data_offsets":[0,64]}}', 8), safeTensorsLayout),
    null,
  );
  assert.equal(
    await layoutOfBytes(file('{"a":{"data_offsets":[8,0]}}', 8), safeTensorsLayout),
    null,
  );
  const lying = file('{"a":{"data_offsets":[0,8]}}', 8);
  new DataView(lying.buffer).setBigUint64(0, 1n << 40n, true);
  assert.equal(await layoutOfBytes(lying, safeTensorsLayout), null);
});

Deno.test("tensors pair by name and equal length; lookups find the range holding an offset", () => {
  const base = [
    { name: "a", start: 100, end: 200 },
    { name: "b", start: 200, end: 300 },
    { name: "c", start: 300, end: 350 },
    { name: "d", start: 350, end: 360, width: 2 as const },
    { name: "e", start: 360, end: 370, width: 2 as const },
  ];
  const target = [
    { name: "a", start: 120, end: 220 },
    { name: "new", start: 220, end: 260 },
    { name: "b", start: 260, end: 360 },
    { name: "c", start: 360, end: 420 }, // resized: no pair
    { name: "d", start: 420, end: 430, width: 2 as const },
    { name: "e", start: 430, end: 440, width: 1 as const }, // another dtype: no width
  ];
  const alignments = alignTensors(base, target);
  assert.deepEqual(alignments, [
    { targetStart: 120, targetEnd: 220, baseStart: 100 },
    { targetStart: 260, targetEnd: 360, baseStart: 200 },
    { targetStart: 420, targetEnd: 430, baseStart: 350, width: 2 },
    { targetStart: 430, targetEnd: 440, baseStart: 360 },
  ]);
  assert.equal(alignmentAt(alignments, 119), undefined);
  assert.equal(alignmentAt(alignments, 120)?.baseStart, 100);
  assert.equal(alignmentAt(alignments, 230), undefined);
  assert.equal(alignmentAt(alignments, 359)?.baseStart, 200);
  assert.equal(alignmentAt(alignments, 360), undefined);
});

Deno.test("a GGUF file's tensor infos give each tensor's range after the aligned data start", async () => {
  const bytes = gguf([["a", new Uint8Array(40)], ["b", new Uint8Array(64)]]);
  const layout = await layoutOfBytes(bytes, modelLayout);
  assert.ok(layout);
  assert.deepEqual(layout.map((t) => t.name), ["a", "b"]);
  const dataStart = bytes.length - 64 - 64; // a takes 40 bytes padded to 64
  assert.deepEqual(layout[0], { name: "a", start: dataStart, end: dataStart + 64, width: 4 });
  assert.deepEqual(layout[1], { name: "b", start: dataStart + 64, end: bytes.length, width: 4 });
  assert.equal(
    await layoutOfBytes(bytes.subarray(0, 30), modelLayout),
    null,
    "truncated infos: no layout",
  );
});
