/**
 * BLAKE3 of a whole file: the main thread reads into a few fixed buffers while
 * a Worker hashes the previous ones, so reading and hashing overlap.
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import { BufferPool } from "./buffer_pool.ts";
import { ioError } from "../kernel/errors.ts";
import { openInput, readFull } from "../kernel/file_io.ts";
import { HashPool } from "./hash_pool.ts";
import type { ProgressCallback } from "../kernel/progress.ts";

/** Size of each read buffer. */
const HASH_BUFFER_SIZE = 4 << 20;
/** Read buffers: one filling, the others queued for or in the Worker. */
const HASH_BUFFERS = 3;

/** The lower-case hex BLAKE3 digest of the file at `path`. */
export async function hashFile(path: string, onProgress?: ProgressCallback): Promise<string> {
  const { file, size } = await openInput(path, "file");
  let pool: HashPool | undefined;
  try {
    pool = await HashPool.start(1);
    const buffers = new BufferPool(HASH_BUFFERS, HASH_BUFFER_SIZE);
    let failure: unknown;
    let done = 0;
    while (true) {
      const buffer = await buffers.acquire().catch((err) => Promise.reject(failure ?? err));
      const n = await readFull(file, new Uint8Array(buffer));
      if (n > 0) {
        pool.streamUpdate(buffer, n).then((back) => buffers.release(back), (err) => {
          failure ??= err;
          buffers.cancel();
        });
        done += n;
        onProgress?.(done, size);
      }
      if (n < buffer.byteLength) break;
    }
    const digest = await pool.streamDigest();
    if (failure !== undefined) throw failure;
    return toHex(digest);
  } catch (err) {
    throw ioError("read", path, err);
  } finally {
    pool?.close();
    file.close();
  }
}
