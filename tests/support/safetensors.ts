/**
 * Small SafeTensors files for tests: float32 tensors in a given order, each
 * after `pad` zero bytes (a re-export with another alignment).
 *
 * @module
 */

import { concat } from "../helpers.ts";

/** A SafeTensors file of float32 tensors in the given order, each after `pad` zero bytes. */
export function safetensors(tensors: [string, Uint8Array][], pad = 0): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, data] of tensors) {
    offset += pad;
    header[name] = {
      dtype: "F32",
      shape: [data.length / 4],
      data_offsets: [offset, offset + data.length],
    };
    offset += data.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  return concat(head, json, ...tensors.flatMap(([, d]) => [new Uint8Array(pad), d]));
}
