/**
 * BLAKE3 of a whole file, streamed through one fixed buffer.
 *
 * @module
 */

import { createHasher, toHex } from "./blake3.ts";
import { ioError } from "./errors.ts";
import { openInput, readFull } from "./file_io.ts";
import type { ProgressCallback } from "./progress.ts";

/** The lower-case hex BLAKE3 digest of the file at `path`. */
export async function hashFile(path: string, onProgress?: ProgressCallback): Promise<string> {
  const { file, size } = await openInput(path, "file");
  try {
    const hasher = createHasher();
    const buf = new Uint8Array(4 << 20);
    let done = 0;
    while (true) {
      const n = await readFull(file, buf);
      if (n === 0) break;
      hasher.update(n === buf.length ? buf : buf.subarray(0, n));
      done += n;
      onProgress?.(done, size);
      if (n < buf.length) break;
    }
    return toHex(hasher.digest());
  } catch (err) {
    throw ioError("read", path, err);
  } finally {
    file.close();
  }
}
