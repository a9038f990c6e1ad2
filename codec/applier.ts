/**
 * Applies a patch to a base, streaming, verified or refused.
 *
 * A v3 patch's base samples are checked first (`base_samples.ts`), before
 * the output file exists (v2: the whole base's BLAKE3); then ops are read
 * once through `PatchReader` (which validates every bound first), each base
 * range they use read once: COPY reads the base at its offset, LITERAL streams
 * from the patch, both straight into an output buffer; a ZLITERAL's or
 * DELTA's bytes are written from the decoder's buffer (its zstd data decoded
 * by zstd's own decoder in the same WebAssembly memory, `zstd_decoder.ts`).
 * The output goes to a temporary file beside the destination and into the
 * output's BLAKE3: in the main thread by default (hashed there; an output of
 * 2 GiB or more written behind: one async write in flight while the next op
 * decodes), or with
 * `threads: 1` hashed on a Worker (`hash_pool.ts`) while the main thread
 * fills the next buffer. The file is fsynced and renamed over
 * the destination only if its BLAKE3 equals the header's (when it does not, a
 * v3 apply hashes the whole base to tell a wrong base from corrupt patch
 * data). On any failure the temporary file is deleted and the destination is
 * untouched.
 *
 * Memory: compressed ops are decoded in the WebAssembly filter kernels' two
 * 1 MiB regions (resident anyway; also used for the samples and for large
 * COPYs and LITERALs); the decoder's two 1 MiB buffers (`CompressedOps`) are
 * made only without a base (inspect) or without WebAssembly; a patch buffer of up to 64 KiB,
 * and output buffers: one of up to 64 KiB and the 1 MiB write-behind buffer
 * in the main thread, `APPLY_OUTPUT_BUFFERS` of `bufferSize` (1 MiB) with a
 * Worker — whatever the file sizes. The Worker costs about 18 MB more, which
 * is why it is not the default: apply must fit in 64 MB (measured 60-63 MB
 * peak at 1 and 4 GiB without).
 *
 * @module
 */

import { AtomicFile } from "../kernel/atomic_file.ts";
import { createHasher, digestsEqual, type Hasher, toHex } from "../kernel/blake3.ts";
import { BufferPool } from "./buffer_pool.ts";
import { ioError, PoolboyError, VerificationError } from "../kernel/errors.ts";
import { openInput, readAtSync } from "../kernel/file_io.ts";
import type { ByteSource } from "./chunk_stream.ts";
import { HashPool } from "./hash_pool.ts";
import type { ProgressCallback } from "../kernel/progress.ts";
import { type PatchOp, PatchReader } from "./patch_reader.ts";
import { checkSamples } from "./base_samples.ts";
import { uncombine, unshuffle } from "./residue_filter.ts";
import { type FilterKernels, filterKernels, KERNEL_REGION } from "./filter_kernels.ts";
import {
  fieldOffset,
  gatherField,
  joinRecords,
  recordCount,
  restoreRecords,
  streamStarts,
  unshuffleRecords,
} from "./record_filter.ts";
import { decodeFramesInKernels, ZstdDataError, ZstdDecompressor } from "./zstd_decoder.ts";
import { emptyStats, type OpStats } from "./op_writer.ts";
import { MAX_OP_RAW, type PatchHeader } from "./patch_format.ts";
import { MalformedPatchError } from "../kernel/errors.ts";

/** Default size of the patch buffer and of each output buffer. */
export const APPLY_BUFFER_SIZE = 1024 * 1024;
/** Smallest buffer size `applyFile` accepts. */
export const MIN_APPLY_BUFFER_SIZE = 64;
/** Size of the buffer a DRECORDS's base field streams are gathered through. */
export const RECORD_CHUNK = 64 * 1024;
/** Largest buffer for reading the patch's op heads. */
export const PATCH_READ_BUFFER = 64 * 1024;
/**
 * The output buffer without a Worker: it only gathers small pieces (COPYs and
 * LITERALs under half of it); larger ones are written from the decoder's buffers.
 */
