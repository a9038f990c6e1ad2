/**
 * ONNX protobuf messages built by hand for tests of codec/onnx_layout.ts:
 * ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto and
 * SparseTensorProto, field by field (numbers as in onnx/onnx.proto), and a
 * search for a tensor's bytes in the built file.
 */

import { varint } from "../../testkit/corpus.ts";
import { concat } from "../helpers.ts";

/** A field's key: field number and wire type. */
export function key(field: number, wire: 0 | 1 | 2 | 3 | 4 | 5): Uint8Array {
  return varint(field * 8 + wire);
}

/** A varint field. */
export function pbVarint(field: number, n: number): Uint8Array {
  return concat(key(field, 0), varint(n));
}

/** A length-delimited field holding `parts`. */
export function pbBytes(field: number, ...parts: Uint8Array[]): Uint8Array {
  const body = concat(...parts);
  return concat(key(field, 2), varint(body.length), body);
}

/** A string field. */
export function pbString(field: number, s: string): Uint8Array {
  return pbBytes(field, new TextEncoder().encode(s));
}

/** ONNX data types used in the tests. */
export const DT = { FLOAT: 1, INT32: 6, INT64: 7, FLOAT16: 10, DOUBLE: 11, BFLOAT16: 16 } as const;

/** A TensorProto's body (not yet wrapped in its field). */
export function tensor(t: {
  name?: string;
  dataType: number;
  dims?: number[];
  raw?: Uint8Array;
  floatData?: Uint8Array;
  doubleData?: Uint8Array;
  int32Data?: number[];
  external?: { location: string; offset?: string; length?: string };
}): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const d of t.dims ?? []) parts.push(pbVarint(1, d));
  parts.push(pbVarint(2, t.dataType));
  if (t.floatData) parts.push(pbBytes(4, t.floatData));
  if (t.int32Data) parts.push(pbBytes(5, ...t.int32Data.map((n) => varint(n))));
  if (t.name !== undefined) parts.push(pbString(8, t.name));
  if (t.raw) parts.push(pbBytes(9, t.raw));
  if (t.doubleData) parts.push(pbBytes(10, t.doubleData));
  if (t.external) {
    const { location, offset, length } = t.external;
    parts.push(pbBytes(13, pbString(1, "location"), pbString(2, location)));
    if (offset !== undefined) parts.push(pbBytes(13, pbString(1, "offset"), pbString(2, offset)));
    if (length !== undefined) parts.push(pbBytes(13, pbString(1, "length"), pbString(2, length)));
    parts.push(pbVarint(14, 1));
  }
  return concat(...parts);
}

/** An AttributeProto's body holding a tensor (t, 5). */
export function attrTensor(name: string, t: Uint8Array): Uint8Array {
  return concat(pbString(1, name), pbBytes(5, t), pbVarint(20, 4));
}

/** An AttributeProto's body holding tensors (10). */
export function attrTensors(name: string, ts: Uint8Array[]): Uint8Array {
  return concat(pbString(1, name), ...ts.map((t) => pbBytes(10, t)), pbVarint(20, 9));
}

/** An AttributeProto's body holding a graph (g, 6). */
export function attrGraph(name: string, g: Uint8Array): Uint8Array {
  return concat(pbString(1, name), pbBytes(6, g), pbVarint(20, 5));
}

/** An AttributeProto's body holding graphs (11). */
export function attrGraphs(name: string, gs: Uint8Array[]): Uint8Array {
  return concat(pbString(1, name), ...gs.map((g) => pbBytes(11, g)), pbVarint(20, 10));
}

/** A NodeProto's body. */
export function node(n: {
  name?: string;
  opType: string;
  inputs?: string[];
  outputs?: string[];
  attributes?: Uint8Array[];
}): Uint8Array {
  return concat(
    ...(n.inputs ?? []).map((s) => pbString(1, s)),
    ...(n.outputs ?? []).map((s) => pbString(2, s)),
    ...(n.name === undefined ? [] : [pbString(3, n.name)]),
    pbString(4, n.opType),
    ...(n.attributes ?? []).map((a) => pbBytes(5, a)),
  );
}

/** A GraphProto's body. */
export function graph(g: {
  name?: string;
  nodes?: Uint8Array[];
  initializers?: Uint8Array[];
  sparse?: { values: Uint8Array; indices: Uint8Array; dims: number[] }[];
  docString?: string;
}): Uint8Array {
  return concat(
    ...(g.nodes ?? []).map((n) => pbBytes(1, n)),
    pbString(2, g.name ?? "g"),
    ...(g.initializers ?? []).map((t) => pbBytes(5, t)),
    ...(g.docString === undefined ? [] : [pbString(10, g.docString)]),
    ...(g.sparse ?? []).map((s) =>
      pbBytes(15, pbBytes(1, s.values), pbBytes(2, s.indices), ...s.dims.map((d) => pbVarint(3, d)))
    ),
  );
}

/** A ModelProto: ir_version, producer, opset_import, functions (25), then the graph (7) last. */
export function model(g: Uint8Array, functions: Uint8Array[] = []): Uint8Array {
  return concat(
    pbVarint(1, 8),
    pbString(2, "hand"),
    pbBytes(8, pbVarint(2, 17)),
    ...functions.map((f) => pbBytes(25, f)),
    pbBytes(7, g),
  );
}

/** A FunctionProto's body. */
export function fn(name: string, nodes: Uint8Array[]): Uint8Array {
  return concat(pbString(1, name), ...nodes.map((n) => pbBytes(7, n)), pbString(10, "local"));
}

/** Where `needle` starts in `haystack` (it must occur exactly once). */
export function findOnce(haystack: Uint8Array, needle: Uint8Array): number {
  let found = -1;
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    if (found >= 0) throw new Error("the bytes occur twice");
    found = i;
  }
  if (found < 0) throw new Error("the bytes do not occur");
  return found;
}

/** `n` little-endian float32 values from a seeded generator, near `scale`. */
export function floats(n: number, seed: number, scale = 0.05): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 0x1_0000_0000) * 2 - 1) * scale;
  }
  return out;
}

/** The bytes of a float array. */
export function bytesOf(a: Float32Array | Float64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
