/**
 * BLAKE3: the one hash of poolboy, for chunk, patch and model identity. Digests
 * are 32 bytes; hex is lower-case.
 *
 * Runs the reference C implementation compiled to WebAssembly (`blake3_wasm.ts`).
 * The module is compiled once per thread; each hasher is its own instance with
 * its own small linear memory, so hashers never share state.
 *
 * @module
 */

import { BLAKE3_WASM_BASE64 } from "./blake3_wasm.ts";

/** Length of a BLAKE3 digest in bytes. */
export const DIGEST_LENGTH = 32;

/** Bytes the module hashes per call: its I/O buffer. */
const IO_BUFFER_SIZE = 16 * 1024;

interface Blake3Exports {
  readonly memory: WebAssembly.Memory;
  Hash_GetBuffer(): number;
  Hash_Init(keyLength: number): void;
  Hash_Update(length: number): void;
  Hash_Final(digestLength: number): void;
}

let compiled: WebAssembly.Module | undefined;

function blake3Module(): WebAssembly.Module {
  if (compiled === undefined) {
    // Uint8Array.fromBase64 where the runtime has it, else atob and a plain
    // loop: Uint8Array.from(string, mapFn) builds an array of one-character
    // strings first (measured megabytes of peak RSS).
    const native = (Uint8Array as unknown as {
      fromBase64?: (text: string) => Uint8Array<ArrayBuffer>;
    }).fromBase64;
    let bytes: Uint8Array<ArrayBuffer>;
    if (typeof native === "function") bytes = native(BLAKE3_WASM_BASE64);
    else {
      const binary = atob(BLAKE3_WASM_BASE64);
      bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    }
    compiled = new WebAssembly.Module(bytes);
  }
  return compiled;
}

/** An incremental BLAKE3 hasher. */
export class Hasher {
  readonly #wasm: Blake3Exports;
  readonly #io: Uint8Array;

  /** A fresh hasher, ready for `update`. */
  constructor() {
    this.#wasm = new WebAssembly.Instance(blake3Module(), {}).exports as unknown as Blake3Exports;
    this.#io = new Uint8Array(
      this.#wasm.memory.buffer,
      this.#wasm.Hash_GetBuffer(),
      IO_BUFFER_SIZE,
    );
    this.#wasm.Hash_Init(0);
  }

  /** Starts over, forgetting everything hashed so far. */
  init(): this {
    this.#wasm.Hash_Init(0);
    return this;
  }

  /** Hashes `data` after everything hashed so far. */
  update(data: Uint8Array): this {
    for (let at = 0; at < data.length; at += IO_BUFFER_SIZE) {
      const piece = data.subarray(at, at + IO_BUFFER_SIZE);
      this.#io.set(piece);
      this.#wasm.Hash_Update(piece.length);
    }
    return this;
  }

  /** The digest of everything hashed since the last `init`; then starts over. */
  digest(): Uint8Array<ArrayBuffer> {
    this.#wasm.Hash_Final(DIGEST_LENGTH);
    const out = this.#io.slice(0, DIGEST_LENGTH);
    this.#wasm.Hash_Init(0);
    return out;
  }
}

/** A fresh BLAKE3 hasher, ready for `update`. */
export function createHasher(): Hasher {
  return new Hasher();
}

/** The BLAKE3 digest of a byte array. */
export function blake3(data: Uint8Array): Uint8Array {
  return new Hasher().update(data).digest();
}

/** Lower-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += bytes[i].toString(16).padStart(2, "0");
  return out;
}

/** Bytes of a hex string; throws `RangeError` on anything but an even number of hex digits. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new RangeError(`not a hex string: ${hex.slice(0, 80)}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Whether two digests are equal. */
export function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
