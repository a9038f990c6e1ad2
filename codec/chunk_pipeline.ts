/**
 * Chunks and hashes a stream on a pool of Workers, through a fixed pool of
 * transferable buffers: the multi-threaded form of `hashedChunkStream`, with
 * exactly the same chunks and digests.
 *
 * Stages, each buffer passing through them in turn (it is never copied and is
 * only ever in one thread):
 *
 * 1. The main thread fills a buffer from the source and finds the FastCDC cuts
 *    in it. Bytes after the last cut that is certain (an incomplete chunk) are
 *    copied to the start of the next buffer, so chunks never straddle buffers.
 * 2. A Worker hashes the buffer's chunks (`HashPool.hashChunks`), or, with
 *    `identity: "fingerprint"`, the main thread fingerprints them right there
 *    (`FilterKernels.fingerprint`, several times faster than BLAKE3; for
 *    callers that check every match byte for byte, see `ChunkIdentity`).
 * 3. The caller consumes the chunks, in file order, from the async iterator.
 * 4. If the whole stream is hashed too, Worker 0 adds the buffer to the running
 *    BLAKE3 (`HashPool.streamUpdate`), concurrently with later chunk jobs.
 * 5. The buffer returns to the pool.
 *
 * Backpressure: stage 1 waits for a free buffer, so reading runs at most the
 * pool's size ahead of the slowest stage; nothing else is queued. Memory is
 * the pool (count × size) whatever the stream's length.
 *
 * @module
 */

import { BufferPool } from "./buffer_pool.ts";
import type { ByteSource, HashedChunk } from "./chunk_stream.ts";
import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { chunkMasks, type ChunkParams, type CutScan, findCut } from "./fastcdc.ts";
import type { ChunkDigests, HashPool } from "./hash_pool.ts";
import { type FilterKernels, filterKernels } from "./filter_kernels.ts";

/**
 * What a chunk's `digest` is: its BLAKE3 (what index files store and what
 * identifies a chunk anywhere), or a 128-bit non-cryptographic fingerprint
 * (`FilterKernels.fingerprint`, in the first 16 of the 32 digest bytes, the
 * rest zero): only for comparing chunks of two streams chunked in the same
 * process, where every match is then compared byte for byte. Where the
 * WebAssembly kernels are unavailable, "fingerprint" falls back to BLAKE3.
 */
export type ChunkIdentity = "blake3" | "fingerprint";

/**
 * The default pipeline buffer for `params`: the largest chunk plus a quarter.
 * A buffer must exceed the largest chunk; the bytes carried over to the next
 * buffer are an incomplete chunk (about an average chunk), so each fill still
 * brings in most of a buffer of new bytes. (Twice the largest chunk measured no
 * faster and costs 60% more memory.)
 */
export function pipelineBufferSize(params: ChunkParams): number {
  return params.max + Math.max(1, Math.floor(params.max / 4));
}

/** Buffers in the pool unless told otherwise: enough to keep every Worker busy. */
export function defaultBufferCount(threads: number): number {
  return threads + 2;
}

interface Batch {
  /** Offset in the stream of the buffer's first byte. */
  readonly offset: number;
  /** Ends of the buffer's chunks; the first starts at 0. */
  readonly cuts: Uint32Array<ArrayBuffer>;
  readonly hashed: Promise<ChunkDigests>;
}

/** Chunks and hashes streams on `pool`; one stream at a time. */
export class ChunkPipeline {
  readonly params: ChunkParams;
  readonly #pool: HashPool;
  readonly #buffers: BufferPool;
  #streamFailure: unknown;
  #streaming = false;

  constructor(
    pool: HashPool,
    params: ChunkParams,
    options: { bufferCount?: number; bufferSize?: number } = {},
  ) {
    const size = options.bufferSize ?? pipelineBufferSize(params);
    if (size <= params.max) {
      throw new RangeError(
        `pipeline buffers must be larger than the largest chunk (${params.max})`,
      );
    }
    this.params = params;
    this.#pool = pool;
    this.#buffers = new BufferPool(options.bufferCount ?? defaultBufferCount(pool.threads), size);
  }

  /** The buffer pool (its size and how many buffers were allocated). */
  get buffers(): BufferPool {
    return this.#buffers;
  }

