/**
 * Verified blobs of one simulator process: each blob is written once to a
 * file of the process's work directory (one file per digest, whichever
 * device verified it first), and a device's blob server serves from it what
 * that device holds (`lookupFor`): the bytes a device received stay its own
 * to verify, the disk holds one copy.
 *
 * @module
 */

import { toHex } from "../../kernel/blake3.ts";
import type { BlobLocation, BlobLookup } from "../../transfer/blob_store.ts";

/** Most distinct blobs kept by one process (a run has a handful). */
const MAX_BLOBS = 64;

/** The process's verified blob files. */
export class BlobShelf {
  readonly dir: string;
  readonly #files = new Map<string, Promise<BlobLocation>>();

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Keeps `bytes` (already verified to hash to `digest`) as a file, once per digest. */
  put(digest: Uint8Array, bytes: Uint8Array): Promise<BlobLocation> {
    const hex = toHex(digest);
    let file = this.#files.get(hex);
    if (!file) {
      if (this.#files.size >= MAX_BLOBS) throw new RangeError(`more than ${MAX_BLOBS} blobs`);
      const path = `${this.dir}/${hex}`;
      file = Deno.writeFile(path, bytes).then(() => ({ path, size: bytes.length }));
      this.#files.set(hex, file);
    }
    return file;
  }

  /** What a device's blob server serves: the blobs `holds` says it holds, from the shelf. */
  lookupFor(holds: (hex: string) => boolean): BlobLookup {
    return {
      lookup: async (digest: Uint8Array) => {
        const hex = toHex(digest);
        if (!holds(hex)) return null;
        const file = this.#files.get(hex);
        return file === undefined ? null : await file;
      },
    };
  }
}