export const MAIN_THREAD_OUTPUT_BUFFER = 64 * 1024;
/** Output buffers with a hashing Worker: one filling, one writing, the rest hashing. */
export const APPLY_OUTPUT_BUFFERS = 4;
/**
 * Bytes of the buffer apply's output is copied into for its write-behind
 * (main thread): an op's bytes (at most 1 MiB) or a full output buffer; larger
 * pieces are written synchronously. One buffer is enough: the next op decodes
 * into the WebAssembly regions while the write is in flight, and the write is
 * waited for before the buffer is filled again.
 */
export const WRITE_BEHIND_BUFFER = 1024 * 1024;
/**
 * Outputs from this size on are written behind (one async write in flight
 * while the next op decodes); smaller ones synchronously. Past a few GB the
 * kernel throttles a writer's dirty pages to the disk's pace, and a write
 * that blocks stalls decoding: measured on a 4 GiB fp32 fine-tune (quiet
 * machine) 12.6 s written behind against 15.1-15.6 s. Below, the page cache
 * takes the output as fast as it comes, and Deno's async writes cost memory
 * (1 GiB bf16 fine-tune: the same 3.3-3.5 s, but 62.0-62.4 MiB peak against
 * 58.1-60.0 MiB synchronously). A device with less memory than this machine
 * (24 GiB) throttles earlier; 2 GiB is where the two measured sizes part.
 */
export const WRITE_BEHIND_MIN_OUTPUT = 2 * 1024 * 1024 * 1024;

/** Options of `applyFile`. */
export interface ApplyOptions {
  readonly onProgress?: ProgressCallback;
  /** Size of the patch buffer and of each output buffer (default 1 MiB). */
  readonly bufferSize?: number;
  /** Hashing Workers: 0 (default) hashes in the main thread, 1 on a Worker. */
  readonly threads?: 0 | 1;
  /** Outputs of at least this many bytes are written behind (default `WRITE_BEHIND_MIN_OUTPUT`). */
  readonly writeBehindFrom?: number;
}

/** What an apply produced. */
export interface ApplySummary extends OpStats {
  readonly baseSize: number;
  readonly targetSize: number;
  readonly patchSize: number;
  /**
   * Base bytes read: in v3 the samples and the ranges the ops use (each once),
   * in v2 also the whole base before the ops, in v1 only the ranges.
   */
  readonly baseBytesRead: number;
  readonly targetBlake3: string;
  /** Hashing Workers used. */
  readonly threads: number;
  readonly elapsedMs: number;
}

