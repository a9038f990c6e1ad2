/**
 * Writing and reading chunk index files (format in `index_format.ts`; made by
 * `poolboy index`, formerly called signatures): a file's chunk list, made once
 * per stored version so that encoding a new version against it costs one pass
 * over the new file only. Reading one gives the in-memory `ChunkIndex`
 * (`chunk_index.ts`) the encoder looks chunks up in.
 *
 * Writing chunks and hashes on the Worker pipeline (`chunk_pipeline.ts`);
 * both directions stream through fixed buffers; reading builds the
 * `ChunkIndex` the encoder uses and checks the trailer before returning it.
 *
 * @module
 */

import { AtomicFile } from "../kernel/atomic_file.ts";
import { createHasher, DIGEST_LENGTH, digestsEqual, toHex } from "../kernel/blake3.ts";
import { ChunkIndex } from "./chunk_index.ts";
import { ChunkPipeline } from "./chunk_pipeline.ts";
import { defaultThreads, HashPool } from "./hash_pool.ts";
import { ioError, PoolboyError } from "../kernel/errors.ts";
import { type ChunkParams, DEFAULT_CHUNK_PARAMS, validateChunkParams } from "./fastcdc.ts";
import { BufferedWriter, openInput, readFull } from "../kernel/file_io.ts";
import type { ProgressCallback } from "../kernel/progress.ts";
import {
  decodeIndexFileHeader,
  encodeIndexFileEntry,
  encodeIndexFileHeader,
  INDEX_FILE_ENTRY_SIZE,
  INDEX_FILE_HEADER_SIZE,
  INDEX_FILE_TRAILER_SIZE,
  type IndexFileHeader,
  MalformedIndexFileError,
} from "./index_format.ts";

/** An index file read back: its header and the chunk index it describes. */
export interface ChunkIndexFile {
  readonly header: IndexFileHeader;
  readonly index: ChunkIndex;
}

/** What `writeIndexFile` produced. */
export interface IndexFileSummary {
  readonly fileSize: number;
  readonly chunkCount: number;
  /** Size of the index file written, in bytes. */
  readonly indexSize: number;
  readonly fileBlake3: string;
  readonly chunk: ChunkParams;
  readonly elapsedMs: number;
}

/** The modification time of a file in ms since the epoch, or -1 if unknown. */
export function mtimeMs(info: Deno.FileInfo): number {
  return info.mtime ? info.mtime.getTime() : -1;
}

/** Chunks and hashes `filePath` and writes its chunk index file to `indexPath`. */
export async function writeIndexFile(
  filePath: string,
  indexPath: string,
  options: { chunk?: ChunkParams; onProgress?: ProgressCallback; threads?: number } = {},
): Promise<IndexFileSummary> {
  const params = validateChunkParams(options.chunk ?? DEFAULT_CHUNK_PARAMS);
  const started = performance.now();
  const input = await openInput(filePath, "file");
  let out: AtomicFile | undefined;
  let pool: HashPool | undefined;
  try {
    const info = await input.file.stat();
    out = await AtomicFile.create(indexPath, "index file");
    pool = await HashPool.start(options.threads ?? defaultThreads());
    const pipeline = new ChunkPipeline(pool, params);
    const writer = new BufferedWriter(out.file);
    await writer.write(new Uint8Array(INDEX_FILE_HEADER_SIZE)); // header written last
    const trailerHasher = createHasher(); // entries, then the header
    const entry = new Uint8Array(INDEX_FILE_ENTRY_SIZE);
    let count = 0;
    let size = 0;
    let fileDigest: Uint8Array;
    try {
      for await (const chunk of pipeline.chunks(input.file, { hashStream: true })) {
        encodeIndexFileEntry(entry, 0, chunk.data.length, chunk.digest);
        trailerHasher.update(entry);
        await writer.write(entry);
        count++;
        size += chunk.data.length;
        options.onProgress?.(size, input.size);
      }
      fileDigest = await pipeline.streamDigest();
    } catch (err) {
      throw ioError("read", filePath, err);
    }
    const header = encodeIndexFileHeader({
      chunk: params,
      fileSize: size,
      fileMtimeMs: mtimeMs(info),
      chunkCount: count,
      fileDigest,
    });
    trailerHasher.update(header);
    try {
      await writer.write(trailerHasher.digest());
      await writer.overwrite(0, header);
      await writer.flush();
    } catch (err) {
      throw ioError("write index file", indexPath, err);
    }
    const indexSize = writer.position;
    await out.commit();
    return {
      fileSize: size,
      chunkCount: count,
      indexSize,
      fileBlake3: toHex(header.subarray(48, 48 + DIGEST_LENGTH)),
      chunk: params,
      elapsedMs: performance.now() - started,
    };
  } catch (err) {
    await out?.abort();
    throw err;
  } finally {
    pool?.close();
    input.file.close();
  }
}

/** Reads and checks an index file, returning its header and chunk index. */
export async function readIndexFile(path: string): Promise<ChunkIndexFile> {
  const input = await openInput(path, "index file");
  try {
    const headerBytes = new Uint8Array(INDEX_FILE_HEADER_SIZE);
    const got = await readFull(input.file, headerBytes);
    const header = decodeIndexFileHeader(headerBytes.subarray(0, got), path);
    const expected = INDEX_FILE_HEADER_SIZE + INDEX_FILE_ENTRY_SIZE * header.chunkCount +
      INDEX_FILE_TRAILER_SIZE;
    if (input.size !== expected) {
      throw new MalformedIndexFileError(
        `index file "${path}" is ${input.size} bytes; its header (${header.chunkCount} chunks) says ${expected}`,
      );
    }
    try {
      validateChunkParams(header.chunk);
    } catch {
      throw new MalformedIndexFileError(`index file "${path}" has invalid chunk sizes`);
    }
    const index = new ChunkIndex(header.chunkCount);
    const hasher = createHasher();
    const block = new Uint8Array(INDEX_FILE_ENTRY_SIZE * 4096);
    let offset = 0;
    for (let left = header.chunkCount; left > 0;) {
      const n = Math.min(left, 4096);
      const bytes = block.subarray(0, n * INDEX_FILE_ENTRY_SIZE);
      if ((await readFull(input.file, bytes)) !== bytes.length) {
        throw new MalformedIndexFileError(`index file "${path}" is truncated`);
      }
      hasher.update(bytes);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let e = 0; e < n; e++) {
        const at = e * INDEX_FILE_ENTRY_SIZE;
        const length = view.getUint32(at, true);
        if (length === 0 || offset + length > header.fileSize) {
          throw new MalformedIndexFileError(
            `index file "${path}": chunk ${header.chunkCount - left + e} lies outside the file`,
          );
        }
        index.add(offset, length, bytes.subarray(at + 4, at + INDEX_FILE_ENTRY_SIZE));
        offset += length;
      }
      left -= n;
    }
    if (offset !== header.fileSize) {
      throw new MalformedIndexFileError(
        `index file "${path}": chunks cover ${offset} bytes, the header says ${header.fileSize}`,
      );
    }
    hasher.update(headerBytes);
    const trailer = new Uint8Array(INDEX_FILE_TRAILER_SIZE);
    await readFull(input.file, trailer);
    if (!digestsEqual(trailer, hasher.digest())) {
      throw new MalformedIndexFileError(`index file "${path}" is damaged (its checksum differs)`);
    }
    return { header, index };
  } catch (err) {
    if (err instanceof PoolboyError) throw err;
    throw ioError("read index file", path, err);
  } finally {
    input.file.close();
  }
}
