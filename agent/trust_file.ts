/**
 * `DATA/trust.json` on disk: read once when the agent starts, written
 * atomically (temporary file, fsync, rename, directory fsync) before every
 * switch to a signed release, so a power cut leaves the old memory or the new
 * one, never a torn file. A missing file is an empty memory (a new device); a
 * damaged one stops the agent with an `IoError` naming the file — resetting it
 * would let an older signed release in again. The format is trust_memory.ts's.
 *
 * @module
 */

import { AtomicFile } from "../kernel/atomic_file.ts";
import { IoError, ioError } from "../kernel/errors.ts";
import { writeAll } from "../kernel/file_io.ts";
import { EMPTY_TRUST_MEMORY, type TrustMemory } from "../release/trust_policy.ts";
import { formatTrustMemory, mergeMemory, parseTrustMemory } from "./trust_memory.ts";

/** Path of a data directory's trust memory. */
export function trustPath(dataDir: string): string {
  return `${dataDir}/trust.json`;
}

/** The trust memory of one data directory, as read at start and as last written. */
export class TrustMemoryFile {
  readonly path: string;
  #memory: TrustMemory;
  /** The last queued write (its completion, errors ignored). */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, memory: TrustMemory) {
    this.path = path;
    this.#memory = memory;
  }

  /** Reads `DATA/trust.json` (missing: an empty memory; damaged: `IoError`). */
  static async open(dataDir: string): Promise<TrustMemoryFile> {
    const path = trustPath(dataDir);
    return new TrustMemoryFile(path, await readTrustMemory(path));
  }

  /** The memory as last read or written. */
  get memory(): TrustMemory {
    return this.#memory;
  }

  /**
   * Grows the memory by `next` (counters only grow: `mergeMemory`) and writes
   * it; on disk when this returns. If the write fails, the file and the
   * memory stay as they were.
   */
  async remember(next: TrustMemory): Promise<TrustMemory> {
    const task = async () => {
      const merged = mergeMemory(this.#memory, next);
      await writeTrustMemory(this.path, merged);
      this.#memory = merged;
      return merged;
    };
    const result = this.#queue.then(task);
    this.#queue = result.catch(() => {});
    return await result;
  }
}

/** Reads a trust file: missing → the empty memory, damaged → `IoError` naming it. */
export async function readTrustMemory(path: string): Promise<TrustMemory> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return EMPTY_TRUST_MEMORY;
    throw ioError("read the trust memory", path, err);
  }
  const parsed = parseTrustMemory(text);
  if (!parsed.ok) {
    throw new IoError(
      `${path} is damaged (${parsed.why}): refusing to start; starting afresh would accept older signed releases again. Restore it from a backup, or remove it deliberately to forget what this device installed`,
    );
  }
  return parsed.memory;
}

/** Writes a trust file atomically and durably. */
export async function writeTrustMemory(path: string, memory: TrustMemory): Promise<void> {
  const file = await AtomicFile.create(path, "trust memory");
  try {
    await writeAll(file.file, new TextEncoder().encode(formatTrustMemory(memory)));
    await file.commit();
  } catch (err) {
    await file.abort();
    throw ioError("write the trust memory", path, err);
  }
}