  /**
   * Yields the chunks of `source` in order, each with its BLAKE3 digest. `data`
   * is valid only until the next iteration; `digest` may be kept. With
   * `hashStream`, the whole stream is hashed too: get it from `streamDigest()`
   * once the iteration has ended. `identity` says what `digest` is (default
   * BLAKE3).
   */
  async *chunks(
    source: ByteSource,
    options: { hashStream?: boolean; identity?: ChunkIdentity } = {},
  ): AsyncGenerator<HashedChunk> {
    const hashStream = options.hashStream ?? false;
    const kernels = options.identity === "fingerprint" ? filterKernels() : undefined;
    this.#streaming = hashStream;
    this.#streamFailure = undefined;
    const queue = new BatchQueue();
    let stopped = false;
    const producing = this.#produce(source, queue, () => stopped, kernels).then(
      () => queue.end(),
      (err) => queue.fail(this.#streamFailure ?? err),
    );
    try {
      while (true) {
        const batch = await queue.take();
        if (batch === undefined) break;
        const { buffer, digests } = await batch.hashed;
        const bytes = new Uint8Array(buffer);
        let start = 0;
        for (let i = 0; i < batch.cuts.length; i++) {
          const end = batch.cuts[i];
          yield {
            offset: batch.offset + start,
            data: bytes.subarray(start, end),
            digest: digests.subarray(i * DIGEST_LENGTH, (i + 1) * DIGEST_LENGTH),
          };
          start = end;
        }
        if (hashStream) {
          this.#pool.streamUpdate(buffer, start).then(
            (back) => this.#buffers.release(back),
            (err) => {
              this.#streamFailure ??= err;
              this.#buffers.cancel(); // the buffer is lost: wake the reader if it waits for one
            },
          );
        } else {
          this.#buffers.release(buffer);
        }
      }
    } finally {
      stopped = true;
      if (!queue.finished) this.#buffers.cancel(); // wake a reader waiting for a buffer
      await producing; // no read may outlive the iteration: the caller closes the source next
    }
  }

  /** The BLAKE3 of the stream last iterated with `hashStream`. */
  async streamDigest(): Promise<Uint8Array> {
    if (!this.#streaming) throw new Error("the last stream was not hashed as a whole");
    const digest = await this.#pool.streamDigest(); // answered after every earlier update
    if (this.#streamFailure !== undefined) throw this.#streamFailure;
    return digest;
  }

  /** Stage 1: fill buffers, find cuts, hand each buffer to a Worker. */
  async #produce(
    source: ByteSource,
    queue: BatchQueue,
    stopped: () => boolean,
    kernels: FilterKernels | undefined,
  ): Promise<void> {
    const params = this.params;
    const masks = chunkMasks(params.avg);
    let buf = new Uint8Array(await this.#buffers.acquire());
    let filled = 0;
    let offset = 0;
    // How far the gear loop got in the incomplete chunk carried over from the
    // previous buffer: its bytes are not scanned twice.
    const scan: CutScan = { scanned: 0, fp: 0 };
    while (!stopped()) {
      let eof = false;
      while (filled < buf.length) {
        const n = await source.read(buf.subarray(filled));
        if (n === null) {
          eof = true;
          break;
        }
        if (n === 0) throw new Error("byte source returned 0 bytes without ending");
        filled += n;
      }
      // A cut is certain when the input ended, when it came before the bytes ran
      // out, or when max bytes were there to look at; otherwise carry the bytes over.
      const cuts: number[] = [];
      let pos = 0;
      while (pos < filled) {
        const len = findCut(buf, pos, filled, params, masks, scan);
        if (!eof && len === filled - pos && len < params.max) break; // scan: where it got
        pos += len;
        cuts.push(pos);
        scan.scanned = 0; // the next chunk starts afresh
        scan.fp = 0;
      }
      let next: Uint8Array<ArrayBuffer> | undefined;
      if (!eof) {
        next = new Uint8Array(await this.#buffers.acquire());
        next.set(buf.subarray(pos, filled));
      }
      if (cuts.length > 0) {
        const cutArray = Uint32Array.from(cuts);
        const hashed = kernels
          ? Promise.resolve({ buffer: buf.buffer, digests: fingerprints(kernels, buf, cutArray) })
          : this.#pool.hashChunks(buf.buffer, cutArray);
        hashed.catch(() => {}); // handled by the consumer; never an unhandled rejection
        queue.push({ offset, cuts: cutArray, hashed });
        offset += pos;
      } else {
        this.#buffers.release(buf.buffer);
      }
      if (next === undefined) return;
      buf = next;
      filled -= pos;
    }
  }
}

/** The fingerprint of each chunk of `bytes` that ends at `cuts`, in a digest's 32 bytes each. */
function fingerprints(
  kernels: FilterKernels,
  bytes: Uint8Array,
  cuts: Uint32Array,
): Uint8Array {
  const digests = new Uint8Array(cuts.length * DIGEST_LENGTH);
  let start = 0;
  for (let i = 0; i < cuts.length; i++) {
    kernels.fingerprint(bytes.subarray(start, cuts[i]), digests, i * DIGEST_LENGTH);
    start = cuts[i];
  }
  return digests;
}

/** Batches in order from the producer to the consumer; bounded by the buffer pool. */
class BatchQueue {
  readonly #items: Batch[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  #failure: unknown;
  #failed = false;

  /** Whether the producer has finished (ended or failed). */
  get finished(): boolean {
    return this.#ended || this.#failed;
  }

  push(batch: Batch): void {
    this.#items.push(batch);
    this.#wake();
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  fail(err: unknown): void {
    this.#failed = true;
    this.#failure = err;
    this.#wake();
  }

  /** The next batch, or undefined at the end; throws the producer's error after its batches. */
  async take(): Promise<Batch | undefined> {
    while (true) {
      const item = this.#items.shift();
      if (item) return item;
      if (this.#failed) throw this.#failure;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }
}
