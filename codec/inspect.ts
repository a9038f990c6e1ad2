/**
 * Describes a patch without applying it: header fields, op counts and bytes.
 * Reads the whole patch once through `PatchReader` and decodes every
 * compressed op with apply's own decoder (`CompressedOps.residue` and
 * `decompress`: whole zstd frames, exactly the op's length; the reader checked
 * the filters and record layouts), so a malformed patch is
 * refused exactly as `apply` would refuse it. Without a base it cannot check
 * what needs one: the base's BLAKE3, and the output's (a change inside
 * compressed data that still decodes to the right length shows only there).
 * Memory is fixed: one op at a time through apply's buffers.
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import { ioError, PoolboyError } from "../kernel/errors.ts";
import { openInput } from "../kernel/file_io.ts";
import { emptyStats, type OpStats } from "./op_writer.ts";
import { PatchReader } from "./patch_reader.ts";
import { CompressedOps, countCompressed, PATCH_READ_BUFFER } from "./applier.ts";
import type { ProgressCallback } from "../kernel/progress.ts";

/** What `inspectPatch` found. */
export interface PatchDescription extends OpStats {
  readonly version: number;
  readonly baseSize: number;
  readonly targetSize: number;
  readonly targetBlake3: string;
  /** The base's BLAKE3 a v2, v3 or v4 patch names (v1 patches do not name it). */
  readonly baseBlake3?: string;
  /** The sampled base ranges of a v3 or v4 patch, with their BLAKE3 (v4: its first 8 bytes, 16 hex digits). */
  readonly baseSamples?: readonly { offset: number; length: number; blake3: string }[];
  readonly patchSize: number;
}

/** Reads and validates a whole patch, returning its description. */
export async function inspectPatch(
  path: string,
  onProgress?: ProgressCallback,
): Promise<PatchDescription> {
  const patch = await openInput(path, "patch");
  const compressed = new CompressedOps();
  try {
    const reader = await PatchReader.open(patch.file, PATCH_READ_BUFFER);
    const stats: OpStats = emptyStats();
    const scratch = new Uint8Array(PATCH_READ_BUFFER);
    const read = (dest: Uint8Array) => reader.readLiteral(dest);
    for (let op = await reader.next(); op !== null; op = await reader.next()) {
      if (op.kind === "copy") {
        stats.copyOps++;
        stats.copyBytes += op.length;
      } else if (op.kind === "literal") {
        stats.literalOps++;
        stats.literalBytes += op.length;
        await reader.skipLiteral(scratch);
      } else {
        countCompressed(stats, op);
        if (op.kind === "zliteral" || op.kind === "delta") await compressed.residue(op, read);
        else await compressed.decompress(op, read);
      }
      onProgress?.(reader.position, patch.size);
    }
    const { header } = reader;
    return {
      version: header.version,
      baseSize: header.baseSize,
      targetSize: header.targetSize,
      targetBlake3: toHex(header.targetDigest),
      ...(header.baseDigest ? { baseBlake3: toHex(header.baseDigest) } : {}),
      ...(header.samples
        ? {
          baseSamples: header.samples.map((s) => ({
            offset: s.offset,
            length: s.length,
            blake3: toHex(s.digest),
          })),
        }
        : {}),
      patchSize: reader.position,
      ...stats,
    };
  } catch (err) {
    if (err instanceof PoolboyError) throw err;
    throw ioError("read patch", path, err);
  } finally {
    compressed.close();
    patch.file.close();
  }
}