/** Rebuilds the target from `basePath` and `patchPath` into `outPath`. */
export async function applyFile(
  basePath: string,
  patchPath: string,
  outPath: string,
  options: ApplyOptions = {},
): Promise<ApplySummary> {
  const started = performance.now();
  const bufferSize = options.bufferSize ?? APPLY_BUFFER_SIZE;
  if (!Number.isSafeInteger(bufferSize) || bufferSize < MIN_APPLY_BUFFER_SIZE) {
    throw new RangeError(`apply buffer size must be at least ${MIN_APPLY_BUFFER_SIZE} bytes`);
  }
  const patch = await openInput(patchPath, "patch");
  let base: Awaited<ReturnType<typeof openInput>> | undefined;
  let out: AtomicFile | undefined;
  let pool: HashPool | undefined;
  let expanded: CompressedOps | undefined;
  try {
    // Op heads go through the reader's buffer; literal and compressed bytes are
    // read straight into their destinations, so a small one does.
    const reader = await readPatch(
      patchPath,
      () => PatchReader.open(syncSource(patch.file), Math.min(bufferSize, PATCH_READ_BUFFER)),
    );
    const { header } = reader;
    base = await openInput(basePath, "base");
    if (base.size !== header.baseSize) {
      throw new VerificationError(
        `wrong base: "${basePath}" is ${base.size} bytes, the patch was made from a ${header.baseSize}-byte base`,
      );
    }
    expanded = new CompressedOps(base.file, basePath);
    // One hasher for the samples, the v2 base digest and the output (each new
    // one is a WebAssembly instance: ~0.4 MB of RSS until collected).
    const hasher = createHasher();
    if (header.samples !== undefined) {
      // v3: refuse a base that differs in a sampled range before any output
      // exists; the ops then read the base once, and the output's BLAKE3 decides.
      expanded.countBaseRead(
        checkSamples(base.file, basePath, header.samples, expanded.scratch(), hasher),
      );
    } else if (header.baseDigest) {
      // v2: refuse a wrong base before any output exists, by hashing all of it.
      const actual = hashWholeFile(base.file, basePath, expanded.scratch(), hasher);
      expanded.countBaseRead(base.size);
      if (!digestsEqual(actual, header.baseDigest)) {
        throw new VerificationError(
          `wrong base: "${basePath}" has BLAKE3 ${toHex(actual)}, the patch was made from ${
            toHex(header.baseDigest)
          }`,
        );
      }
    }
    out = await AtomicFile.create(outPath, "output");
    const threads = options.threads ?? 0;
    pool = threads === 1 ? await HashPool.start(1) : undefined;
    const output = new OutputStream(
      out.file,
      outPath,
      pool ?? hasher.init(),
      pool ? bufferSize : Math.min(bufferSize, MAIN_THREAD_OUTPUT_BUFFER),
      header.targetSize >= (options.writeBehindFrom ?? WRITE_BEHIND_MIN_OUTPUT),
    );
    const stats: OpStats = emptyStats();
    while (true) {
      const op = await readPatch(patchPath, () => reader.next());
      if (op === null) break;
      if (op.kind === "copy") {
        stats.copyOps++;
        stats.copyBytes += op.length;
        for (let done = 0; done < op.length;) {
          // A large piece goes through the decoder's spare buffer, written from there.
          const direct = output.direct && op.length - done >= output.directMinimum;
          const room = direct ? expanded.scratch().subarray(0, MAX_OP_RAW) : await output.room();
          const want = Math.min(room.length, op.length - done);
          let n: number;
          try {
            n = readAtSync(base.file, op.offset + done, room.subarray(0, want));
          } catch (err) {
            throw ioError("read base", basePath, err);
          }
          if (n < want) throw ioError("read base", basePath, new Error("file shrank while read"));
          expanded.countBaseRead(n);
          if (direct) await output.put(room.subarray(0, n));
          else output.advance(n);
          done += n;
        }
      } else if (op.kind !== "literal") {
        const bytes = await expanded.expand(
          op,
          (dest) => readPatch(patchPath, () => reader.readLiteral(dest)),
        );
        countCompressed(stats, op);
        await output.put(bytes);
      } else {
        stats.literalOps++;
        stats.literalBytes += op.length;
        for (let left = op.length; left > 0;) {
          const direct = output.direct && left >= output.directMinimum;
          const room = direct ? expanded.scratch().subarray(0, MAX_OP_RAW) : await output.room();
          const n = await readPatch(patchPath, () => reader.readLiteral(room));
          if (direct) await output.put(room.subarray(0, n));
          else output.advance(n);
          left -= n;
        }
      }
      options.onProgress?.(reader.produced, header.targetSize);
    }
    const digest = await output.finish();
    if (!digestsEqual(digest, header.targetDigest)) {
      if (header.samples !== undefined && header.baseDigest !== undefined) {
        await out.abort();
        throw explainFailure(
          base.file,
          basePath,
          header,
          digest,
          outPath,
          expanded.scratch(),
          hasher,
        );
      }
      throw new VerificationError(
        `output does not verify: BLAKE3 ${toHex(digest)} differs from the patch's ${
          toHex(header.targetDigest)
        } (wrong base content, or a damaged patch); "${outPath}" was not written`,
      );
    }
    await out.commit();
    return {
      ...stats,
      baseSize: header.baseSize,
      targetSize: header.targetSize,
      patchSize: reader.position,
      baseBytesRead: expanded.baseBytesRead,
      targetBlake3: toHex(digest),
      threads: pool ? 1 : 0,
      elapsedMs: performance.now() - started,
    };
  } catch (err) {
    await out?.abort();
    throw err;
  } finally {
    pool?.close();
    expanded?.close();
    patch.file.close();
    base?.file.close();
  }
}

/**
 * The output side of apply: bytes go into an output buffer; a full buffer is
 * hashed and written — in the main thread hashed there and written
 * synchronously, or behind for large outputs (`WRITE_BEHIND_MIN_OUTPUT`); with
 * a hashing Worker written synchronously and hashed on the Worker while the
 * next one fills.
 */
