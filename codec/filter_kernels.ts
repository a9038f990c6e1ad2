/**
 * The codec's hot loops in WebAssembly (codec/wasm/filters.c, embedded by
 * `deno task build:wasm` in `filters_wasm.ts`): residue filters (byte and bit
 * planes, SUB and XOR), the equal-run scan and the FastCDC gear loop; and in
 * the same module, zstd's own decoder (codec/wasm/zstd_decoder.c), which
 * decodes a frame from one region straight into the other (apply; see
 * `zstd_decoder.ts`). The
 * TypeScript versions (`residue_filter.ts`, `equal_runs.ts`, `fastcdc.ts`) are
 * the reference; they call these kernels for inputs that fit and fall back to
 * themselves otherwise (or if WebAssembly is unavailable). Measured per 1 MiB
 * here (copies in and out included): byte planes ~8×, bit planes 2-4×, SUB 1.5-2.5× the
 * JavaScript loops; on 1 GiB fine-tunes the run search went from 4.2 to 0.3 s (fp32)
 * and 5.2 to 3.4 s (bf16), the gear loop from 5.5 to 2.3 s of main-thread time.
 *
 * Memory: one instance per thread, made on first use, with a fixed linear
 * memory of 2.5 MiB (scripts/build_wasm.ts `MEMORY_BYTES`: 64 KiB of stack,
 * zstd's 192 KiB context workspace, the bit-plane tile, two 1 MiB regions the
 * inputs are copied into and the result is read from, 64 KiB of slack after
 * the second, the gear table). It never grows; pages are resident only once
 * touched. Every kernel works in place or from one region into the other, so
 * two regions suffice.
 *
 * @module
 */

import { FILTERS_WASM_BASE64 } from "./filters_wasm.ts";
import type { Filter } from "./patch_format.ts";

/** Bytes each input of a kernel call may have (a region of linear memory). */
export const KERNEL_REGION = 1024 * 1024;

interface Exports {
  readonly memory: WebAssembly.Memory;
  readonly __heap_base: WebAssembly.Global;
  combine(t: number, b: number, out: number, len: number, width: number, sub: number): void;
  uncombine(r: number, b: number, out: number, len: number, width: number, sub: number): void;
  byte_planes_1(src: number, out: number, len: number, forward: number): void;
  byte_planes_2(src: number, out: number, len: number, forward: number): void;
  byte_planes_4(src: number, out: number, len: number, forward: number): void;
  bit_planes_1(src: number, out: number, len: number, forward: number): void;
  bit_planes_2(src: number, out: number, len: number, forward: number): void;
  bit_planes_4(src: number, out: number, len: number, forward: number): void;
  equal_end(a: number, b: number, from: number, n: number): number;
  run_start(a: number, b: number, from: number, n: number, minRun: number): number;
  gear_scan(data: number, from: number, to: number, gear: number, mask: number, fp: number): number;
  gear_state(): number;
  zd_init(): number;
  zd_decompress(dst: number, cap: number, src: number, len: number): number;
  zd_is_error(code: number): number;
  zd_error_code(code: number): number;
  zd_error_name(code: number): number;
  fp_init(): void;
  fp_update(p: number, len: number): number;
  fp_final(tail: number, n: number, total: number): void;
  fp_result(): number;
}

/** Bytes of slack after region 1: a zstd frame of an incompressible region still fits. */
export const REGION_1_SLACK = 64 * 1024;

/** What `zstdDecode` did: the bytes it produced, or zstd's error (code and description). */
export type ZstdDecodeResult =
  | { readonly ok: true; readonly produced: number }
  | { readonly ok: false; readonly code: number; readonly message: string };

/** The kernels of one instance; every input is copied into its memory first. */
export class FilterKernels {
  readonly #x: Exports;
  readonly #mem: Uint8Array;
  readonly #a: number;
  readonly #b: number;
  readonly #gear: number;
  #gearTable: Uint32Array | undefined;

