/**
 * The active-model path (agent/model_slots.ts): `DATA/models/NAME/current`
 * points at the verified version's file and is switched atomically.
 */

import assert from "node:assert/strict";
import { activeDigest, activeModels, currentPath, switchTo } from "../agent/model_slots.ts";
import { withTempDir } from "./helpers.ts";

const A = "a".repeat(64);
const B = "b".repeat(64);

async function blobs(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/blobs`, { recursive: true });
  await Deno.writeTextFile(`${dir}/blobs/${A}`, "version A");
  await Deno.writeTextFile(`${dir}/blobs/${B}`, "version B");
}

for (const mode of ["symlink", "hardlink"] as const) {
  Deno.test(`${mode}: current reads as the version switched to, and switching again replaces it`, async () => {
    await withTempDir(async (dir) => {
      await blobs(dir);
      assert.equal(await activeDigest(dir, "m"), null, "nothing installed yet");
      assert.equal(await switchTo(dir, "m", A, mode), mode);
      assert.equal(await Deno.readTextFile(currentPath(dir, "m")), "version A");
      assert.equal(await activeDigest(dir, "m"), A);
      await switchTo(dir, "m", B, mode);
      assert.equal(await Deno.readTextFile(currentPath(dir, "m")), "version B");
      assert.equal(await activeDigest(dir, "m"), B);
      assert.deepEqual([...await activeModels(dir)], [["m", B]]);
      const info = await Deno.lstat(currentPath(dir, "m"));
      assert.equal(info.isSymlink, mode === "symlink");
      if (mode === "symlink") {
        assert.equal(await Deno.readLink(currentPath(dir, "m")), `../../blobs/${B}`);
      }
      const leftovers = [];
      for await (const e of Deno.readDir(`${dir}/models/m`)) leftovers.push(e.name);
      assert.deepEqual(leftovers, ["current"], "no temporary link left behind");
    });
  });
}

Deno.test("a reader holding the old file keeps reading it whole while current switches", async () => {
  await withTempDir(async (dir) => {
    await blobs(dir);
    await switchTo(dir, "m", A);
    const open = await Deno.open(currentPath(dir, "m"));
    await switchTo(dir, "m", B);
    const buf = new Uint8Array(64);
    const n = await open.read(buf);
    open.close();
    assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "version A");
  });
});

Deno.test("activeModels lists every model with a current version", async () => {
  await withTempDir(async (dir) => {
    await blobs(dir);
    assert.deepEqual([...await activeModels(dir)], []);
    await switchTo(dir, "resnet", A);
    await switchTo(dir, "whisper", B);
    assert.deepEqual([...await activeModels(dir)].sort(), [["resnet", A], ["whisper", B]]);
  });
});

Deno.test("no path is built of a model name that fails the name rule (../../x, .hidden, a/b, empty)", async () => {
  await withTempDir(async (dir) => {
    const data = `${dir}/data`;
    await blobs(data);
    for (const name of ["../../x", "..", ".hidden", "a/b", "", "-rf"]) {
      assert.throws(() => currentPath(data, name), /fails the name rule/, name);
      await assert.rejects(() => switchTo(data, name, A), /fails the name rule/, name);
    }
    await assert.rejects(() => switchTo(data, "m", "../../x"), /not a hex digest/);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["data"], "nothing written beside the data directory");
  });
});

Deno.test("a model directory whose name fails the name rule is not an installed model", async () => {
  await withTempDir(async (dir) => {
    await blobs(dir);
    await switchTo(dir, "m", A);
    await Deno.mkdir(`${dir}/models/.hidden`, { recursive: true });
    await Deno.symlink(`../../blobs/${B}`, `${dir}/models/.hidden/current`);
    assert.deepEqual([...await activeModels(dir)], [["m", A]]);
  });
});
