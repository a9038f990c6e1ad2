/**
 * Shared helpers of the test suite: deterministic pseudo-random bytes, a
 * temporary directory that is always removed, and short file wrappers.
 *
 * @module
 */

/**
 * `n` deterministic pseudo-random bytes from a xorshift32 generator seeded with
 * `seed` (0 is replaced by a fixed non-zero seed, since xorshift32 would stay 0).
 * The same `(n, seed)` always gives the same bytes, on every platform: tests may
 * pin values computed from them.
 */
export function randomBytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  let x = seed >>> 0 || 0x9e3779b9;
  const out = new Uint8Array(n);
  const whole = n >>> 2;
  for (let i = 0; i < whole; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const at = i << 2;
    out[at] = x & 0xff;
    out[at + 1] = (x >>> 8) & 0xff;
    out[at + 2] = (x >>> 16) & 0xff;
    out[at + 3] = x >>> 24;
  }
  for (let at = whole << 2; at < n; at++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[at] = x & 0xff;
  }
  return out;
}

/** Runs `fn` with a fresh temporary directory, removed afterwards whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-test-" });
  try {
    return await fn(dir);
  } finally {
    if (Deno.env.get("POOLBOY_KEEP_TEST_DIRS") === undefined) {
      await Deno.remove(dir, { recursive: true });
    }
  }
}

/** Writes `data` to `path` (created or truncated). */
export async function writeFile(path: string, data: Uint8Array): Promise<void> {
  await Deno.writeFile(path, data);
}

/** Reads the whole file at `path`. */
export async function readFile(path: string): Promise<Uint8Array<ArrayBuffer>> {
  return await Deno.readFile(path);
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A `ByteSource` over an in-memory buffer whose reads return `sizeOf(remaining)` bytes each. */
export function bufferSource(
  data: Uint8Array,
  sizeOf: (room: number) => number,
): { read(buf: Uint8Array): Promise<number | null> } {
  let at = 0;
  return {
    read(buf: Uint8Array): Promise<number | null> {
      if (at >= data.length) return Promise.resolve(null);
      const n = Math.max(1, Math.min(sizeOf(buf.length), buf.length, data.length - at));
      buf.set(data.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

// Patch bytes written by hand, field by field as docs/spec/patch-v1.md lays them out, so that
// tests of the format do not trust the codec's own encoders.

/** Byte size of a v1 header. */
export const HEADER_SIZE = 54;

/** A v1 header (`version` may be overridden to build bad ones); sizes as bigint or number. */
export function header(fields: {
  baseSize: number | bigint;
  targetSize: number | bigint;
  digest?: Uint8Array;
  version?: number;
  magic?: string;
}): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(fields.magic ?? "POOL").subarray(0, 4), 0);
  view.setUint16(4, fields.version ?? 1, true);
  view.setBigUint64(6, BigInt(fields.baseSize), true);
  view.setBigUint64(14, BigInt(fields.targetSize), true);
  bytes.set(fields.digest ?? new Uint8Array(32), 22);
  return bytes;
}

/** A COPY op: `0x01, offset u64, len u64`. */
export function copyOp(offset: number | bigint, length: number | bigint): Uint8Array {
  const bytes = new Uint8Array(17);
  const view = new DataView(bytes.buffer);
  bytes[0] = 0x01;
  view.setBigUint64(1, BigInt(offset), true);
  view.setBigUint64(9, BigInt(length), true);
  return bytes;
}

/** A LITERAL op: `0x02, len u64`, then `data` (which may be shorter than `length` on purpose). */
export function literalOp(
  length: number | bigint,
  data: Uint8Array = new Uint8Array(),
): Uint8Array {
  const bytes = new Uint8Array(9 + data.length);
  bytes[0] = 0x02;
  new DataView(bytes.buffer).setBigUint64(1, BigInt(length), true);
  bytes.set(data, 9);
  return bytes;
}
