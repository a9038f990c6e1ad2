/**
 * zstd compression (the encoder's) through one reused context, into a buffer
 * the context owns: no allocation per call. Decoding is `zstd_decoder.ts`'s
 * (zstd compiled to WebAssembly: apply cannot afford `node:zlib`'s memory).
 *
 * `node:zlib`'s one-shot `zstdCompressSync` / `zstdDecompressSync` make a new
 * context and new output buffers on every call; V8 frees them only when its
 * external-memory limit (~64 MB) is reached, which measured +60-70 MB of RSS on
 * a stream of 1 MiB ops. Here a `ZstdCompress` stream's
 * handle (`writeSync`, `reset`: the native binding the stream itself drives) is
 * used directly; where a runtime does not expose it, the one-shot functions
 * are the fallback (same bytes, more garbage). Make them with `create()`.
 *
 * @module
 */

type Zlib = typeof import("node:zlib");

/**
 * `node:zlib`, loaded on first use: importing it costs ~5-8 MB of RSS (Node's
 * stream and Buffer layers), which only an encode that compresses pays.
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
