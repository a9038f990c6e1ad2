/**
 * Encodes `base` + `target` into a patch (format v4 by default, v3, v2 or v1 with `format`), streaming.
 *
 * Pass 1 chunks and hashes the base into a `ChunkIndex`, or reads it from the
 * base's chunk index file (`index_file.ts`) after checking the base's size and
 * mtime against it, so that only the target is read. Pass 2 chunks the
 * target; each chunk whose BLAKE3 is in the index becomes a COPY (preferring
 * the base chunk right after the previous match, so runs merge into one COPY),
 * When the encoder reads the base itself, chunks are identified instead by a
 * fast 128-bit fingerprint (`ChunkIdentity` "fingerprint") and each match is
 * compared byte for byte with the base (`chunk_verify.ts`) before it becomes a
 * COPY: two BLAKE3 passes fewer, the same patch (the whole-stream BLAKE3s of
 * base and target in the header stay).
 *
 * any other a LITERAL (v2: equal runs as COPYs, then per piece the smallest of
 * a LITERAL, a filtered zstd ZLITERAL or a DELTA against the aligned base
 * range, `literal_coder.ts`); the whole target is hashed on the way for the
 * header (v2 and later: the base too). v3's and v4's headers also carry sampled base
 * ranges with their BLAKE3 (`base_samples.ts`; v4 the first 8 bytes), read with positional reads
 * from the base after pass 1 (also when its index file stands in for pass 1).
 * Both passes run on the Worker pipeline (`chunk_pipeline.ts`): the main thread
 * reads, cuts and writes ops while Workers hash chunks and the whole target.
 * The patch is written beside its destination and renamed into place only when
 * complete. Memory: the Workers, the pipeline's buffers (by default threads + 2
 * of 1.25 × max chunk; v2 one fewer) shared by both passes, one 1 MiB write
 * buffer, the index, and v2's literal coder (its buffers and one zstd context)
 * and match finder (`match_finder.ts`: its table, fed by pass 1 from the
 * chunks already in memory, at most 1 MiB below 4 GiB of base; none with a
 * base index file, since the base is then not read).
 *
 * @module
 */

import { ChunkIndex } from "./chunk_index.ts";
import { type ChunkIdentity, ChunkPipeline, defaultBufferCount } from "./chunk_pipeline.ts";
import { BaseComparer, verifiedMatch } from "./chunk_verify.ts";
import { toHex } from "../kernel/blake3.ts";
import { defaultThreads, HashPool } from "./hash_pool.ts";
import { AtomicFile } from "../kernel/atomic_file.ts";
import { IoError, ioError, VerificationError } from "../kernel/errors.ts";
import { type ChunkIndexFile, mtimeMs, readIndexFile } from "./index_file.ts";
import { type ChunkParams, DEFAULT_CHUNK_PARAMS, validateChunkParams } from "./fastcdc.ts";
import { BufferedWriter, openInput } from "../kernel/file_io.ts";
import {
  type BaseSample,
  encodeHeaderV1,
  encodeHeaderV2,
  encodeHeaderV3,
  encodeHeaderV4,
  headerSize,
  SAMPLE_DIGEST_V4_SIZE,
  VERSION_3,
  VERSION_4,
} from "./patch_format.ts";
import { sampleRanges, takeSamples } from "./base_samples.ts";
import { LiteralCoder, opCostsFor } from "./literal_coder.ts";
import { MatchFinder } from "./match_finder.ts";
import { type Alignment, alignTensors, modelLayout, type TensorRange } from "./tensor_layout.ts";
import { type OpStats, OpWriter } from "./op_writer.ts";
import type { ProgressCallback } from "../kernel/progress.ts";

/** Options of `encodeFile`. */
export interface EncodeOptions {
  /** Chunk sizes; with `baseIndex` they come from the index file instead. */
  readonly chunk?: ChunkParams;
  /**
   * Path of the base's chunk index file (`writeIndexFile`; an old `.sig` file
   * works too), used instead of reading the base.
   */
  readonly baseIndex?: string;
  readonly onProgress?: ProgressCallback;
  /** Hashing Workers (default: format 1 one per core but one, else `encodeThreads`; 0: the main thread hashes). */
  readonly threads?: number;
  /** Buffers in the pipeline's pool (default: threads + 2; formats 2-4 without a Worker, 2). */
  readonly bufferCount?: number;
  /** Patch format to write (default 4). */
  readonly format?: 1 | 2 | 3 | 4;
  /**
   * Tensor layouts to use instead of reading them from the files (formats 2 and 3):
   * e.g. a side file of ONNX external data, laid out by its model
   * (`externalDataLayout` in onnx_layout.ts). A side left out is read as usual.
   */
  readonly layouts?: { readonly base?: TensorRange[]; readonly target?: TensorRange[] };
}

