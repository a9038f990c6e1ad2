/**
 * Describes a patch without applying it: header fields, op counts and bytes.
 * Reads the whole patch once through `PatchReader`, so a malformed patch is
 * reported exactly as `apply` would report it (no base is needed).
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import { ioError, PoolboyError } from "../kernel/errors.ts";
import { openInput } from "../kernel/file_io.ts";
import { emptyStats, type OpStats } from "./op_writer.ts";
import { PatchReader } from "./patch_reader.ts";
import type { ProgressCallback } from "../kernel/progress.ts";

/** What `inspectPatch` found. */
export interface PatchDescription extends OpStats {
  readonly version: number;
  readonly baseSize: number;
  readonly targetSize: number;
  readonly targetBlake3: string;
  readonly patchSize: number;
}

/** Reads and validates a whole patch, returning its description. */
export async function inspectPatch(
  path: string,
  onProgress?: ProgressCallback,
): Promise<PatchDescription> {
  const patch = await openInput(path, "patch");
  try {
    const reader = await PatchReader.open(patch.file);
    const stats: OpStats = emptyStats();
    const scratch = new Uint8Array(1 << 20);
    for (let op = await reader.next(); op !== null; op = await reader.next()) {
      if (op.kind === "copy") {
        stats.copyOps++;
        stats.copyBytes += op.length;
      } else {
        if (op.kind === "literal") {
          stats.literalOps++;
          stats.literalBytes += op.length;
        } else if (op.kind === "zliteral") {
          stats.zliteralOps++;
          stats.zliteralBytes += op.length;
        } else {
          stats.deltaOps++;
          stats.deltaBytes += op.length;
        }
        await reader.skipLiteral(scratch);
      }
      onProgress?.(reader.position, patch.size);
    }
    const { header } = reader;
    return {
      version: header.version,
      baseSize: header.baseSize,
      targetSize: header.targetSize,
      targetBlake3: toHex(header.targetDigest),
      patchSize: reader.position,
      ...stats,
    };
  } catch (err) {
    if (err instanceof PoolboyError) throw err;
    throw ioError("read patch", path, err);
  } finally {
    patch.file.close();
  }
}