class OutputStream {
  readonly #file: Deno.FsFile;
  readonly #path: string;
  readonly #hasher: HashPool | Hasher;
  readonly #buffers: BufferPool;
  #current: Uint8Array<ArrayBuffer> | undefined;
  #filled = 0;
  #hashFailure: unknown;
  /** Write-behind (main thread, large outputs): on or off, the copy buffer, the write in flight, its failure. */
  readonly #writeBehind: boolean;
  #behind: Uint8Array | undefined;
  #inFlight: Promise<void> | undefined;
  #writeFailure: unknown;

  /** With `behind`, the main thread's writes are written behind (`WRITE_BEHIND_MIN_OUTPUT`). */
  constructor(
    file: Deno.FsFile,
    path: string,
    hasher: HashPool | Hasher,
    bufferSize: number,
    behind: boolean,
  ) {
    this.#file = file;
    this.#path = path;
    this.#hasher = hasher;
    this.#buffers = new BufferPool(APPLY_OUTPUT_BUFFERS, bufferSize);
    this.#writeBehind = behind;
  }

  /** Free space to fill (then `advance`); never empty. */
  async room(): Promise<Uint8Array> {
    if (this.#current && this.#filled === this.#current.length) await this.#ship();
    if (!this.#current) {
      try {
        this.#current = new Uint8Array(await this.#buffers.acquire());
      } catch (err) {
        throw this.#hashFailure ?? err; // the pool is cancelled when hashing fails
      }
    }
    return this.#current.subarray(this.#filled);
  }

  /** Marks `n` bytes of the last `room()` as filled. */
  advance(n: number): void {
    this.#filled += n;
  }

  /** Whether large pieces are written where they are (`put`), not copied: in the main thread. */
  get direct(): boolean {
    return !(this.#hasher instanceof HashPool);
  }

  /** The smallest piece `put` writes where it is. */
  get directMinimum(): number {
    return Math.ceil(this.#buffers.size / 2);
  }

  /**
   * Appends `bytes`. In the main thread a piece of half a buffer or more is
   * written and hashed where it is, after what is buffered (no copy); other
   * pieces are copied into the buffer.
   */
  async put(bytes: Uint8Array): Promise<void> {
    if (!(this.#hasher instanceof HashPool) && bytes.length >= this.directMinimum) {
      if (this.#current && this.#filled > 0) await this.#ship();
      await this.#writeAndHash(this.#hasher, bytes);
      return;
    }
    for (let done = 0; done < bytes.length;) {
      const room = await this.room();
      const n = Math.min(room.length, bytes.length - done);
      room.set(bytes.subarray(done, done + n));
      this.advance(n);
      done += n;
    }
  }

  /**
   * Hashes `bytes` (unless a Worker does) and writes them. In the main thread
   * the write is behind: `bytes` are copied into the write-behind buffer and
   * written by Deno's I/O thread while the next op decodes (one write in
   * flight, in order); with a hashing Worker, synchronously.
   */
  async #writeAndHash(hasher: Hasher | undefined, bytes: Uint8Array): Promise<void> {
    hasher?.update(bytes);
    if (hasher === undefined || !this.#writeBehind || bytes.length > WRITE_BEHIND_BUFFER) {
      await this.#settle();
      try {
        writeAllSync(this.#file, bytes);
      } catch (err) {
        throw ioError("write output beside", this.#path, err);
      }
      return;
    }
    await this.#settle();
    const copy = this.#behind ??= new Uint8Array(WRITE_BEHIND_BUFFER);
    copy.set(bytes);
    const pending = copy.subarray(0, bytes.length);
    // A failure is kept for the next settle (an abort may never settle: no
    // unhandled rejection then).
    this.#inFlight = (async () => {
      for (let done = 0; done < pending.length;) {
        const n = await this.#file.write(pending.subarray(done));
        if (n <= 0) throw new Error("the file took no bytes");
        done += n;
      }
    })().catch((err) => {
      this.#writeFailure ??= err;
    });
  }

  /** Waits for the write in flight; a failed one is the I/O error of this output. */
  async #settle(): Promise<void> {
    const inFlight = this.#inFlight;
    if (inFlight === undefined) return;
    this.#inFlight = undefined;
    await inFlight;
    if (this.#writeFailure !== undefined) {
      throw ioError("write output beside", this.#path, this.#writeFailure);
    }
  }

  /** Writes what is left and returns the BLAKE3 of everything written. */
  async finish(): Promise<Uint8Array> {
    if (this.#current && this.#filled > 0) await this.#ship();
    await this.#settle();
    if (!(this.#hasher instanceof HashPool)) return this.#hasher.digest();
    const digest = await this.#hasher.streamDigest(); // answered after every update
    if (this.#hashFailure !== undefined) throw this.#hashFailure;
    return digest;
  }

  async #ship(): Promise<void> {
    const buffer = this.#current!;
    const length = this.#filled;
    this.#current = undefined;
    this.#filled = 0;
    if (!(this.#hasher instanceof HashPool)) {
      await this.#writeAndHash(this.#hasher, buffer.subarray(0, length));
      this.#buffers.release(buffer.buffer);
      return;
    }
    await this.#writeAndHash(undefined, buffer.subarray(0, length));
    this.#hasher.streamUpdate(buffer.buffer, length).then(
      (back) => this.#buffers.release(back),
      (err) => {
        this.#hashFailure ??= err;
        this.#buffers.cancel(); // the buffer is lost: wake whoever waits for one
      },
    );
  }
}

/**
 * The patch read with synchronous reads: the kernel reads ahead of sequential
 * reads, so they are mostly copies from the page cache, where an async read's
 * round trip through Deno's I/O threads (the main thread idle meanwhile) costs
 * more than the copy (profiled at 1 GiB: 43% of apply's time idle with async
 * patch reads and output writes). The output is written behind instead (see
 * `OutputStream`): one async write in flight while the next op decodes.
 */
function syncSource(file: Deno.FsFile): ByteSource {
  return { read: (buf) => Promise.resolve(file.readSync(buf)) };
}

/** Writes all of `data` with synchronous writes (see `syncSource`). */
function writeAllSync(file: Deno.FsFile, data: Uint8Array): void {
  for (let done = 0; done < data.length;) {
    const n = file.writeSync(data.subarray(done));
    if (n <= 0) throw new Error("the file took no bytes");
    done += n;
  }
}

/** A compressed op: ZLITERAL, DELTA, and in v3 ZRECORDS and DRECORDS. */
export type CompressedOp = Exclude<PatchOp, { kind: "copy" | "literal" }>;

/** Counts a compressed op in `stats`. */
export function countCompressed(stats: OpStats, op: CompressedOp): void {
  if (op.kind === "delta") {
    stats.deltaOps++;
    stats.deltaBytes += op.length;
  } else if (op.kind === "zliteral") {
    stats.zliteralOps++;
    stats.zliteralBytes += op.length;
  } else if (op.kind === "zrecords") {
    stats.zrecordsOps++;
    stats.zrecordsBytes += op.length;
  } else {
    stats.drecordsOps++;
    stats.drecordsBytes += op.length;
  }
}

/** Runs a patch read, turning OS errors into an I/O error naming the patch. */
async function readPatch<T>(patchPath: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof PoolboyError) throw err;
    throw ioError("read patch", patchPath, err);
  }
}

/**
 * The error for a v3 output whose BLAKE3 differs: hashes the whole base (only
 * now, on failure) to tell a wrong base that passed the samples from corrupt
 * patch data.
 */
function explainFailure(
  base: Deno.FsFile,
  basePath: string,
  header: PatchHeader,
  digest: Uint8Array,
  outPath: string,
  scratch: Uint8Array,
  hasher: Hasher,
): VerificationError {
  const actual = hashWholeFile(base, basePath, scratch, hasher);
  const sampled = `${header.samples?.length ?? 0} sampled ranges`;
  if (header.baseDigest !== undefined && !digestsEqual(actual, header.baseDigest)) {
    return new VerificationError(
      `wrong base: "${basePath}" has BLAKE3 ${toHex(actual)}, the patch was made from ${
        toHex(header.baseDigest)
      } (it matches the patch's ${sampled} but differs elsewhere); the output's BLAKE3 ${
        toHex(digest)
      } differs from the patch's ${toHex(header.targetDigest)}; "${outPath}" was not written`,
    );
  }
  return new VerificationError(
    `corrupt patch data: the output's BLAKE3 ${toHex(digest)} differs from the patch's ${
      toHex(header.targetDigest)
    }, and the base is the right one (its BLAKE3 is the patch's base_blake3 ${
      toHex(actual)
    }), so the patch is damaged; "${outPath}" was not written`,
  );
}

/** BLAKE3 of a whole open file, read with positional reads in this thread. */
function hashWholeFile(
  file: Deno.FsFile,
  path: string,
  buf: Uint8Array,
  hasher: Hasher,
): Uint8Array {
  hasher.init();
  for (let at = 0;;) {
    let n: number;
    try {
      n = readAtSync(file, at, buf);
    } catch (err) {
      throw ioError("read base", path, err);
    }
    if (n === 0) break;
    hasher.update(buf.subarray(0, n));
    at += n;
  }
  return hasher.digest();
}

/**
 * Turns compressed ops (v2 ZLITERAL and DELTA, v3 ZRECORDS and DRECORDS) into their bytes: with a
 * base and the WebAssembly kernels, in the kernels' regions (below); else
 * through two fixed buffers made on first use and one reused zstd decoder
 * (nothing is allocated per op): the compressed payload is read into A
 * (< 1 MiB) and decompressed into B (1 MiB); unshuffled planes go back into A
 * (free by then), and a DELTA's base range is read into whichever buffer does
 * not hold the residue.
 *
 * Without a base (`inspect`), `residue` does every check but the base's: the
 * payload is whole zstd frames that decompress to exactly the op's length.
 */
export class CompressedOps {
  readonly #base: Deno.FsFile | undefined;
  readonly #basePath: string;
  #a: Uint8Array | undefined;
  #b: Uint8Array | undefined;
  /** Where a DRECORDS's base field streams are gathered, a piece at a time. */
  #small: Uint8Array | undefined;
  #zstd: ZstdDecompressor | undefined;
  #baseBytesRead = 0;

  /** With the base `expand` reads DELTA ranges from; none for `residue` only. */
  constructor(base?: Deno.FsFile, basePath = "") {
    this.#base = base;
    this.#basePath = basePath;
  }

  /** Base bytes read so far: by `expand`, and those the caller counts. */
  get baseBytesRead(): number {
    return this.#baseBytesRead;
  }

  /** Adds base bytes read by the caller (COPYs, samples, the base's BLAKE3) to `baseBytesRead`. */
  countBaseRead(bytes: number): void {
    this.#baseBytesRead += bytes;
  }

  /**
   * A buffer of at least `MAX_OP_RAW` bytes for the samples, the base's
   * BLAKE3 and large COPYs and LITERALs, valid until the next `expand`: with
   * the base and the WebAssembly kernels, their region 1 (resident anyway);
   * else one of the op buffers.
   */
  scratch(): Uint8Array {
    const kernels = this.#kernels();
    if (kernels) return kernels.region(1);
    return this.#b ??= new Uint8Array(MAX_OP_RAW);
  }

  /**
   * The filter kernels, when `expand` runs ZLITERALs and DELTAs in their
   * memory: with a base (apply; not inspect) and regions of at least an op.
   */
  #kernels(): FilterKernels | undefined {
    if (this.#base === undefined || KERNEL_REGION < MAX_OP_RAW) return undefined;
    return filterKernels();
  }

  /**
   * Reads the op's payload through `read` and decodes it: checks that it is
   * whole zstd frames producing exactly `op.length` bytes, and undoes the
   * filter's shuffle. Returns the residue (for a ZLITERAL, its bytes) and the
   * buffer not holding it; both are valid until the next call. Throws
   * `MalformedPatchError` for data that does not decode so.
   */
  async residue(
    op: Extract<PatchOp, { kind: "zliteral" | "delta" }>,
    read: (dest: Uint8Array) => Promise<number>,
  ): Promise<{ residue: Uint8Array; spare: Uint8Array }> {
    const a = this.#a ??= new Uint8Array(MAX_OP_RAW);
    const b = await this.decompress(op, read);
    if (op.filter.shuffle === "none") return { residue: b.subarray(0, op.length), spare: a };
    unshuffle(b.subarray(0, op.length), op.filter, a.subarray(0, op.length));
    return { residue: a.subarray(0, op.length), spare: b };
  }

  /**
   * Reads a compressed op's payload through `read` and decompresses it: checks
   * that it is whole zstd frames producing exactly `op.length` bytes. Returns
   * them, valid until the next call (inspect checks record ops with this).
   */
  async decompress(
    op: CompressedOp,
    read: (dest: Uint8Array) => Promise<number>,
  ): Promise<Uint8Array> {
    const a = this.#a ??= new Uint8Array(MAX_OP_RAW);
    const b = this.#b ??= new Uint8Array(MAX_OP_RAW);
    const payload = a.subarray(0, op.payloadLength);
    for (let got = 0; got < payload.length;) got += await read(payload.subarray(got));
    return await this.#decompressInto(op, payload, b);
  }

  /**
   * Decompresses `payload` (whole zstd frames making exactly `op.length`
   * bytes) into `dest` (at least `op.length` bytes); returns the bytes.
   */
  async #decompressInto(
    op: CompressedOp,
    payload: Uint8Array,
    dest: Uint8Array,
  ): Promise<Uint8Array> {
    const zstd = this.#zstd ??= await ZstdDecompressor.create();
    this.#checkDecoded(op, () => zstd.decompressFrames(payload, dest, op.length));
    return dest.subarray(0, op.length);
  }

  /**
   * Decodes the op's payload, read into the kernels' region 1, into their
   * region 0 (zstd in the same WebAssembly memory: no buffer, no copy).
   */
  #decodeInKernels(op: CompressedOp, kernels: FilterKernels): void {
    this.#checkDecoded(op, () => decodeFramesInKernels(kernels, op.payloadLength, op.length));
  }

  /**
   * Runs `decode` (which returns the bytes it produced) and makes its
   * refusals, and any length other than the op's, the op's MalformedPatchError.
   */
  #checkDecoded(op: CompressedOp, decode: () => number): void {
    const name = op.kind.toUpperCase();
    let produced: number;
    try {
      produced = decode();
    } catch (err) {
      if (!(err instanceof ZstdDataError)) throw err;
      throw new MalformedPatchError(
        `${name} data does not decompress to its ${op.length} bytes: ${err.message}`,
      );
    }
    if (produced !== op.length) {
      throw new MalformedPatchError(
        `${name} data decompresses to ${produced} bytes, not the ${op.length} it claims`,
      );
    }
  }

  /**
   * The op's target bytes: `residue`, combined with the base's range for a
   * DELTA; for ZRECORDS and DRECORDS, the record transform undone
   * (`record_filter.ts`): the streams unshuffled into A, a DRECORDS's base
   * range read into B, and its field streams gathered through a small buffer.
   */
  async expand(
    op: CompressedOp,
    read: (dest: Uint8Array) => Promise<number>,
  ): Promise<Uint8Array> {
    const kernels = this.#kernels();
    if (kernels && (op.kind === "zrecords" || op.kind === "drecords")) {
      return await this.#recordsInKernels(op, read, kernels);
    }
    if (op.kind === "zrecords" || op.kind === "drecords") {
      const payload = await this.decompress(op, read);
      const residue = this.#a!.subarray(0, op.length);
      unshuffleRecords(payload, op.layout, residue);
      // The payload's buffer is free now: it takes the base range, then the output.
      if (op.kind === "drecords") this.#readBase(op.offset, payload);
      const small = this.#small ??= new Uint8Array(RECORD_CHUNK);
      restoreRecords(
        residue,
        op.kind === "drecords" ? payload : undefined,
        op.layout,
        small,
        payload,
      );
      return payload;
    }
    if (kernels) return await this.#expandInKernels(op, read, kernels);
    const { residue, spare } = await this.residue(op, read);
    if (op.kind === "delta") {
      const range = spare.subarray(0, op.length);
      this.#readBase(op.offset, range);
      uncombine(residue, range, op.filter, residue);
    }
    return residue;
  }

  /**
   * A ZLITERAL or DELTA decoded in the kernels' memory, with no buffer of
   * its own and no copy in or out (2 MiB less than through A and B): the
   * payload read into region 1, decompressed into region 0, unshuffled into
   * either, a DELTA's base range read into the other and
   * uncombined into the residue's. Returns a view of the region holding the
   * bytes, valid until the next call.
   */
  async #expandInKernels(
    op: Extract<PatchOp, { kind: "zliteral" | "delta" }>,
    read: (dest: Uint8Array) => Promise<number>,
    kernels: FilterKernels,
  ): Promise<Uint8Array> {
    const payload = kernels.region(1).subarray(0, op.payloadLength);
    for (let got = 0; got < payload.length;) got += await read(payload.subarray(got));
    this.#decodeInKernels(op, kernels);
    const residue = kernels.unshuffleRegion(0, op.length, op.filter);
    if (op.kind === "delta") {
      this.#readBase(op.offset, kernels.region(residue === 0 ? 1 : 0).subarray(0, op.length));
      kernels.uncombineRegion(residue, op.length, op.filter);
    }
    return kernels.region(residue).subarray(0, op.length);
  }

  /**
   * A ZRECORDS or DRECORDS decoded in the kernels' memory, with no buffer of
   * its own: the payload read into region 1, decompressed into region 0, each
   * stream unshuffled into its place in region 1; for a DRECORDS, the base's
   * records read half a region at a time into region 0's upper half (once per
   * field, from the page cache; counted once in `baseBytesRead`), a field
   * gathered from them into its start and uncombined with its stream; the
   * records joined back into region 0. Returns a view of it, valid until the
   * next call.
   */
  async #recordsInKernels(
    op: Extract<PatchOp, { kind: "zrecords" | "drecords" }>,
    read: (dest: Uint8Array) => Promise<number>,
    kernels: FilterKernels,
  ): Promise<Uint8Array> {
    const { layout, length } = op;
    const payload = kernels.region(1).subarray(0, op.payloadLength);
    for (let got = 0; got < payload.length;) got += await read(payload.subarray(got));
    this.#decodeInKernels(op, kernels);
    const starts = streamStarts(layout, length);
    layout.fields.forEach(({ filter }, j) => {
      kernels.unshuffleAcross(starts[j], starts[j + 1] - starts[j], filter);
    });
    const tail = starts[starts.length - 1];
    const near = kernels.region(0);
    const residue = kernels.region(1).subarray(0, length);
    residue.set(near.subarray(tail, length), tail);
    if (op.kind === "drecords") {
      const r = layout.recordLength;
      const half = KERNEL_REGION / 2;
      const perChunk = Math.floor(half / r);
      const n = recordCount(layout, length);
      layout.fields.forEach(({ length: l, filter }, j) => {
        const within = fieldOffset(layout, j);
        for (let first = 0; first < n; first += perChunk) {
          const count = Math.min(perChunk, n - first);
          const records = near.subarray(half, half + count * r);
          this.#readBase(op.offset + first * r, records, j === 0);
          gatherField(records, r, within, l, 0, count, near.subarray(0, count * l));
          kernels.uncombineAcross(starts[j] + first * l, count * l, filter);
        }
      });
      if (tail < length) {
        const base = near.subarray(0, length - tail);
        this.#readBase(op.offset + tail, base);
        for (let i = tail; i < length; i++) residue[i] ^= base[i - tail];
      }
    }
    const out = near.subarray(0, length);
    joinRecords(residue, layout, out);
    return out;
  }

  /** Reads `range` from the base at `offset`; `count`s it in `baseBytesRead` unless read already. */
  #readBase(offset: number, range: Uint8Array, count = true): void {
    if (this.#base === undefined) throw new Error("CompressedOps.expand needs the base");
    let n: number;
    try {
      n = readAtSync(this.#base, offset, range);
    } catch (err) {
      throw ioError("read base", this.#basePath, err);
    }
    if (n < range.length) {
      throw ioError("read base", this.#basePath, new Error("file shrank while read"));
    }
    if (count) this.#baseBytesRead += n;
  }

  /** Frees the zstd context. */
  close(): void {
    this.#zstd?.close();
  }
}