/** What an encode produced. */
export interface EncodeSummary extends OpStats {
  readonly baseSize: number;
  readonly targetSize: number;
  readonly patchSize: number;
  readonly baseChunks: number;
  readonly targetChunks: number;
  readonly targetBlake3: string;
  readonly chunk: ChunkParams;
  /** Whether the base's chunks came from its index file instead of a pass over the base. */
  readonly usedBaseIndex: boolean;
  /** Hashing Workers used. */
  readonly threads: number;
  readonly elapsedMs: number;
}

/**
 * Hashing Workers of a format 2-4 encode of a `targetSize`-byte file unless
 * told otherwise: one for a target of at least `WORKER_MIN_TARGET` where
 * there is a second core, else none (the main thread hashes). The Worker
 * takes the BLAKE3 of the two whole streams (30 % of a one-thread encode)
 * while the main thread cuts, fingerprints, matches and codes; with three
 * pipeline buffers (one filling, one being coded, one being hashed) the two
 * overlap. Measured on this 2-core machine at 4 GiB fp32 and bf16: 153-158
 * MB/s at 95.8-98.2 MB, against 101-111 MB/s at 90-92 MB with none (with two
 * buffers the Worker bought nothing: the reader waited for the buffer it was
 * hashing).
 * The Worker and its buffer cost ~12 MB whatever the size. Where the target
 * has quantized GGUF tensors (`recordTensors`: record ops, whose coding holds
 * the most state) that went over budget: 102.3 MB at 320 MiB, 100.9 MB at
 * 16 MiB; so those, and targets under `WORKER_MIN_TARGET` (an encode of
 * seconds at most), keep the memory instead. Format 1 keeps `defaultThreads()`.
 */
export function encodeThreads(targetSize: number, recordTensors: boolean): number {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return cores > 1 && targetSize >= WORKER_MIN_TARGET && !recordTensors ? 1 : 0;
}

/** The smallest target `encodeThreads` gives a hashing Worker: 256 MiB. */
export const WORKER_MIN_TARGET = 256 * 1024 * 1024;

/**
 * The literal coder's largest piece when a hashing Worker runs (else
 * `MAX_OP_RAW`, 1 MiB): its four scratch buffers, its held chunk and its zstd
 * context shrink by ~3.5 MB, for the Worker's room.
 */
export const WORKER_PIECE = 512 * 1024;

/** The largest number of chunks the index makes room for up front. */
const MAX_INDEX_PRESIZE = 1 << 22;

/** Chunks and hashes a whole file into an index. */
export async function indexFile(
  file: Deno.FsFile,
  pipeline: ChunkPipeline,
  onBytes?: (bytes: number) => void,
  options: { hashStream?: boolean; matches?: MatchFinder; identity?: ChunkIdentity } = {},
): Promise<ChunkIndex> {
  const params = pipeline.params;
  // Room for the most chunks the file can have (all but the last are >= min), up
  // to 4M chunks (176 MB of address space): the arrays then never move, and
  // pages not yet used cost no memory. Past that the index grows by doubling.
  const mostChunks = Math.ceil((await file.stat()).size / params.min) + 1;
  const index = new ChunkIndex(Math.min(mostChunks, MAX_INDEX_PRESIZE));
  const { hashStream, identity } = options;
  for await (const chunk of pipeline.chunks(file, { hashStream, identity })) {
    index.add(chunk.offset, chunk.data.length, chunk.digest);
    options.matches?.feed(chunk.offset, chunk.data);
    onBytes?.(chunk.offset + chunk.data.length);
  }
  return index;
}

