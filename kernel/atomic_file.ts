/**
 * Writing a file so that its destination never holds a partial or unverified
 * version: bytes go to a temporary file beside the destination (same directory,
 * so the final rename is atomic), which is fsynced and renamed over the
 * destination only on `commit`; `abort` deletes it. Temporary files are
 * registered so that an interrupted process (Ctrl-C, SIGTERM) can remove them.
 *
 * Temporary names look like `.NAME.poolboy-XXXXXXXX.tmp`: hidden, and never
 * mistaken for a model.
 *
 * @module
 */

import { IoError, ioError } from "./errors.ts";

/** Temporary files currently open, by path: removed by `removeAllPending` on interruption. */
const pending = new Set<string>();

/** Deletes every temporary file still pending (for signal handlers). Never throws. */
export function removeAllPending(): void {
  for (const path of pending) {
    try {
      Deno.removeSync(path);
    } catch {
      // Already gone, or not ours to remove any more.
    }
  }
  pending.clear();
}

/** The directory part of a path (`.` for a bare name), as POSIX `dirname` gives it. */
export function directoryOf(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  const slash = trimmed.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : trimmed.slice(0, slash);
}

/**
 * Longest part of the destination's name, in UTF-8 bytes, kept in a temporary
 * name: names max out at 255 bytes and the rest of it takes 23.
 */
const TEMPORARY_NAME_KEEP = 200;

/** The longest prefix of `name` (whole characters) that is at most `bytes` long in UTF-8. */
export function prefixWithinBytes(name: string, bytes: number): string {
  const encoder = new TextEncoder();
  let used = 0;
  let out = "";
  for (const char of name) {
    used += encoder.encode(char).length;
    if (used > bytes) break;
    out += char;
  }
  return out;
}

/** The part of `destination`'s name that its temporary names keep. */
function temporaryStem(destination: string): string {
  return prefixWithinBytes(
    destination.replace(/\/+$/, "").split("/").pop() || "output",
    TEMPORARY_NAME_KEEP,
  );
}

/** The directory prefix of a temporary path beside `destination` (`DIR/`, or `/`). */
function temporaryDirPrefix(destination: string): string {
  const dir = directoryOf(destination);
  return `${dir === "/" ? "" : dir}/`;
}

/** The temporary-file name used beside `destination`. */
export function temporaryPathFor(destination: string): string {
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0");
  return `${temporaryDirPrefix(destination)}.${temporaryStem(destination)}.poolboy-${random}.tmp`;
}

/** Whether `name` (a bare file name) is one of `destination`'s temporary names. */
export function isTemporaryNameOf(destination: string, name: string): boolean {
  const prefix = `.${temporaryStem(destination)}.poolboy-`;
  return name.length === prefix.length + 12 && name.startsWith(prefix) &&
    /^[0-9a-f]{8}\.tmp$/.test(name.slice(prefix.length));
}

/** Most directory entries `removeStaleTemporaries` looks at (a bounded scan). */
export const STALE_SCAN_LIMIT = 100_000;

/**
 * Deletes the temporary files of `destination` that an earlier writer left
 * behind when it was killed (SIGKILL, power loss): regular files beside it
 * named exactly as `temporaryPathFor(destination)` names them, that no live
 * writer holds (an `AtomicFile` keeps an exclusive lock on its temporary file
 * until it is finished). Returns the paths it deleted. Other files, and
 * temporaries of other destinations, are never touched. Best effort: an entry
 * it cannot check or delete is left.
 */
export async function removeStaleTemporaries(destination: string): Promise<string[]> {
  if (destination.endsWith("/")) return [];
  const dir = directoryOf(destination);
  const removed: string[] = [];
  let seen = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (++seen > STALE_SCAN_LIMIT) break;
      if (!entry.isFile || !isTemporaryNameOf(destination, entry.name)) continue;
      const path = `${temporaryDirPrefix(destination)}${entry.name}`;
      if (pending.has(path)) continue; // this process's own
      let file: Deno.FsFile;
      try {
        file = await Deno.open(path, { read: true });
      } catch {
        continue;
      }
      try {
        if (!file.tryLockSync(true)) continue; // a running writer holds it
        await Deno.remove(path);
        removed.push(path);
      } catch {
        // Gone meanwhile, or not ours to remove.
      } finally {
        file.close();
      }
    }
  } catch {
    // An unreadable directory: creating the temporary file will say why.
  }
  return removed;
}

/** A file being written beside its destination. */
export class AtomicFile {
  readonly destination: string;
  readonly temporaryPath: string;
  readonly file: Deno.FsFile;
  #done = false;

  private constructor(destination: string, temporaryPath: string, file: Deno.FsFile) {
    this.destination = destination;
    this.temporaryPath = temporaryPath;
    this.file = file;
  }

  /**
   * Creates the temporary file. The destination must be absent or a regular file
   * (a directory, device, FIFO or a path ending in "/" is refused); a replaced
   * file's permission bits are kept.
   */
  static async create(destination: string, role = "output"): Promise<AtomicFile> {
    if (destination.endsWith("/")) {
      throw new IoError(`cannot write ${role} "${destination}": the path names a directory`);
    }
    let mode = 0o644;
    try {
      const info = await Deno.stat(destination);
      if (info.isDirectory) {
        throw new IoError(`cannot write ${role} "${destination}": is a directory`);
      }
      if (!info.isFile) {
        throw new IoError(
          `cannot write ${role} "${destination}": not a regular file (device, FIFO or socket)`,
        );
      }
      if (info.mode !== null) mode = info.mode & 0o7777;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw ioError(`write ${role}`, destination, err);
    }
    const temporaryPath = temporaryPathFor(destination);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(temporaryPath, { write: true, createNew: true, mode });
    } catch (err) {
      throw ioError(`write ${role} in the directory of`, destination, err);
    }
    pending.add(temporaryPath);
    try {
      // Held until the file is closed: tells a later removeStaleTemporaries that
      // a writer is alive (best effort where the filesystem has no locks).
      file.tryLockSync(true);
    } catch {
      // No advisory locks here.
    }
    return new AtomicFile(destination, temporaryPath, file);
  }

  /** Fsyncs, closes and renames the temporary file over the destination. */
  async commit(): Promise<void> {
    if (this.#done) throw new Error("AtomicFile already finished");
    try {
      await this.file.sync();
      this.file.close();
      this.#done = true;
      await Deno.rename(this.temporaryPath, this.destination);
      pending.delete(this.temporaryPath);
      await syncDirectory(directoryOf(this.destination));
    } catch (err) {
      await this.abort();
      throw ioError("write", this.destination, err);
    }
  }

  /** Closes (if open) and deletes the temporary file. Never throws. */
  async abort(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      try {
        this.file.close();
      } catch {
        // Already closed.
      }
    }
    try {
      await Deno.remove(this.temporaryPath);
    } catch {
      // Already renamed or removed.
    }
    pending.delete(this.temporaryPath);
  }
}

/** Fsyncs a directory so a rename in it is durable; best effort where unsupported. */
export async function syncDirectory(path: string): Promise<void> {
  try {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the file itself is synced.
  }
}
