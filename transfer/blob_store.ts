/**
 * Content-addressed blobs in a directory: each blob is a file named by the
 * lower-case hex of its BLAKE3 digest (`DIR/<64 hex>`), written atomically, so
 * a name present is always a complete, verified blob. Downloads in progress
 * live in `DIR/.partial/<hex>.part` (see `blob_client.ts`), which `list` and
 * `lookup` never report.
 *
 * The store is what a `BlobServer` serves from: `lookup` maps a digest to a
 * path inside the directory, so no path ever comes from the wire.
 *
 * @module
 */

import { AtomicFile, directoryOf, syncDirectory } from "../kernel/atomic_file.ts";
import { createHasher, DIGEST_LENGTH, fromHex, type Hasher, toHex } from "../kernel/blake3.ts";
import { ioError, VerificationError } from "../kernel/errors.ts";
import { BufferedWriter, openInput, readFull, writeAll } from "../kernel/file_io.ts";

/** Copy buffer of `importFile` and write buffer of `importStream`. */
const COPY_BUFFER_SIZE = 256 * 1024;

/** A complete blob's name: the 64 lower-case hex digits of its digest. */
const BLOB_NAME = /^[0-9a-f]{64}$/;

/** Where a blob lives and how big it is, as a `BlobServer` needs it. */
export interface BlobLocation {
  path: string;
  size: number;
}

/** What a `BlobServer` serves from: complete blobs by digest. */
export interface BlobLookup {
  /** The blob with this digest, or null if it is not held. */
  lookup(digest: Uint8Array): Promise<BlobLocation | null>;
}

/** A blob added to the store. */
export interface ImportedBlob {
  digest: Uint8Array;
  size: number;
}

function hexOf(digest: Uint8Array): string {
  if (digest.length !== DIGEST_LENGTH) {
    throw new RangeError(`a blob digest is ${DIGEST_LENGTH} bytes, got ${digest.length}`);
  }
  return toHex(digest);
}