/** Encodes the patch that turns `basePath` into `targetPath`, written to `patchPath`. */
export async function encodeFile(
  basePath: string,
  targetPath: string,
  patchPath: string,
  options: EncodeOptions = {},
): Promise<EncodeSummary> {
  const started = performance.now();
  // Bad chunk sizes are a usage error, reported before any file is touched.
  const requested = options.baseIndex === undefined
    ? validateChunkParams(options.chunk ?? DEFAULT_CHUNK_PARAMS)
    : undefined;
  const base = await openInput(basePath, "base");
  let target: Awaited<ReturnType<typeof openInput>> | undefined;
  let out: AtomicFile | undefined;
  let pool: HashPool | undefined;
  let literals: LiteralCoder | undefined;
  try {
    const baseIndex = options.baseIndex === undefined
      ? undefined
      : await indexFileOfBase(options.baseIndex, basePath, await base.file.stat());
    const params = baseIndex ? baseIndex.header.chunk : requested!;
    target = await openInput(targetPath, "target");
    // Progress counts the bytes read: the base (unless its index file stands in for it), then the target.
    const baseWork = baseIndex ? 0 : base.size;
    const total = baseWork + target.size;
    const progress = options.onProgress;
    out = await AtomicFile.create(patchPath, "patch"); // before the long pass: a bad -o fails at once
    const format = options.format ?? VERSION_4;
    const layouts = format >= 2
      ? tensorLayouts(base.file, base.size, target, options.layouts)
      : undefined;
    const recordOps = format >= 3;
    pool = await HashPool.start(
      options.threads ?? (format === 1 ? defaultThreads() : encodeThreads(
        target.size,
        recordOps && layouts!.tensors.some((t) => t.records !== undefined),
      )),
    );
    // Without a Worker, formats 2-4 are bound by the main thread, not by reading
    // ahead: one buffer fewer keeps the literal coder's state in budget. With
    // one, the third buffer is what lets hashing overlap coding (encodeThreads).
    const bufferCount = options.bufferCount ??
      (format >= 2 && pool.threads === 0 ? 2 : defaultBufferCount(pool.threads));
    const pipeline = new ChunkPipeline(pool, params, { bufferCount });
    let index: ChunkIndex;
    let baseDigest: Uint8Array | undefined;
    // v2's global match finder is fed by the base pass; with an index file
    // there is no base pass, and no finder (reading the whole base for it
    // would undo what the index file is for).
    const matches = format >= 2 && !baseIndex ? new MatchFinder(base.size) : undefined;
    // With an index file the base's chunks are known by BLAKE3 (what the file
    // stores), so the target's are hashed alike; else both sides are
    // fingerprinted and every match is checked against the base's bytes.
    const identity: ChunkIdentity = baseIndex ? "blake3" : "fingerprint";
    const comparer = baseIndex ? undefined : new BaseComparer(base.file, base.size);
    if (baseIndex) {
      index = baseIndex.index;
      baseDigest = baseIndex.header.fileDigest;
    } else {
      try {
        index = await indexFile(base.file, pipeline, (done) => progress?.(done, total), {
          hashStream: format >= 2,
          matches,
          identity,
        });
        if (format >= 2) baseDigest = await pipeline.streamDigest();
      } catch (err) {
        throw ioError("read base", basePath, err);
      }
    }

    const samples: BaseSample[] = format >= VERSION_3
      ? takeSamples(
        base.file,
        basePath,
        sampleRanges(base.size),
        format === VERSION_4 ? SAMPLE_DIGEST_V4_SIZE : undefined,
      )
      : [];
    const writer = new BufferedWriter(out.file);
    await writer.write(new Uint8Array(headerSize(format, samples.length))); // header written last
    const ops = new OpWriter(writer, format);
    literals = format >= 2
      ? new LiteralCoder(base.file, base.size, {
        ...layouts!,
        maxChunk: params.max,
        // A hashing Worker holds ~12 MB: the coder's buffers shrink to make room.
        maxPiece: pool.threads > 0 ? WORKER_PIECE : undefined,
        recordOps,
        matches,
        costs: opCostsFor(format),
      })
      : undefined;
    let nextBaseChunk = -1;
    let targetChunks = 0;
    let targetRead = 0;
    let targetDigest: Uint8Array;
    try {
      for await (const chunk of pipeline.chunks(target.file, { hashStream: true, identity })) {
        targetChunks++;
        const match = verifiedMatch(index, nextBaseChunk, chunk, comparer);
        if (match) {
          await literals?.matched(ops, chunk.offset, match.offset);
          await ops.copy(match.offset, match.length);
          nextBaseChunk = match.index + 1;
        } else {
          if (literals) await literals.unmatched(ops, chunk.offset, chunk.data);
          else await ops.literal(chunk.data);
          nextBaseChunk = -1;
        }
        targetRead = chunk.offset + chunk.data.length;
        progress?.(baseWork + targetRead, total);
      }
      await literals?.finish(ops);
      await ops.finish();
      targetDigest = await pipeline.streamDigest();
    } catch (err) {
      throw ioError("encode", patchPath, err);
    }
    if (targetRead !== target.size) {
      throw new IoError(
        `target "${targetPath}" changed while it was read (${targetRead} bytes read, ${target.size} expected)`,
      );
    }
    try {
      const header = { baseSize: base.size, targetSize: target.size, targetDigest };
      await writer.overwrite(
        0,
        format === VERSION_4
          ? encodeHeaderV4({ ...header, baseDigest: baseDigest!, samples })
          : format === VERSION_3
          ? encodeHeaderV3({ ...header, baseDigest: baseDigest!, samples })
          : format === 2
          ? encodeHeaderV2({ ...header, baseDigest: baseDigest! })
          : encodeHeaderV1(header),
      );
      await writer.flush();
    } catch (err) {
      throw ioError("write patch", patchPath, err);
    }
    const patchSize = writer.position;
    await out.commit();
    return {
      ...ops.stats,
      baseSize: base.size,
      targetSize: target.size,
      patchSize,
      baseChunks: index.size,
      targetChunks,
      targetBlake3: toHex(targetDigest),
      chunk: params,
      usedBaseIndex: baseIndex !== undefined,
      threads: pool.threads,
      elapsedMs: performance.now() - started,
    };
  } catch (err) {
    await out?.abort();
    throw err;
  } finally {
    pool?.close();
    literals?.close();
    base.file.close();
    target?.file.close();
  }
}

