/**
 * zstd compression and decompression through one reused context each, into
 * buffers owned by the caller or the context: no allocation per call.
 *
 * `node:zlib`'s one-shot `zstdCompressSync` / `zstdDecompressSync` make a new
 * context and new output buffers on every call; V8 frees them only when its
 * external-memory limit (~64 MB) is reached, which measured +60-70 MB of RSS on
 * a stream of 1 MiB ops. Here a `ZstdCompress` / `ZstdDecompress` stream's
 * handle (`writeSync`, `reset`: the native binding the stream itself drives) is
 * used directly; where a runtime does not expose it, the one-shot functions
 * are the fallback (same bytes, more garbage). Make them with `create()`.
 *
 * @module
 */

type Zlib = typeof import("node:zlib");

/**
 * `node:zlib`, loaded on first use: importing it costs ~8 MB of RSS (Node's
 * stream and Buffer layers), which a v1 apply should not pay.
 */
let zlibModule: Zlib | undefined;

async function loadZlib(): Promise<Zlib> {
  zlibModule ??= (await import("node:zlib")).default as unknown as Zlib;
  return zlibModule;
}

/** zstd's end-of-frame flush directive (`ZSTD_e_end`). */
const ZSTD_E_END = 2;

interface NativeHandle {
  reset(): void;
  writeSync(
    flush: number,
    input: Uint8Array,
    inOffset: number,
    inLength: number,
    output: Uint8Array,
    outOffset: number,
    outLength: number,
  ): void;
  onerror?: (message: string, errno: number) => void;
}

interface NativeStream {
  _handle?: NativeHandle;
  _writeState?: Uint32Array;
}

function nativeOf(stream: unknown): { handle: NativeHandle; state: Uint32Array } | undefined {
  const s = stream as NativeStream;
  const handle = s._handle;
  if (
    handle && typeof handle.writeSync === "function" && typeof handle.reset === "function" &&
    s._writeState instanceof Uint32Array
  ) {
    return { handle, state: s._writeState };
  }
  return undefined;
}

/** An upper bound of zstd's output for `n` input bytes (`ZSTD_COMPRESSBOUND`). */
export function compressBound(n: number): number {
  return n + (n >>> 8) + (n < 128 * 1024 ? (128 * 1024 - n) >>> 11 : 0);
}

/** Compresses one whole frame at a time, reusing one context and one output buffer. */
export class ZstdCompressor {
  readonly #zlib: Zlib;
  readonly #level: number;
  readonly #out: Uint8Array;
  readonly #native: { handle: NativeHandle; state: Uint32Array } | undefined;
  readonly #stream: unknown;

  /** For inputs of at most `maxInput` bytes, at compression `level`. */
  static async create(
    maxInput: number,
    level: number,
    tablesLog?: number,
  ): Promise<ZstdCompressor> {
    return new ZstdCompressor(await loadZlib(), maxInput, level, tablesLog);
  }

  private constructor(zlib: Zlib, maxInput: number, level: number, tablesLog?: number) {
    this.#zlib = zlib;
    this.#level = level;
    this.#out = new Uint8Array(compressBound(maxInput) + 64);
    const c = zlib.constants;
    const stream = zlib.createZstdCompress({
      params: {
        [c.ZSTD_c_compressionLevel]: level,
        ...(tablesLog !== undefined && {
          [c.ZSTD_c_windowLog]: Math.max(tablesLog, Math.ceil(Math.log2(Math.max(maxInput, 1024)))),
          [c.ZSTD_c_hashLog]: tablesLog,
          [c.ZSTD_c_chainLog]: tablesLog,
        }),
      },
    });
    this.#stream = stream;
    this.#native = nativeOf(stream);
  }