/** A directory of content-addressed blobs. */
export class BlobStore implements BlobLookup {
  /** The store's directory. */
  readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir.replace(/(.)\/+$/, "$1");
  }

  /** Opens the store in `dir`, creating `dir` and `dir/.partial` if needed. */
  static async open(dir: string): Promise<BlobStore> {
    const store = new BlobStore(dir);
    try {
      await Deno.mkdir(`${store.dir}/.partial`, { recursive: true });
    } catch (err) {
      throw ioError("create blob store", store.dir, err);
    }
    return store;
  }

  /** Path of the complete blob with this digest (which may not exist). */
  pathOf(digest: Uint8Array): string {
    return `${this.dir}/${hexOf(digest)}`;
  }

  /** Path of the partial download of the blob with this digest. */
  partialPathOf(digest: Uint8Array): string {
    return `${this.dir}/.partial/${hexOf(digest)}.part`;
  }

  /**
   * Where a piece-by-piece (swarm) download of the blob is built: apart from
   * `partialPathOf`, whose bytes grow from the start; its bitmap of verified
   * pieces is this path + `.pieces` (transfer/piece_store.ts).
   */
  swarmPathOf(digest: Uint8Array): string {
    return `${this.dir}/.partial/${hexOf(digest)}.swarm`;
  }

  /** Whether the complete blob is held. */
  async has(digest: Uint8Array): Promise<boolean> {
    return (await this.sizeOf(digest)) !== null;
  }

  /** Size of the complete blob, or null if it is not held. */
  async sizeOf(digest: Uint8Array): Promise<number | null> {
    const path = this.pathOf(digest);
    try {
      const info = await Deno.stat(path);
      return info.isFile ? info.size : null;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw ioError("read blob", path, err);
    }
  }

  /** The blob with this digest, or null: what a `BlobServer` serves. */
  async lookup(digest: Uint8Array): Promise<BlobLocation | null> {
    const size = await this.sizeOf(digest);
    return size === null ? null : { path: this.pathOf(digest), size };
  }

  /** Digests of every complete blob held, in no particular order. */
  async list(): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    try {
      for await (const entry of Deno.readDir(this.dir)) {
        if (entry.isFile && BLOB_NAME.test(entry.name)) out.push(fromHex(entry.name));
      }
    } catch (err) {
      throw ioError("list blob store", this.dir, err);
    }
    return out;
  }

  /**
   * Copies a file into the store under its digest, hashing it on the way
   * through a fixed buffer. Idempotent: a blob already held is left as it is.
   */
  async importFile(srcPath: string): Promise<ImportedBlob> {
    const { file: src } = await openInput(srcPath, "blob source");
    try {
      const temp = await this.#createTemp();
      try {
        const hasher = createHasher();
        const buf = new Uint8Array(COPY_BUFFER_SIZE);
        let size = 0;
        while (true) {
          let n: number;
          try {
            n = await readFull(src, buf);
          } catch (err) {
            throw ioError("read blob source", srcPath, err);
          }
          if (n === 0) break;
          const piece = buf.subarray(0, n);
          hasher.update(piece);
          await writeAll(temp.file, piece);
          size += n;
          if (n < buf.length) break;
        }
        return await this.#commit(temp, hasher, size);
      } catch (err) {
        await temp.abort();
        throw ioError("write blob into", this.dir, err);
      }
    } finally {
      src.close();
    }
  }

  /**
   * Stores the bytes of a stream (e.g. an HTTP upload) under their digest. With
   * `expected`, a stream whose digest differs is refused with
   * `VerificationError` and nothing is stored.
   */
  async importStream(
    stream: ReadableStream<Uint8Array>,
    expected?: Uint8Array,
  ): Promise<ImportedBlob> {
    if (expected !== undefined) hexOf(expected);
    const temp = await this.#createTemp();
    const reader = stream.getReader();
    try {
      const hasher = createHasher();
      const writer = new BufferedWriter(temp.file, COPY_BUFFER_SIZE);
      let size = 0;
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        hasher.update(value);
        await writer.write(value);
        size += value.length;
      }
      await writer.flush();
      return await this.#commit(temp, hasher, size, expected);
    } catch (err) {
      await temp.abort();
      try {
        await reader.cancel();
      } catch {
        // The stream already failed.
      }
      throw ioError("write blob into", this.dir, err);
    } finally {
      reader.releaseLock();
    }
  }

  /** Deletes the blob (and any partial download of it); nothing happens if it is absent. */
  async remove(digest: Uint8Array): Promise<void> {
    const swarm = this.swarmPathOf(digest);
    for (
      const path of [this.pathOf(digest), this.partialPathOf(digest), swarm, `${swarm}.pieces`]
    ) {
      try {
        await Deno.remove(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw ioError("remove blob", path, err);
      }
    }
  }

  /**
   * A temporary file beside the blobs (`.blob.poolboy-XXXXXXXX.tmp`, never
   * taken for a blob), registered for removal on interruption.
   */
  async #createTemp(): Promise<AtomicFile> {
    return await AtomicFile.create(`${this.dir}/blob`, "blob");
  }

  /**
   * Moves a fully written temporary file to its blob name: fsync, rename,
   * fsync the directory. The destination of an `AtomicFile` is fixed at
   * creation and a blob's name is known only once hashed, so the rename is
   * done here and `abort` then only closes the file and unregisters it.
   */
  async #commit(
    temp: AtomicFile,
    hasher: Hasher,
    size: number,
    expected?: Uint8Array,
  ): Promise<ImportedBlob> {
    const digest = hasher.digest();
    if (expected !== undefined && toHex(expected) !== toHex(digest)) {
      throw new VerificationError(
        `blob digest ${toHex(digest)} differs from the expected ${toHex(expected)}; not stored`,
      );
    }
    const path = this.pathOf(digest);
    if (await this.has(digest)) {
      await temp.abort();
      return { digest, size };
    }
    await temp.file.sync();
    await Deno.rename(temp.temporaryPath, path);
    await temp.abort();
    await syncDirectory(directoryOf(path));
    return { digest, size };
  }
}