/**
 * Reads the base's chunk index file and checks that it still describes the
 * base: same size and, where both are known, same modification time. (The
 * base's bytes are not read: that is the point of an index file. Its BLAKE3 is
 * in the index file for whoever wants to check it.)
 */
async function indexFileOfBase(
  indexPath: string,
  basePath: string,
  baseInfo: Deno.FileInfo,
): Promise<ChunkIndexFile> {
  const stored = await readIndexFile(indexPath);
  const { fileSize, fileMtimeMs } = stored.header;
  if (baseInfo.size !== fileSize) {
    throw new VerificationError(
      `index file "${indexPath}" describes a ${fileSize}-byte file, but base "${basePath}" is ${baseInfo.size} bytes; make a new one with poolboy index`,
    );
  }
  const baseMtime = mtimeMs(baseInfo);
  if (fileMtimeMs >= 0 && baseMtime >= 0 && fileMtimeMs !== baseMtime) {
    throw new VerificationError(
      `base "${basePath}" was modified after index file "${indexPath}" was made (mtime differs); make a new one with poolboy index`,
    );
  }
  return stored;
}

/**
 * Tensors shorter than this are left out of the layouts the coder sees: scalars
 * and shapes (an ONNX model has hundreds of 8-byte constants) are worth no
 * piece of their own, and cutting at their edges splits the runs of equal bytes
 * around them (measured on Silero VAD v5 and PP-OCRv4 fine-tunes whose offsets
 * moved: 1-4 % larger patches with them).
 */
export const MIN_LAYOUT_TENSOR = 64;

/**
 * The target's tensors (for element widths and piece edges) and the same-named
 * tensors of base and target (for DELTA alignment), where poolboy reads the
 * files' layouts or they are `given`; tensors under `MIN_LAYOUT_TENSOR` bytes
 * are left out.
 */
function tensorLayouts(
  base: Deno.FsFile,
  baseSize: number,
  target: { file: Deno.FsFile; size: number },
  given: EncodeOptions["layouts"] = {},
): { tensors: TensorRange[]; alignments: Alignment[] } {
  const worthIt = (layout: TensorRange[] | null) =>
    layout?.filter((t) => t.end - t.start >= MIN_LAYOUT_TENSOR) ?? null;
  const baseLayout = worthIt(given.base ?? modelLayout(base, baseSize));
  const targetLayout = worthIt(given.target ?? modelLayout(target.file, target.size));
  // The passes read from the start: the base's before the target's.
  base.seekSync(0, Deno.SeekMode.Start);
  target.file.seekSync(0, Deno.SeekMode.Start);
  return {
    tensors: targetLayout ?? [],
    alignments: baseLayout && targetLayout ? alignTensors(baseLayout, targetLayout) : [],
  };
}
