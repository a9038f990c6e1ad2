/**
 * Bounds-checked little-endian and protobuf reads from a file through a small
 * window (64 KiB, grown for a larger read up to 1 MiB): what the layout
 * readers (`tensor_layout.ts`, `onnx_layout.ts`) walk container headers with.
 * Every read past the file's end, or short, throws `LayoutError`, which the
 * readers turn into "no layout".
 *
 * @module
 */

import { readAtSync } from "../kernel/file_io.ts";

/** A container that does not parse: its reader returns no layout. */
export class LayoutError extends Error {}

/** Reads from `file` (of `size` bytes) at `position`, which each read advances. */
export class FileCursor {
  readonly #file: Deno.FsFile;
  readonly size: number;
  #window = new Uint8Array(64 * 1024);
  #windowStart = 0;
  #windowEnd = 0;
  position = 0;

  constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.size = size;
  }

  /** The next `n` bytes (at most 1 MiB), valid until the next read. */
  bytes(n: number): Uint8Array {
    if (n > 1 << 20 || this.position + n > this.size) throw new LayoutError("past the end");
    if (this.position < this.#windowStart || this.position + n > this.#windowEnd) {
      if (n > this.#window.length) this.#window = new Uint8Array(n);
      this.#windowStart = this.position;
      this.#windowEnd = this.position + readAtSync(this.#file, this.position, this.#window);
      if (this.position + n > this.#windowEnd) throw new LayoutError("short read");
    }
    const at = this.position - this.#windowStart;
    this.position += n;
    return this.#window.subarray(at, at + n);
  }

  u32(): number {
    const b = this.bytes(4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  }

  u64(): number {
    const b = this.bytes(8);
    const v = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LayoutError("u64 too large");
    return Number(v);
  }

  /** A protobuf base-128 varint (up to 10 bytes; inexact above 2^53, which no length is). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const byte = this.bytes(1)[0];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new LayoutError("varint too long");
  }

  utf8(n: number): string {
    return new TextDecoder().decode(this.bytes(n));
  }

  ascii(n: number): string {
    return String.fromCharCode(...this.bytes(n));
  }
}
