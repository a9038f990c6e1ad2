/**
 * Streams a file as FastCDC chunks through one fixed buffer.
 *
 * The buffer holds at least `max` bytes ahead of every cut (unless the input
 * ends), so boundaries are exactly those of `findCut` over the whole file,
 * whatever sizes the reads return. Memory: one buffer of at least `2 * max`
 * bytes, which the caller may pass in to reuse across files; the yielded `data`
 * is a view into it that is valid only until the next iteration.
 *
 * @module
 */

import { createHasher } from "../kernel/blake3.ts";
import { chunkMasks, type ChunkParams, findCut } from "./fastcdc.ts";

/** Something that reads into a buffer like `Deno.FsFile.read`. */
export interface ByteSource {
  read(buf: Uint8Array): Promise<number | null>;
}

/** One chunk: its offset in the stream and a view of its bytes. */
export interface Chunk {
  readonly offset: number;
  readonly data: Uint8Array;
}

/** The smallest buffer `chunkStream` works with: twice the largest chunk. */
export function chunkBufferSize(params: ChunkParams): number {
  return 2 * params.max;
}

/**
 * Yields the chunks of `source` in order. `data` is reused: copy it to keep it.
 * `buffer` (at least `chunkBufferSize(params)` bytes) is allocated if not given.
 */
export async function* chunkStream(
  source: ByteSource,
  params: ChunkParams,
  buffer: Uint8Array = new Uint8Array(chunkBufferSize(params)),
): AsyncGenerator<Chunk> {
  if (buffer.length < chunkBufferSize(params)) {
    throw new RangeError(`chunk buffer of ${buffer.length} bytes is below 2 * max`);
  }
  const buf = buffer;
  const masks = chunkMasks(params.avg);
  let start = 0;
  let end = 0;
  let offset = 0;
  let eof = false;
  while (true) {
    if (!eof && end - start < params.max) {
      if (start > 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      while (!eof && end < buf.length) {
        const n = await source.read(buf.subarray(end));
        if (n === null) eof = true;
        else if (n === 0) throw new Error("byte source returned 0 bytes without ending");
        else end += n;
      }
    }
    if (start === end) return;
    const len = findCut(buf, start, end, params, masks);
    yield { offset, data: buf.subarray(start, start + len) };
    start += len;
    offset += len;
  }
}

/** A chunk with its BLAKE3 digest (a fresh array, safe to keep). */
export interface HashedChunk extends Chunk {
  readonly digest: Uint8Array;
}

/**
 * `chunkStream` with each chunk's BLAKE3: the one place where chunks are hashed
 * for identity (base index, target matching, index files).
 */
export async function* hashedChunkStream(
  source: ByteSource,
  params: ChunkParams,
  buffer?: Uint8Array,
): AsyncGenerator<HashedChunk> {
  const hasher = createHasher();
  for await (const chunk of chunkStream(source, params, buffer)) {
    hasher.init();
    hasher.update(chunk.data);
    yield { offset: chunk.offset, data: chunk.data, digest: hasher.digest() };
  }
}
