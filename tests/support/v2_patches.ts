/**
 * Hand-made v2 patches for tests: a header over a base claiming a target, and
 * the zstd frames of compressed ops.
 */

import { constants, zstdCompressSync } from "node:zlib";
import { blake3 } from "../../kernel/blake3.ts";
import { encodeHeaderV2 } from "../../codec/patch_format.ts";
import { concat } from "../helpers.ts";

/** A hand-made v2 patch over `base` whose body is `ops`, claiming `target`. */
export function v2Patch(base: Uint8Array, target: Uint8Array, ...ops: Uint8Array[]): Uint8Array {
  return concat(
    encodeHeaderV2({
      baseSize: base.length,
      targetSize: target.length,
      targetDigest: blake3(target),
      baseDigest: blake3(base),
    }),
    ...ops,
  );
}

/** One zstd frame of `data` (level 3), as a compressed op carries. */
export function zstd(data: Uint8Array): Uint8Array {
  return zstdCompressSync(data, { params: { [constants.ZSTD_c_compressionLevel]: 3 } });
}
