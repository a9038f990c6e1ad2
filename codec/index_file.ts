/**
 * Writing and reading signature files (format in `signature_format.ts`): a
 * file's chunk list, made once per stored version so that encoding a new
 * version against it costs one pass over the new file only.
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
  decodeSignatureHeader,
  encodeSignatureEntry,
  encodeSignatureHeader,
  MalformedSignatureError,
  SIGNATURE_ENTRY_SIZE,
  SIGNATURE_HEADER_SIZE,
  SIGNATURE_TRAILER_SIZE,
  type SignatureHeader,
} from "./signature_format.ts";

/** A signature read back: its header and the chunk index it describes. */
export interface Signature {
  readonly header: SignatureHeader;
  readonly index: ChunkIndex;
}

/** What `writeSignature` produced. */
export interface SignatureSummary {
  readonly fileSize: number;
  readonly chunkCount: number;
  readonly signatureSize: number;
  readonly fileBlake3: string;
  readonly chunk: ChunkParams;
  readonly elapsedMs: number;
}

/** The modification time of a file in ms since the epoch, or -1 if unknown. */
export function mtimeMs(info: Deno.FileInfo): number {
  return info.mtime ? info.mtime.getTime() : -1;
}

/** Chunks and hashes `filePath` and writes its signature to `signaturePath`. */
export async function writeSignature(
  filePath: string,
  signaturePath: string,
  options: { chunk?: ChunkParams; onProgress?: ProgressCallback; threads?: number } = {},
): Promise<SignatureSummary> {
  const params = validateChunkParams(options.chunk ?? DEFAULT_CHUNK_PARAMS);
  const started = performance.now();
  const input = await openInput(filePath, "file");
  let out: AtomicFile | undefined;
  let pool: HashPool | undefined;
  try {
    const info = await input.file.stat();
    out = await AtomicFile.create(signaturePath, "signature");
    pool = await HashPool.start(options.threads ?? defaultThreads());
    const pipeline = new ChunkPipeline(pool, params);
    const writer = new BufferedWriter(out.file);
    await writer.write(new Uint8Array(SIGNATURE_HEADER_SIZE)); // header written last
    const trailerHasher = createHasher(); // entries, then the header
    const entry = new Uint8Array(SIGNATURE_ENTRY_SIZE);
    let count = 0;
    let size = 0;
    let fileDigest: Uint8Array;
    try {
      for await (const chunk of pipeline.chunks(input.file, { hashStream: true })) {
        encodeSignatureEntry(entry, 0, chunk.data.length, chunk.digest);
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
    const header = encodeSignatureHeader({
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
      throw ioError("write signature", signaturePath, err);
    }
    const signatureSize = writer.position;
    await out.commit();
    return {
      fileSize: size,
      chunkCount: count,
      signatureSize,
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

/** Reads and checks a signature, returning its header and chunk index. */
export async function readSignature(path: string): Promise<Signature> {
  const sig = await openInput(path, "signature");
  try {
    const headerBytes = new Uint8Array(SIGNATURE_HEADER_SIZE);
    const got = await readFull(sig.file, headerBytes);
    const header = decodeSignatureHeader(headerBytes.subarray(0, got), path);
    const expected = SIGNATURE_HEADER_SIZE + SIGNATURE_ENTRY_SIZE * header.chunkCount +
      SIGNATURE_TRAILER_SIZE;
    if (sig.size !== expected) {
      throw new MalformedSignatureError(
        `signature "${path}" is ${sig.size} bytes; its header (${header.chunkCount} chunks) says ${expected}`,
      );
    }
    try {
      validateChunkParams(header.chunk);
    } catch {
      throw new MalformedSignatureError(`signature "${path}" has invalid chunk sizes`);
    }
    const index = new ChunkIndex(header.chunkCount);
    const hasher = createHasher();
    const block = new Uint8Array(SIGNATURE_ENTRY_SIZE * 4096);
    let offset = 0;
    for (let left = header.chunkCount; left > 0;) {
      const n = Math.min(left, 4096);
      const bytes = block.subarray(0, n * SIGNATURE_ENTRY_SIZE);
      if ((await readFull(sig.file, bytes)) !== bytes.length) {
        throw new MalformedSignatureError(`signature "${path}" is truncated`);
      }
      hasher.update(bytes);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let e = 0; e < n; e++) {
        const at = e * SIGNATURE_ENTRY_SIZE;
        const length = view.getUint32(at, true);
        if (length === 0 || offset + length > header.fileSize) {
          throw new MalformedSignatureError(
            `signature "${path}": chunk ${header.chunkCount - left + e} lies outside the file`,
          );
        }
        index.add(offset, length, bytes.subarray(at + 4, at + SIGNATURE_ENTRY_SIZE));
        offset += length;
      }
      left -= n;
    }
    if (offset !== header.fileSize) {
      throw new MalformedSignatureError(
        `signature "${path}": chunks cover ${offset} bytes, the header says ${header.fileSize}`,
      );
    }
    hasher.update(headerBytes);
    const trailer = new Uint8Array(SIGNATURE_TRAILER_SIZE);
    await readFull(sig.file, trailer);
    if (!digestsEqual(trailer, hasher.digest())) {
      throw new MalformedSignatureError(`signature "${path}" is damaged (its checksum differs)`);
    }
    return { header, index };
  } catch (err) {
    if (err instanceof PoolboyError) throw err;
    throw ioError("read signature", path, err);
  } finally {
    sig.file.close();
  }
}
