/**
 * File I/O at the edges: opening inputs with clear errors, reading a whole
 * buffer, positional reads, and a small buffered writer that hashes nothing and
 * knows its position. All buffers are fixed-size; nothing grows with the file.
 *
 * @module
 */

import { IoError, ioError } from "./errors.ts";

/** Opens an existing regular file for reading; refuses directories and missing files clearly. */
export async function openInput(
  path: string,
  role: string,
): Promise<{ file: Deno.FsFile; size: number }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw ioError(`open ${role}`, path, err);
  }
  try {
    const info = await file.stat();
    if (info.isDirectory) throw new IoError(`${role} "${path}" is a directory, not a file`);
    if (!info.isFile) throw new IoError(`${role} "${path}" is not a regular file`);
    return { file, size: info.size };
  } catch (err) {
    file.close();
    throw ioError(`read ${role}`, path, err);
  }
}

/**
 * Reads until `buf` is full or the file ends; returns the number of bytes read
 * (less than `buf.length` only at end of file).
 */
export async function readFull(file: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let filled = 0;
  while (filled < buf.length) {
    const n = await file.read(filled === 0 ? buf : buf.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/** Reads `buf.length` bytes at `position`, or fewer if the file ends first. */
export async function readAt(
  file: Deno.FsFile,
  position: number,
  buf: Uint8Array,
): Promise<number> {
  await file.seek(position, Deno.SeekMode.Start);
  return await readFull(file, buf);
}

/**
 * `readAt` without leaving the thread: for reads that are usually served from
 * the page cache, where an async read's round trip to Deno's I/O threads costs
 * more than the read (apply's COPY reads: 2-3× faster measured).
 */
export function readAtSync(file: Deno.FsFile, position: number, buf: Uint8Array): number {
  file.seekSync(position, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < buf.length) {
    const n = file.readSync(filled === 0 ? buf : buf.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/** Writes all of `data` (Deno's `write` may write less than asked). */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}

/**
 * Buffered sequential writer over a file, with the current logical position and
 * the ability to overwrite bytes already written (for length fields and headers
 * that are known only later).
 */
export class BufferedWriter {
  #file: Deno.FsFile;
  #buf: Uint8Array;
  #used = 0;
  /** Bytes handed to the file so far (the buffer's start position). */
  #flushed = 0;

  constructor(file: Deno.FsFile, bufferSize = 1 << 20) {
    this.#file = file;
    this.#buf = new Uint8Array(bufferSize);
  }

  /** Bytes written so far, buffered or not. */
  get position(): number {
    return this.#flushed + this.#used;
  }

  /** Appends bytes; large writes bypass the buffer. */
  async write(data: Uint8Array): Promise<void> {
    if (data.length > this.#buf.length - this.#used) {
      await this.flush();
      if (data.length >= this.#buf.length) {
        await writeAll(this.#file, data);
        this.#flushed += data.length;
        return;
      }
    }
    this.#buf.set(data, this.#used);
    this.#used += data.length;
  }

  /** Writes out what is buffered. */
  async flush(): Promise<void> {
    if (this.#used === 0) return;
    await writeAll(this.#file, this.#buf.subarray(0, this.#used));
    this.#flushed += this.#used;
    this.#used = 0;
  }

  /** Overwrites bytes at an earlier `position` (which must be < `this.position`). */
  async overwrite(position: number, data: Uint8Array): Promise<void> {
    if (position + data.length > this.position) {
      throw new RangeError("overwrite past the end of what was written");
    }
    if (position >= this.#flushed) {
      this.#buf.set(data, position - this.#flushed);
      return;
    }
    await this.flush();
    await this.#file.seek(position, Deno.SeekMode.Start);
    await writeAll(this.#file, data);
    await this.#file.seek(0, Deno.SeekMode.End);
  }
}
