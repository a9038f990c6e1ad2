/**
 * The control plane's lock on its data directory: an exclusive advisory lock
 * (flock) on `DATA/controlplane.lock`, held while it runs, so a second control
 * plane on the same directory is refused with an `IoError` (exit 3) naming the
 * directory and the holder's pid (written into the file). `poolboy token`
 * opens only the SQLite database and takes no lock: it works beside a running
 * control plane.
 *
 * The file is deleted when the lock is released. A process that locked the
 * file just as the holder deleted it would hold a lock on a name no longer in
 * the directory: after locking, the file's inode is compared with the name's,
 * and on a mismatch it tries again.
 *
 * @module
 */

import { describeOsError, IoError } from "../kernel/errors.ts";

/** The lock file's name under the data directory. */
export const LOCK_FILE = "controlplane.lock";

/** How often `acquire` tries again when the holder deleted the file under it. */
const ATTEMPTS = 5;

/** A held lock on a data directory. */
export class DataDirLock {
  readonly path: string;
  readonly #file: Deno.FsFile;
  #released = false;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Locks `dir` (which exists), or throws an `IoError` saying who holds it. */
  static async acquire(dir: string): Promise<DataDirLock> {
    const path = `${dir}/${LOCK_FILE}`;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      let file: Deno.FsFile;
      try {
        file = await Deno.open(path, { read: true, write: true, create: true });
      } catch (err) {
        throw new IoError(`cannot open the lock file "${path}": ${describeOsError(err)}`, {
          cause: err,
        });
      }
      let locked: boolean;
      try {
        locked = await file.tryLock(true);
      } catch (err) {
        file.close();
        throw new IoError(`cannot lock "${path}": ${describeOsError(err)}`, { cause: err });
      }
      if (!locked) {
        const holder = await holderOf(file);
        file.close();
        throw new IoError(
          `the data directory "${dir}" is in use by another control plane${
            holder === undefined ? "" : ` (pid ${holder})`
          }: stop it first, or give this one another --data`,
        );
      }
      if (!(await sameFile(file, path))) {
        file.close(); // the holder deleted it as it let go: lock the new one
        continue;
      }
      await file.truncate(0);
      await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
      return new DataDirLock(path, file);
    }
    throw new IoError(`cannot lock "${path}": it keeps being replaced`);
  }

  /** Deletes the lock file and lets go of the lock (idempotent). */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    try {
      Deno.removeSync(this.path);
    } catch {
      // Already gone: nothing to clean up.
    }
    this.#file.close(); // closing the file releases the lock
  }
}

/** The pid written in a lock file, if it reads as one. */
async function holderOf(file: Deno.FsFile): Promise<number | undefined> {
  try {
    const buffer = new Uint8Array(32);
    const n = await file.read(buffer);
    const text = new TextDecoder().decode(buffer.subarray(0, n ?? 0)).trim();
    return /^[0-9]{1,10}$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the open `file` is still the one named `path`. */
async function sameFile(file: Deno.FsFile, path: string): Promise<boolean> {
  try {
    const [open, named] = [await file.stat(), await Deno.stat(path)];
    return open.ino === named.ino && open.dev === named.dev;
  } catch {
    return false;
  }
}
