/**
 * The format of the patches the control plane makes: 4 by default (a device
 * checks its base from sampled ranges and reads it once), 2 or 3 when told
 * (`controlplane --patch-format`, for fleets with agents older than 0.17),
 * and a patch made before keeps its format.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { DEFAULT_PATCH_FORMAT } from "../controlplane/patch_cache.ts";
import { PatchReader } from "../codec/patch_reader.ts";
import { fromHex } from "../kernel/blake3.ts";
import { withTempDir } from "./helpers.ts";

/** 256 KiB of a fixed pattern, `changed` bytes of it different from `seed`'s. */
function model(seed: number, changed = 0): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(256 * 1024);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + (i >> 9)) & 0xff;
  for (let i = 0; i < changed; i++) bytes[1000 + i * 97] = seed + i;
  return bytes;
}

/**
 * Publishes v1 then v2 of `name`, has the patch v1 → v2 made (as a rollout to
 * devices on v1 would) and returns its format.
 */
async function patchVersion(cp: ControlPlane, name: string, changed = 300): Promise<number> {
  const v1 = (await cp.publish(name, "v1", new Blob([model(1)]).stream())).version.digest;
  const v2 = (await cp.publish(name, "v2", new Blob([model(2, changed)]).stream())).version.digest;
  const patch = await cp.patches.ensure(v1, v2);
  const file = await Deno.open(cp.store.pathOf(fromHex(patch.digest)));
  try {
    return (await PatchReader.open(file)).header.version;
  } finally {
    file.close();
  }
}

const OPTIONS = { bind: "127.0.0.1", udpPort: 0, p2pPort: 0 };

Deno.test({
  name: "the control plane makes format 4 patches unless told otherwise",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  assert.equal(DEFAULT_PATCH_FORMAT, 4);
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({ ...OPTIONS, dataDir: dir });
    try {
      assert.equal(await patchVersion(cp, "m"), 4);
    } finally {
      await cp.close();
    }
  });
});

Deno.test({
  name:
    "with patchFormat 2 it makes format 2 patches, and a patch made before keeps its format after a restart with another",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const old = await ControlPlane.start({ ...OPTIONS, dataDir: dir, patchFormat: 2 });
    let digest: string;
    try {
      assert.equal(await patchVersion(old, "m"), 2);
      digest = old.patches.cached(
        (await old.status()).versions.find((v) => v.version === "v1")!.digest,
        (await old.status()).versions.find((v) => v.version === "v2")!.digest,
      )!.digest;
    } finally {
      await old.close();
    }
    const cp = await ControlPlane.start({ ...OPTIONS, dataDir: dir });
    try {
      const versions = (await cp.status()).versions;
      const v1 = versions.find((v) => v.version === "v1")!.digest;
      const v2 = versions.find((v) => v.version === "v2")!.digest;
      assert.equal(cp.patches.cached(v1, v2)?.digest, digest, "the cached v2 patch is kept");
      assert.equal(cp.patches.format, 4);
      assert.equal(await patchVersion(cp, "n", 200), 4, "new patches are format 4");
    } finally {
      await cp.close();
    }
  });
});

Deno.test("controlplane --patch-format takes 2, 3 or 4, and refuses anything else before it starts", async () => {
  await withTempDir(async (dir) => {
    for (const bad of ["1", "5", "four", ""]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../mod.ts", import.meta.url).pathname,
          "controlplane",
          "--bind",
          "127.0.0.1",
          "--data",
          `${dir}/cp`,
          `--patch-format=${bad}`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 2, bad);
      assert.match(new TextDecoder().decode(out.stderr), /--patch-format: ".*" is not 2, 3 or 4/);
    }
    assert.equal(
      await Array.fromAsync(Deno.readDir(dir)).then((e) => e.length),
      0,
      "no data dir made",
    );
  });
});
