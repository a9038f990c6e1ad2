/**
 * Streams a file as FastCDC chunks through one fixed buffer.
 *
 * The buffer holds at least `max` bytes ahead of every cut (unless the input
 * ends), so boundaries are exactly those of `findCut` over the whole file,
 * whatever sizes the reads return. Memory: one buffer of `bufferSize` bytes
 * (at least `2 * max`), reused; the yielded `data` is a view into it that is
 * valid only until the next iteration.
 *
 * @module
 */

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

/** Default buffer: 4 × the largest chunk, so refills move at most a quarter of it. */
export function defaultChunkBufferSize(params: ChunkParams): number {
  return Math.max(4 * params.max, 1 << 20);
}

/** Yields the chunks of `source` in order. `data` is reused: copy it to keep it. */
export async function* chunkStream(
  source: ByteSource,
  params: ChunkParams,
  bufferSize: number = defaultChunkBufferSize(params),
): AsyncGenerator<Chunk> {
  const buf = new Uint8Array(Math.max(bufferSize, 2 * params.max));
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
