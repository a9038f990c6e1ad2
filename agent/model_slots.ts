/**
 * Where an agent's applications find the active model: `DATA/models/NAME/current`,
 * a symlink to the version's file in the agent's blob store
 * (`../../blobs/<hex digest>`, relative so the data directory can move).
 *
 * Switching writes a new symlink beside it and renames it over `current`:
 * rename is atomic, so a reader sees the old version or the new one, never
 * nothing and never a partial file (the target file itself was verified
 * before it was put in the store).
 *
 * Deno creates symlinks only with unscoped `--allow-read --allow-write` (as
 * the compiled binary has). Run with path-scoped grants (as the end-to-end
 * tests run agents), it refuses; `current` is then a hard link to the
 * version's file, replaced by rename the same way, and the active version is
 * found by matching its inode among the blobs.
 *
 * @module
 */

import { directoryOf, syncDirectory } from "../kernel/atomic_file.ts";
import { isName } from "../kernel/names.ts";

/**
 * The stable path of a model's active version. Throws for a name that fails
 * the name rule (kernel/names.ts): the decoder already refused it, so that is
 * a bug upstream, and no path is built of it.
 */
export function currentPath(dataDir: string, model: string): string {
  if (!isName(model)) {
    throw new Error(
      `model name ${JSON.stringify(model)} fails the name rule: no path is built of it`,
    );
  }
  return `${dataDir}/models/${model}/current`;
}

const DIGEST_NAME = /^[0-9a-f]{64}$/;

/** How `current` points at the version's file. */
export type SlotMode = "symlink" | "hardlink";

/** The hex digest of the active version of `model`, or null if none is installed. */
export async function activeDigest(dataDir: string, model: string): Promise<string | null> {
  const current = currentPath(dataDir, model);
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(current);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  if (info.isSymlink) {
    const name = (await Deno.readLink(current)).split("/").pop() ?? "";
    return DIGEST_NAME.test(name) ? name : null;
  }
  // A hard link: the blob with the same inode.
  for await (const entry of Deno.readDir(`${dataDir}/blobs`)) {
    if (!entry.isFile || !DIGEST_NAME.test(entry.name)) continue;
    const blob = await Deno.stat(`${dataDir}/blobs/${entry.name}`).catch(() => undefined);
    if (blob && blob.ino === info.ino && blob.dev === info.dev) return entry.name;
  }
  return null;
}

/** Every installed model and its active digest. */
export async function activeModels(dataDir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  try {
    for await (const entry of Deno.readDir(`${dataDir}/models`)) {
      if (!entry.isDirectory || !isName(entry.name)) continue;
      const digest = await activeDigest(dataDir, entry.name);
      if (digest) out.set(entry.name, digest);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out;
}

/**
 * Points `current` of `model` at the blob `digest` (hex), atomically. Returns
 * how: a symlink, or a hard link where Deno's permissions allow no symlink
 * (or `mode` asks for one).
 */
export async function switchTo(
  dataDir: string,
  model: string,
  digest: string,
  mode?: SlotMode,
): Promise<SlotMode> {
  if (!DIGEST_NAME.test(digest)) throw new Error(`not a hex digest: ${JSON.stringify(digest)}`);
  const current = currentPath(dataDir, model);
  const dir = directoryOf(current);
  await Deno.mkdir(dir, { recursive: true });
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  const temporary = `${dir}/.current.${random}.tmp`;
  let used: SlotMode = mode ?? "symlink";
  if (used === "symlink") {
    try {
      await Deno.symlink(`../../blobs/${digest}`, temporary);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotCapable) || mode === "symlink") throw err;
      used = "hardlink";
    }
  }
  if (used === "hardlink") await Deno.link(`${dataDir}/blobs/${digest}`, temporary);
  try {
    await Deno.rename(temporary, current);
  } catch (err) {
    await Deno.remove(temporary).catch(() => {});
    throw err;
  }
  await syncDirectory(dir);
  return used;
}
