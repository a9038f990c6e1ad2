/**
 * Small model files for tests: a GGUF v3 builder (metadata of several types,
 * float32 tensors, aligned data section).
 *
 * @module
 */

/** A little GGUF v3 file: metadata of several types, then tensors of float32 data. */
export function gguf(tensors: [string, Uint8Array][], alignment = 32): Uint8Array {
  const parts: number[] = [];
  const u32 = (v: number) => parts.push(v & 255, (v >> 8) & 255, (v >> 16) & 255, (v >>> 24) & 255);
  const u64 = (v: number) => {
    u32(v % 2 ** 32);
    u32(Math.floor(v / 2 ** 32));
  };
  const str = (s: string) => {
    const b = new TextEncoder().encode(s);
    u64(b.length);
    parts.push(...b);
  };
  parts.push(...new TextEncoder().encode("GGUF"));
  u32(3);
  u64(tensors.length);
  u64(3);
  str("general.architecture");
  u32(8);
  str("llama");
  str("general.alignment");
  u32(4);
  u32(alignment);
  str("tokenizer.ggml.tokens");
  u32(9);
  u32(8);
  u64(2);
  str("<s>");
  str("</s>");
  let offset = 0;
  for (const [name, data] of tensors) {
    str(name);
    u32(1);
    u64(data.length / 4);
    u32(0); // F32
    u64(offset);
    offset += Math.ceil(data.length / alignment) * alignment;
  }
  const head = new Uint8Array(parts);
  const dataStart = Math.ceil(head.length / alignment) * alignment;
  const out = new Uint8Array(dataStart + offset);
  out.set(head);
  let at = dataStart;
  for (const [, data] of tensors) {
    out.set(data, at);
    at += Math.ceil(data.length / alignment) * alignment;
  }
  return out;
}