  /**
   * One zstd frame of `input`. The result is a view of the context's buffer,
   * valid until the next call.
   */
  compress(input: Uint8Array): Uint8Array {
    if (!this.#native) {
      const zlib = this.#zlib;
      return zlib.zstdCompressSync(input, {
        params: { [zlib.constants.ZSTD_c_compressionLevel]: this.#level },
      });
    }
    const { handle, state } = this.#native;
    handle.reset();
    handle.writeSync(ZSTD_E_END, input, 0, input.length, this.#out, 0, this.#out.length);
    const [availOut, availIn] = state;
    if (availIn !== 0 || availOut === 0) {
      throw new Error(`zstd: ${input.length} bytes did not fit the compression buffer`);
    }
    return this.#out.subarray(0, this.#out.length - availOut);
  }

  /** Frees the native context. */
  close(): void {
    (this.#stream as { close?: () => void }).close?.();
  }
}

/** Why a zstd payload was refused. */
export class ZstdDataError extends Error {}

/** Decompresses whole frames into a caller's buffer, reusing one context. */
export class ZstdDecompressor {
  readonly #zlib: Zlib;
  readonly #native: { handle: NativeHandle; state: Uint32Array } | undefined;
  readonly #stream: unknown;
  #error: string | undefined;

  /** A decompressor (loads `node:zlib` on first use). */
  static async create(): Promise<ZstdDecompressor> {
    return new ZstdDecompressor(await loadZlib());
  }

  private constructor(zlib: Zlib) {
    this.#zlib = zlib;
    const stream = zlib.createZstdDecompress();
    this.#stream = stream;
    this.#native = nativeOf(stream);
    if (this.#native) this.#native.handle.onerror = (message) => this.#error = message;
  }

  /**
   * Decompresses `frame` (one whole zstd frame) into the start of `dest` and
   * returns the number of bytes it produced. Throws `ZstdDataError` if `frame`
   * is not exactly one whole frame (`zstdFrameLength`: zstd itself takes a cut
   * frame for a short one), is corrupt, or would produce more than `max` bytes.
   * `dest` must have room for `max + 1` (the extra byte tells "exactly max"
   * from "more").
   */
  decompressFrame(frame: Uint8Array, dest: Uint8Array, max: number): number {
    if (dest.length <= max) throw new RangeError(`dest needs ${max + 1} bytes of room`);
    if (zstdFrameLength(frame) !== frame.length) {
      throw new ZstdDataError(`its ${frame.length} bytes are not one whole zstd frame`);
    }
    const room = max + 1;
    let produced: number;
    if (!this.#native) {
      let bytes: Uint8Array;
      try {
        bytes = this.#zlib.zstdDecompressSync(frame, { maxOutputLength: room });
      } catch (err) {
        throw new ZstdDataError(err instanceof Error ? err.message : String(err));
      }
      dest.set(bytes.subarray(0, room));
      produced = bytes.length;
    } else {
      const { handle, state } = this.#native;
      this.#error = undefined;
      handle.reset();
      try {
        handle.writeSync(ZSTD_E_END, frame, 0, frame.length, dest, 0, room);
      } catch (err) {
        throw new ZstdDataError(err instanceof Error ? err.message : String(err));
      }
      if (this.#error !== undefined) throw new ZstdDataError(this.#error);
      const [availOut, availIn] = state;
      produced = room - availOut;
      if (availIn !== 0 && produced < room) {
        throw new ZstdDataError(`${availIn} bytes of the frame were left undecoded`);
      }
    }
    if (produced > max) throw new ZstdDataError(`it holds more than ${max} bytes`);
    return produced;
  }

  /** Frees the native context. */
  close(): void {
    (this.#stream as { close?: () => void }).close?.();
  }
}

/**
 * The length of the zstd frame at the start of `bytes` (RFC 8878, section 3.1.1:
 * magic, frame header, blocks up to the last one, optional checksum), or
 * undefined if `bytes` does not hold a whole frame. Lets apply require that a
 * compressed op's length is exactly its frame.
 */
export function zstdFrameLength(bytes: Uint8Array): number | undefined {
  if (
    bytes.length < 6 || bytes[0] !== 0x28 || bytes[1] !== 0xb5 || bytes[2] !== 0x2f ||
    bytes[3] !== 0xfd
  ) return undefined;
  const descriptor = bytes[4];
  const contentSizeFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const checksum = (descriptor >> 2) & 1;
  const dictionaryIdFlag = descriptor & 3;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictionaryIdFlag] +
    [singleSegment ? 1 : 0, 2, 4, 8][contentSizeFlag];
  while (true) {
    if (at + 3 > bytes.length) return undefined;
    const header = bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) return undefined; // reserved
    at += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  at += checksum ? 4 : 0;
  return at <= bytes.length ? at : undefined;
}
