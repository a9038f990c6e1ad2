/**
 * Apply's write-behind (codec/applier.ts `WRITE_BEHIND_MIN_OUTPUT`): a large
 * output is written by one async write in flight while the next op decodes.
 * Here it is forced on small files (`writeBehindFrom: 0`): the output is the
 * same bytes, a write that fails (a full filesystem) is the output's I/O
 * error with nothing left behind, and a patch that turns out corrupt while a
 * write is in flight leaves no temporary file either.
 */

import assert from "node:assert/strict";
import { applyFile, WRITE_BEHIND_MIN_OUTPUT } from "../codec/applier.ts";
import { encodeFile } from "../codec/encoder.ts";
import { IoError, MalformedPatchError } from "../kernel/errors.ts";
import { tempFilesIn, TMPFS_UNAVAILABLE, withTmpfs } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";

const MiB = 1024 * 1024;

/** A 4 MiB base, and a target with some bytes changed in every MiB and a new MiB at the end. */
async function pair(dir: string): Promise<{ base: string; target: string; patch: string }> {
  const base = randomBytes(4 * MiB, 21);
  const target = new Uint8Array(5 * MiB);
  target.set(base);
  for (let at = 1000; at < 4 * MiB; at += MiB) target.set(randomBytes(3000, at), at);
  target.set(randomBytes(MiB, 22), 4 * MiB);
  await Deno.writeFile(`${dir}/base`, base);
  await Deno.writeFile(`${dir}/target`, target);
  await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch`);
  return { base: `${dir}/base`, target: `${dir}/target`, patch: `${dir}/patch` };
}

Deno.test("outputs from 2 GiB on are written behind; smaller ones are not", () => {
  assert.equal(WRITE_BEHIND_MIN_OUTPUT, 2 * 1024 * MiB);
});

Deno.test("an output written behind is byte for byte the output written synchronously", async () => {
  await withTempDir(async (dir) => {
    const { base, target, patch } = await pair(dir);
    const behind = await applyFile(base, patch, `${dir}/behind`, { writeBehindFrom: 0 });
    const inline = await applyFile(base, patch, `${dir}/inline`);
    const want = await Deno.readFile(target);
    assert.deepEqual(await Deno.readFile(`${dir}/behind`), want);
    assert.deepEqual(await Deno.readFile(`${dir}/inline`), want);
    assert.equal(behind.targetBlake3, inline.targetBlake3);
  });
});

Deno.test({
  name:
    "a write behind that fails (full filesystem) is the output's I/O error: previous output kept, no temporary file",
  ignore: TMPFS_UNAVAILABLE !== undefined,
  async fn() {
    await withTempDir(async (dir) => {
      const { base, patch } = await pair(dir);
      await withTmpfs("256k", async (full) => {
        const previous = new TextEncoder().encode("the previous version\n");
        await Deno.writeFile(`${full}/out`, previous);
        await assert.rejects(
          applyFile(base, patch, `${full}/out`, { writeBehindFrom: 0 }),
          (err: unknown) => err instanceof IoError && /no space left/i.test(err.message),
        );
        assert.deepEqual(await Deno.readFile(`${full}/out`), previous);
        assert.deepEqual(await tempFilesIn(full), []);
      });
    });
  },
});

Deno.test("a patch found corrupt while a write is in flight is refused, with no temporary file left", async () => {
  await withTempDir(async (dir) => {
    const { base, patch } = await pair(dir);
    const bytes = await Deno.readFile(patch);
    await Deno.writeFile(`${dir}/cut`, bytes.subarray(0, bytes.length - 100));
    await assert.rejects(
      applyFile(base, `${dir}/cut`, `${dir}/out`, { writeBehindFrom: 0 }),
      MalformedPatchError,
    );
    await assert.rejects(Deno.stat(`${dir}/out`), Deno.errors.NotFound);
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});