  constructor(module: WebAssembly.Module) {
    this.#x = new WebAssembly.Instance(module, {}).exports as unknown as Exports;
    this.#mem = new Uint8Array(this.#x.memory.buffer);
    const heap = Number(this.#x.__heap_base.value);
    this.#a = Math.ceil(heap / 65536) * 65536;
    this.#b = this.#a + KERNEL_REGION;
    this.#gear = this.#b + KERNEL_REGION + REGION_1_SLACK;
    if (this.#gear + 1024 > this.#mem.length) {
      throw new RangeError(`the filter module's memory (${this.#mem.length} bytes) is too small`);
    }
    if (this.#x.zd_init() !== 1) {
      throw new RangeError("the filter module's zstd workspace is too small for its decoder");
    }
  }

  /** Bytes of linear memory the instance holds. */
  get memoryBytes(): number {
    return this.#mem.length;
  }

  /** `residue_filter.ts` `combine`, for `target.length <= KERNEL_REGION`. */
  combine(target: Uint8Array, base: Uint8Array, filter: Filter, out: Uint8Array): void {
    const n = target.length;
    this.#mem.set(target, this.#a);
    this.#mem.set(base.subarray(0, n), this.#b);
    this.#x.combine(this.#a, this.#b, this.#a, n, filter.width, filter.combine === "sub" ? 1 : 0);
    out.set(this.#mem.subarray(this.#a, this.#a + n));
  }

  /** `residue_filter.ts` `uncombine`, for `residue.length <= KERNEL_REGION`. */
  uncombine(residue: Uint8Array, base: Uint8Array, filter: Filter, out: Uint8Array): void {
    const n = residue.length;
    this.#mem.set(residue, this.#a);
    this.#mem.set(base.subarray(0, n), this.#b);
    this.#x.uncombine(this.#a, this.#b, this.#a, n, filter.width, filter.combine === "sub" ? 1 : 0);
    out.set(this.#mem.subarray(this.#a, this.#a + n));
  }

  /**
   * `combine` then `shuffle` with `filter` in one call (one copy in, one
   * out): what the encoder tries for each DELTA candidate.
   */
  combineShuffle(target: Uint8Array, base: Uint8Array, filter: Filter, out: Uint8Array): void {
    out.set(this.combineShuffleView(target, base, filter));
  }

  /**
   * `combineShuffle`'s result as a view of the instance's memory, valid until
   * its next call (no copy out: the encoder compresses it where it is).
   */
  combineShuffleView(target: Uint8Array, base: Uint8Array, filter: Filter): Uint8Array {
    const n = target.length;
    this.#mem.set(target, this.#a);
    this.#mem.set(base.subarray(0, n), this.#b);
    this.#x.combine(this.#a, this.#b, this.#a, n, filter.width, filter.combine === "sub" ? 1 : 0);
    const result = this.#planes(this.#a, this.#b, n, filter, true);
    return this.#mem.subarray(result, result + n);
  }

  /**
   * `unshuffle` then `uncombine` with `filter` in one call (one copy of each
   * input in, one out): what apply does for each DELTA op.
   */
  unshuffleUncombine(src: Uint8Array, base: Uint8Array, filter: Filter, out: Uint8Array): void {
    const n = src.length;
    this.#mem.set(src, this.#a);
    const residue = this.#planes(this.#a, this.#b, n, filter, false);
    const other = residue === this.#a ? this.#b : this.#a;
    this.#mem.set(base.subarray(0, n), other);
    this.#x.uncombine(residue, other, residue, n, filter.width, filter.combine === "sub" ? 1 : 0);
    out.set(this.#mem.subarray(residue, residue + n));
  }

  /** `residue_filter.ts` `shuffle` (forward) or `unshuffle`, for `src.length <= KERNEL_REGION`. */
  planes(src: Uint8Array, filter: Filter, out: Uint8Array, forward: boolean): void {
    out.set(this.planesView(src, filter, forward));
  }

  /** `planes`' result as a view of the instance's memory, valid until its next call. */
  planesView(src: Uint8Array, filter: Filter, forward: boolean): Uint8Array {
    const n = src.length;
    this.#mem.set(src, this.#a);
    const result = this.#planes(this.#a, this.#b, n, filter, forward);
    return this.#mem.subarray(result, result + n);
  }

  /** Planes of the n bytes at `from` into `to`; returns where the result is. */
  #planes(from: number, to: number, n: number, filter: Filter, forward: boolean): number {
    if (filter.shuffle === "none") return from;
    const f = forward ? 1 : 0;
    const x = this.#x;
    const w = filter.width;
    if (filter.shuffle === "bytes") {
      if (w === 1) x.byte_planes_1(from, to, n, f);
      else if (w === 2) x.byte_planes_2(from, to, n, f);
      else x.byte_planes_4(from, to, n, f);
    } else {
      if (w === 1) x.bit_planes_1(from, to, n, f);
      else if (w === 2) x.bit_planes_2(from, to, n, f);
      else x.bit_planes_4(from, to, n, f);
    }
    return to;
  }

  /**
   * Region `i` (0 or 1) of the instance's memory, `KERNEL_REGION` bytes, and
   * `extra` more past its end (region 0's next byte is region 1's first): for
   * a caller that fills regions where they are and runs the `*Region` kernels
   * on them, with no buffer of its own and no copy in or out (apply). The view
   * stays valid (the memory never grows); its contents change with any call.
   */
  region(i: 0 | 1, extra = 0): Uint8Array {
    const at = i === 0 ? this.#a : this.#b;
    return this.#mem.subarray(at, at + KERNEL_REGION + extra);
  }

  /**
   * `unshuffle` of the first `n` bytes of region `from` with `filter`, in
   * place (no shuffle) or into the other region; returns the region holding
   * the result.
   */
  unshuffleRegion(from: 0 | 1, n: number, filter: Filter): 0 | 1 {
    const at = from === 0 ? this.#a : this.#b;
    const other = from === 0 ? this.#b : this.#a;
    return this.#planes(at, other, n, filter, false) === at ? from : from === 0 ? 1 : 0;
  }

  /**
   * `uncombine` of the residue in the first `n` bytes of region `residue`
   * with the base range in the other region, into region `residue`.
   */
  uncombineRegion(residue: 0 | 1, n: number, filter: Filter): void {
    const r = residue === 0 ? this.#a : this.#b;
    const base = residue === 0 ? this.#b : this.#a;
    this.#x.uncombine(r, base, r, n, filter.width, filter.combine === "sub" ? 1 : 0);
  }

  /**
   * `unshuffle` of the `n` bytes at `offset` of region 0 into the same place
   * of region 1 (copied where `filter` has no shuffle): a record op's streams,
   * one at a time, where they are.
   */
  unshuffleAcross(offset: number, n: number, filter: Filter): void {
    const from = this.#a + offset;
    const to = this.#b + offset;
    if (this.#planes(from, to, n, filter, false) === from) this.#mem.copyWithin(to, from, from + n);
  }

  /**
   * `uncombine` of the residue of `n` bytes at `offset` of region 1 with the
   * first `n` bytes of region 0, into the residue's place.
   */
  uncombineAcross(offset: number, n: number, filter: Filter): void {
    const r = this.#b + offset;
    this.#x.uncombine(r, this.#a, r, n, filter.width, filter.combine === "sub" ? 1 : 0);
  }

  /**
   * zstd: decodes the whole frames at `srcStart .. srcStart + len` of region
   * `src` into region `dst` from `dstStart`, at most `cap` bytes (zstd refuses
   * more), in one shot: no window buffer, whatever window a frame declares
   * (above 2^30 bytes zstd refuses it). `src` and `dst` are different regions;
   * region 1's input may run `REGION_1_SLACK` bytes past its end.
   */
  zstdDecode(
    src: 0 | 1,
    srcStart: number,
    len: number,
    dst: 0 | 1,
    dstStart: number,
    cap: number,
  ): ZstdDecodeResult {
    const srcRoom = KERNEL_REGION + (src === 1 ? REGION_1_SLACK : 0);
    if (
      src === dst || srcStart < 0 || len < 0 || srcStart + len > srcRoom || dstStart < 0 ||
      cap < 0 || dstStart + cap > KERNEL_REGION
    ) {
      throw new RangeError(`zstdDecode: ranges outside the regions or overlapping`);
    }
    const x = this.#x;
    const from = (src === 0 ? this.#a : this.#b) + srcStart;
    const to = (dst === 0 ? this.#a : this.#b) + dstStart;
    // size_t comes back as an i32: an error is a small negative number.
    const result = x.zd_decompress(to, cap, from, len) >>> 0;
    if (!x.zd_is_error(result)) return { ok: true, produced: result };
    const at = x.zd_error_name(result) >>> 0;
    let end = at;
    while (end < this.#mem.length && end - at < 200 && this.#mem[end] !== 0) end++;
    return {
      ok: false,
      code: x.zd_error_code(result),
      message: new TextDecoder().decode(this.#mem.subarray(at, end)),
    };
  }

  /**
   * Loads `a` and `b` (each at most `KERNEL_REGION` bytes) for `equalEnd` and
   * `runStart`.
   */
  loadPair(a: Uint8Array, b: Uint8Array): void {
    this.#mem.set(a, this.#a);
    this.#mem.set(b, this.#b);
  }

  /** The first j in [from, n) where the loaded pair differs, or n. */
  equalEnd(from: number, n: number): number {
    return this.#x.equal_end(this.#a, this.#b, from, n);
  }

  /**
   * The start of the first run of equal bytes of the loaded pair in [from, n)
   * at least `minRun` long or reaching n, or n.
   */
  runStart(from: number, n: number, minRun: number): number {
    return this.#x.run_start(this.#a, this.#b, from, n, minRun);
  }

  /**
   * The FastCDC gear hash rolled over `data` (at most `KERNEL_REGION` bytes)
   * from state `fp` with table `gear` (256 entries): `cut` is the index just
   * after the first byte where `(fp & mask) === 0` (-1 if none), `fp` the
   * state there (or at the end).
   */
  gearScan(
    data: Uint8Array,
    gear: Uint32Array,
    mask: number,
    fp: number,
  ): { cut: number; fp: number } {
    if (this.#gearTable !== gear) {
      new Uint32Array(this.#mem.buffer, this.#gear, 256).set(gear.subarray(0, 256));
      this.#gearTable = gear;
    }
    this.#mem.set(data, this.#a);
    const end = this.#x.gear_scan(this.#a, 0, data.length, this.#gear, mask >>> 0, fp >>> 0);
    return { cut: end === 0 ? -1 : end, fp: this.#x.gear_state() | 0 };
  }

  /**
   * The 128-bit non-cryptographic fingerprint of `data` (filters.c
   * `fp_update`: four lanes of xxHash64's round; any length below 4 GiB),
   * written to `out[at..at + FINGERPRINT_LENGTH)`. Equal bytes give equal
   * fingerprints; unequal bytes almost always differ, but nothing relies on
   * it: a match found by fingerprint is compared byte for byte before use.
   */
  fingerprint(data: Uint8Array, out: Uint8Array, at = 0): void {
    const x = this.#x;
    x.fp_init();
    let pos = 0;
    while (true) {
      const n = Math.min(KERNEL_REGION, data.length - pos);
      this.#mem.set(data.subarray(pos, pos + n), this.#a);
      const took = x.fp_update(this.#a, n); // all of a full region: KERNEL_REGION is a multiple of 32
      pos += took;
      if (took < n || pos === data.length) {
        x.fp_final(this.#a + took, n - took, data.length);
        break;
      }
    }
    const result = x.fp_result();
    out.set(this.#mem.subarray(result, result + FINGERPRINT_LENGTH), at);
  }
}

/**
 * Bytes of a chunk fingerprint (`FilterKernels.fingerprint`).
 */
export const FINGERPRINT_LENGTH = 16;

/**
 * The bytes of base64 `text`: `Uint8Array.fromBase64` where the runtime has it
 * (+0.6 MB of RSS for 36 KB of base64, measured before zstd joined the module; it is 143 KB now), else `atob` and a plain loop
 * (+2 MB); `Uint8Array.from(atob(text), mapFn)` measured +5.5 MB (it builds an
 * array of one-character strings first).
 */
function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const native = (Uint8Array as unknown as {
    fromBase64?: (text: string) => Uint8Array<ArrayBuffer>;
  }).fromBase64;
  if (typeof native === "function") return native(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

let compiled: WebAssembly.Module | undefined;
let kernels: FilterKernels | undefined;
let unavailable = false;

/**
 * This thread's kernels, made on first use; undefined where WebAssembly is
 * unavailable (the callers then run their TypeScript loops).
 */
export function filterKernels(): FilterKernels | undefined {
  if (kernels !== undefined || unavailable) return kernels;
  if (typeof WebAssembly === "undefined") {
    unavailable = true;
    return undefined;
  }
  compiled ??= new WebAssembly.Module(decodeBase64(FILTERS_WASM_BASE64));
  kernels = new FilterKernels(compiled);
  return kernels;
}

/** A fresh instance of the kernels (tests: one not shared with the codec). */
export function newFilterKernels(): FilterKernels {
  compiled ??= new WebAssembly.Module(decodeBase64(FILTERS_WASM_BASE64));
  return new FilterKernels(compiled);
}
