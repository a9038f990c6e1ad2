/**
 * The simulated model's two versions: v1, `size` bytes from a seeded PRNG
 * (incompressible), and v2, v1 with three regions of `size / 64` bytes (at
 * most 256 KiB each) rewritten at 1/4, 1/2 and 3/4 — so the control plane's
 * patch v1 → v2 is a small fraction of the file, as a fine-tune's would be.
 *
 * @module
 */

/** xorshift32 bytes from `seed`, into `out`. */
function fill(out: Uint8Array, seed: number): void {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
}

/** Writes v1 and v2 of `size` bytes into `dir`; returns their paths. */
export async function writeModelVersions(
  dir: string,
  size: number,
): Promise<{ v1: string; v2: string }> {
  const v1 = new Uint8Array(size);
  fill(v1, 1);
  const v2 = v1.slice();
  const length = Math.min(256 * 1024, Math.max(1, Math.floor(size / 64)));
  for (const [k, q] of [1, 2, 3].entries()) {
    const offset = Math.floor((size * q) / 4 - length / 2);
    fill(v2.subarray(offset, offset + length), 101 + k);
  }
  const paths = { v1: `${dir}/model-v1.bin`, v2: `${dir}/model-v2.bin` };
  await Deno.writeFile(paths.v1, v1);
  await Deno.writeFile(paths.v2, v2);
  return paths;
}
