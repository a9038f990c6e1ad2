/**
 * BLAKE3 (via hash-wasm's WebAssembly build): the one hash of poolboy, for chunk,
 * patch and model identity. Digests are 32 bytes; hex is lower-case.
 *
 * @module
 */

import { createBLAKE3, type IHasher } from "hash-wasm";

/** Length of a BLAKE3 digest in bytes. */
export const DIGEST_LENGTH = 32;

/** An incremental BLAKE3 hasher. */
export type Hasher = IHasher;

/** A fresh BLAKE3 hasher, initialised and ready for `update`. */
export async function createHasher(): Promise<Hasher> {
  const hasher = await createBLAKE3();
  hasher.init();
  return hasher;
}

/** The BLAKE3 digest of a byte array. */
export async function blake3(data: Uint8Array): Promise<Uint8Array> {
  const hasher = await createHasher();
  hasher.update(data);
  return hasher.digest("binary");
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
