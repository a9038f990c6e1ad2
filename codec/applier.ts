/**
 * Applies a patch to a base, streaming, verified or refused.
 *
 * Ops are read once through `PatchReader` (which validates every bound first);
 * COPY reads the base at its offset through a fixed scratch buffer, LITERAL
 * streams from the patch. Every output byte is hashed as it is written to a
 * temporary file beside the destination; the file is fsynced and renamed over
 * the destination only if its BLAKE3 equals the header's. On any failure the
 * temporary file is deleted and the destination is untouched.
 *
 * Memory: a patch buffer, a scratch buffer and a write buffer of 256 KiB each,
 * whatever the file sizes (larger buffers measured no faster, and apply must fit
 * in 64 MB with Deno's own ~50 MB).
 *
 * @module
 */

import { AtomicFile } from "./atomic_file.ts";
import { createHasher, digestsEqual, toHex } from "./blake3.ts";
import { ioError, PoolboyError, VerificationError } from "./errors.ts";
import { BufferedWriter, openInput, readAt } from "./file_io.ts";
import type { ProgressCallback } from "./progress.ts";
import { PatchReader } from "./patch_reader.ts";
import type { OpStats } from "./op_writer.ts";

/** Default size of each of apply's three buffers. */
export const APPLY_BUFFER_SIZE = 256 * 1024;
/** Smallest buffer size `applyFile` accepts. */
export const MIN_APPLY_BUFFER_SIZE = 64;

/** Options of `applyFile`. */
export interface ApplyOptions {
  readonly onProgress?: ProgressCallback;
  /** Size of the scratch, patch and write buffers (default 256 KiB each). */
  readonly bufferSize?: number;
}

/** What an apply produced. */
export interface ApplySummary extends OpStats {
  readonly baseSize: number;
  readonly targetSize: number;
  readonly patchSize: number;
  readonly targetBlake3: string;
  readonly elapsedMs: number;
}

/** Rebuilds the target from `basePath` and `patchPath` into `outPath`. */
export async function applyFile(
  basePath: string,
  patchPath: string,
  outPath: string,
  options: ApplyOptions = {},
): Promise<ApplySummary> {
  const started = performance.now();
  const bufferSize = options.bufferSize ?? APPLY_BUFFER_SIZE;
  if (!Number.isSafeInteger(bufferSize) || bufferSize < MIN_APPLY_BUFFER_SIZE) {
    throw new RangeError(`apply buffer size must be at least ${MIN_APPLY_BUFFER_SIZE} bytes`);
  }
  const patch = await openInput(patchPath, "patch");
  let base: Awaited<ReturnType<typeof openInput>> | undefined;
  let out: AtomicFile | undefined;
  try {
    const reader = await readPatch(patchPath, () => PatchReader.open(patch.file, bufferSize));
    const { header } = reader;
    base = await openInput(basePath, "base");
    if (base.size !== header.baseSize) {
      throw new VerificationError(
        `wrong base: "${basePath}" is ${base.size} bytes, the patch was made from a ${header.baseSize}-byte base`,
      );
    }
    out = await AtomicFile.create(outPath, "output");
    const writer = new BufferedWriter(out.file, bufferSize);
    const hasher = createHasher();
    const scratch = new Uint8Array(bufferSize);
    const stats: OpStats = { copyOps: 0, copyBytes: 0, literalOps: 0, literalBytes: 0 };
    const emit = async (bytes: Uint8Array) => {
      hasher.update(bytes);
      try {
        await writer.write(bytes);
      } catch (err) {
        throw ioError("write output beside", outPath, err);
      }
    };
    while (true) {
      const op = await readPatch(patchPath, () => reader.next());
      if (op === null) break;
      if (op.kind === "copy") {
        stats.copyOps++;
        stats.copyBytes += op.length;
        for (let done = 0; done < op.length;) {
          const want = Math.min(scratch.length, op.length - done);
          let n: number;
          try {
            n = await readAt(base.file, op.offset + done, scratch.subarray(0, want));
          } catch (err) {
            throw ioError("read base", basePath, err);
          }
          if (n < want) throw ioError("read base", basePath, new Error("file shrank while read"));
          await emit(scratch.subarray(0, n));
          done += n;
        }
      } else {
        stats.literalOps++;
        stats.literalBytes += op.length;
        while (true) {
          const n = await readPatch(patchPath, () => reader.readLiteral(scratch));
          if (n === 0) break;
          await emit(scratch.subarray(0, n));
        }
      }
      options.onProgress?.(reader.produced, header.targetSize);
    }
    try {
      await writer.flush();
    } catch (err) {
      throw ioError("write output beside", outPath, err);
    }
    const digest = hasher.digest();
    if (!digestsEqual(digest, header.targetDigest)) {
      throw new VerificationError(
        `output does not verify: BLAKE3 ${toHex(digest)} differs from the patch's ${
          toHex(header.targetDigest)
        } (wrong base content, or a damaged patch); "${outPath}" was not written`,
      );
    }
    await out.commit();
    return {
      ...stats,
      baseSize: header.baseSize,
      targetSize: header.targetSize,
      patchSize: reader.position,
      targetBlake3: toHex(digest),
      elapsedMs: performance.now() - started,
    };
  } catch (err) {
    await out?.abort();
    throw err;
  } finally {
    patch.file.close();
    base?.file.close();
  }
}

/** Runs a patch read, turning OS errors into an I/O error naming the patch. */
async function readPatch<T>(patchPath: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof PoolboyError) throw err;
    throw ioError("read patch", patchPath, err);
  }
}
