/**
 * The poolboy CLI end to end, as a user runs it: `encode` a base and a target
 * into a patch, `inspect` it, `apply` it to the base, and `hash` the result;
 * the human summaries state the key facts, `--json` prints the documented
 * fields, `--help` works everywhere, and apply replaces an existing output
 * atomically with verified content.
 *
 * Every command runs as a subprocess (`deno run mod.ts ...`) on real files in a
 * temporary directory.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  concat,
  EXIT,
  poolboy,
  randomBytes,
  type RunResult,
  tempFilesIn,
  withTempDir,
} from "./cli_helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SMALL_CHUNKS = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];
const HEX64 = /^[0-9a-f]{64}$/;

/** A 2 MiB base, and a target that edits it the way a model update might. */
const BASE = randomBytes(2 * MiB, 21);
const TARGET = concat(
  new TextEncoder().encode("v2 header grew\n"), // bytes inserted at the front
  BASE.subarray(0, 900 * KiB),
  randomBytes(8 * KiB, 22), // a range rewritten
  BASE.subarray(908 * KiB),
  randomBytes(100 * KiB, 23), // a tensor appended
);

/** Asserts a successful run: exit 0, nothing on stderr (no progress line off a terminal). */
function assertOk(result: RunResult, what: string): void {
  assert.equal(result.code, EXIT.ok, `${what}: exit ${result.code}\n${result.stderr}`);
  assert.equal(result.stderr, "", `${what}: unexpected stderr`);
}

/** `1.50 MiB`-style sizes, as the summaries print them (exact bytes below 1 KiB). */
function humanBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${value.toFixed(2)} ${units[i]}`;
}

/** Parses a command's `--json` stdout: the whole of stdout must be one JSON value. */
function json(result: RunResult): Record<string, unknown> {
  return JSON.parse(result.stdout);
}

/** The digest `poolboy hash` reports for one file. */
async function hashOf(dir: string, path: string): Promise<string> {
  const result = await poolboy(dir, "hash", path);
  assertOk(result, `hash ${path}`);
  const match = /^([0-9a-f]{64}) {2}(.+)\n$/.exec(result.stdout);
  assert.ok(match, `hash output: ${result.stdout}`);
  assert.equal(match[2], path);
  return match[1];
}

Deno.test("encode → inspect → apply → hash: the round trip, in human summaries", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);

    // encode: says what it wrote and how big it is.
    const encoded = await poolboy(
      dir,
      "encode",
      "base.bin",
      "target.bin",
      "-o",
      "update.patch",
      ...SMALL_CHUNKS,
    );
    assertOk(encoded, "encode");
    const patchSize = (await Deno.stat(`${dir}/update.patch`)).size;
    assert.ok(patchSize < TARGET.length / 4, `the patch should be small, is ${patchSize} bytes`);
    assert.match(encoded.stdout, /^encoded target\.bin against base\.bin$/m);
    assert.ok(
      encoded.stdout.includes(`update.patch: ${humanBytes(patchSize)} = `),
      `encode should state the patch size ${humanBytes(patchSize)}:\n${encoded.stdout}`,
    );
    assert.ok(encoded.stdout.includes(`of the target's ${humanBytes(TARGET.length)}`));
    assert.match(encoded.stdout, /^ {2}COPY +.* in [1-9]\d* ops?$/m);
    assert.match(encoded.stdout, /^ {2}LITERAL +.* in [1-9]\d* ops?$/m);
    const encodedDigest = /^ {2}target +BLAKE3 ([0-9a-f]{64})$/m.exec(encoded.stdout)?.[1];
    assert.ok(encodedDigest, "encode should print the target's BLAKE3");

    // inspect: the header, as numbers a user can check.
    const inspected = await poolboy(dir, "inspect", "update.patch");
    assertOk(inspected, "inspect");
    assert.match(inspected.stdout, /^version +4$/m, "format 4 is the default");
    assert.match(inspected.stdout, /^base samples +\d+ ranges?$/m, "v4 shows its base samples");
    assert.match(inspected.stdout, new RegExp(`^base size +${BASE.length} `, "m"));
    assert.match(inspected.stdout, new RegExp(`^target size +${TARGET.length} `, "m"));
    assert.ok(inspected.stdout.includes(`(${humanBytes(patchSize)}, `), inspected.stdout);
    const inspectedDigest = /^target +BLAKE3 ([0-9a-f]{64})$/m.exec(inspected.stdout)?.[1];
    assert.equal(inspectedDigest, encodedDigest);
    assert.match(inspected.stdout, /^COPY +[1-9]\d* ops?, \d+ bytes/m);
    assert.match(inspected.stdout, /^LITERAL +[1-9]\d* ops?, \d+ bytes/m);

    // apply: verified, and says so.
    const applied = await poolboy(dir, "apply", "base.bin", "update.patch", "-o", "rebuilt.bin");
    assertOk(applied, "apply");
    assert.match(applied.stdout, /rebuilt\.bin: .*BLAKE3 verified/);
    assert.ok(applied.stdout.includes(`BLAKE3 ${encodedDigest}`));
    assert.deepEqual(await Deno.readFile(`${dir}/rebuilt.bin`), TARGET);
    assert.deepEqual(await tempFilesIn(dir), []);

    // hash: b3sum format; the target's digest is the one the patch carries.
    const hashed = await poolboy(dir, "hash", "target.bin", "rebuilt.bin", "base.bin");
    assertOk(hashed, "hash");
    const lines = hashed.stdout.split("\n");
    assert.equal(lines.pop(), "", "hash output ends with a newline");
    assert.equal(lines.length, 3);
    for (const line of lines) assert.match(line, /^[0-9a-f]{64} {2}.+$/);
    assert.equal(lines[0], `${inspectedDigest}  target.bin`);
    assert.equal(lines[1], `${inspectedDigest}  rebuilt.bin`);
    assert.notEqual(lines[2].slice(0, 64), inspectedDigest);
  });
});

Deno.test("encode, inspect, apply and hash --json print the documented fields", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);

    const encodeRun = await poolboy(
      dir,
      "encode",
      "base.bin",
      "target.bin",
      "-o",
      "p",
      "--json",
      ...SMALL_CHUNKS,
    );
    assertOk(encodeRun, "encode --json");
    const encode = json(encodeRun);
    const patchSize = (await Deno.stat(`${dir}/p`)).size;
    assert.equal(encode.patchSize, patchSize);
    assert.equal(encode.baseSize, BASE.length);
    assert.equal(encode.targetSize, TARGET.length);
    assert.equal(typeof encode.copyBytes, "number");
    assert.equal(typeof encode.literalBytes, "number");
    assert.ok((encode.copyBytes as number) > 0 && (encode.literalBytes as number) > 0);
    assert.equal((encode.copyBytes as number) + (encode.literalBytes as number), TARGET.length);
    assert.match(encode.targetBlake3 as string, HEX64);

    const inspectRun = await poolboy(dir, "inspect", "p", "--json");
    assertOk(inspectRun, "inspect --json");
    const inspect = json(inspectRun);
    assert.equal(inspect.version, 4, "format 4 is the default");
    assert.ok(Array.isArray(inspect.baseSamples), "v4: the base samples are listed");
    assert.equal(inspect.baseSize, BASE.length);
    assert.equal(inspect.targetSize, TARGET.length);
    assert.equal(inspect.targetBlake3, encode.targetBlake3);
    assert.equal(inspect.patchSize, patchSize);
    assert.equal(inspect.copyBytes, encode.copyBytes);
    assert.equal(inspect.literalBytes, encode.literalBytes);
    assert.equal(inspect.copyOps, encode.copyOps);
    assert.equal(inspect.literalOps, encode.literalOps);

    const applyRun = await poolboy(dir, "apply", "base.bin", "p", "-o", "out.bin", "--json");
    assertOk(applyRun, "apply --json");
    const apply = json(applyRun);
    assert.equal(apply.verified, true);
    assert.equal(apply.targetBlake3, encode.targetBlake3);
    assert.equal(apply.targetSize, TARGET.length);
    assert.equal(apply.copyBytes, encode.copyBytes);
    assert.equal(apply.literalBytes, encode.literalBytes);
    assert.deepEqual(await Deno.readFile(`${dir}/out.bin`), TARGET);
    assert.equal(apply.threads, 0, "apply hashes in the main thread by default");
    assert.equal(encode.threads, 0, "a small encode hashes in the main thread by default");

    const hashRun = await poolboy(dir, "hash", "--json", "out.bin", "target.bin");
    assertOk(hashRun, "hash --json");
    assert.deepEqual(JSON.parse(hashRun.stdout), [
      { path: "out.bin", blake3: encode.targetBlake3 },
      { path: "target.bin", blake3: encode.targetBlake3 },
    ]);
  });
});

Deno.test("--threads: encode and index write the same bytes with 1 and 3 Workers; apply on a Worker", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);
    for (const threads of ["1", "3"]) {
      const run = await poolboy(
        dir,
        "encode",
        "base.bin",
        "target.bin",
        "-o",
        `p${threads}`,
        "--threads",
        threads,
        "--json",
        ...SMALL_CHUNKS,
      );
      assertOk(run, `encode --threads ${threads}`);
      assert.equal(json(run).threads, Number(threads));
      const indexed = await poolboy(
        dir,
        "index",
        "base.bin",
        "-o",
        `s${threads}`,
        "--threads",
        threads,
        ...SMALL_CHUNKS,
      );
      assertOk(indexed, `index --threads ${threads}`);
    }
    assert.deepEqual(await Deno.readFile(`${dir}/p1`), await Deno.readFile(`${dir}/p3`));
    // Index files hold the mtime, the same for both: the bytes must match too.
    assert.deepEqual(await Deno.readFile(`${dir}/s1`), await Deno.readFile(`${dir}/s3`));
    const applyRun = await poolboy(
      dir,
      "apply",
      "base.bin",
      "p1",
      "-o",
      "out.bin",
      "--threads",
      "1",
    );
    assertOk(applyRun, "apply --threads 1");
    assert.match(applyRun.stdout, /hashed on a Worker/);
    assert.deepEqual(await Deno.readFile(`${dir}/out.bin`), TARGET);
  });
});

Deno.test("apply over an existing OUT replaces it atomically with the verified content", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);
    assertOk(
      await poolboy(dir, "encode", "base.bin", "target.bin", "-o", "p", ...SMALL_CHUNKS),
      "encode",
    );
    // The old model is larger than the new one: nothing of it may remain.
    const old = randomBytes(3 * MiB, 24);
    await Deno.writeFile(`${dir}/model.bin`, old);
    await Deno.link(`${dir}/model.bin`, `${dir}/model.old`); // a second name for the old file
    const before = await Deno.stat(`${dir}/model.bin`);

    const applied = await poolboy(dir, "apply", "base.bin", "p", "-o", "model.bin");
    assertOk(applied, "apply");
    assert.match(applied.stdout, /BLAKE3 verified/);
    const after = await Deno.stat(`${dir}/model.bin`);
    assert.deepEqual(await Deno.readFile(`${dir}/model.bin`), TARGET);
    assert.equal(after.size, TARGET.length);
    // Replaced by a rename, not rewritten in place: the old inode still holds the old bytes.
    assert.notEqual(after.ino, before.ino);
    assert.deepEqual(await Deno.readFile(`${dir}/model.old`), old);
    assert.deepEqual(await tempFilesIn(dir), []);
    assert.equal(await hashOf(dir, "model.bin"), await hashOf(dir, "target.bin"));
  });
});

Deno.test("apply works with absolute paths, paths with spaces and --output=OUT", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/my models`);
    await Deno.writeFile(`${dir}/my models/base v1.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);
    assertOk(
      await poolboy(
        dir,
        "encode",
        `${dir}/my models/base v1.bin`,
        "target.bin",
        "--output",
        "a patch",
        "-q",
      ),
      "encode",
    );
    const applied = await poolboy(
      `${dir}/my models`,
      "apply",
      "base v1.bin",
      `${dir}/a patch`,
      `--output=${dir}/my models/model v2.bin`,
      "--quiet",
    );
    assertOk(applied, "apply");
    assert.deepEqual(await Deno.readFile(`${dir}/my models/model v2.bin`), TARGET);
    assert.deepEqual(await tempFilesIn(`${dir}/my models`), []);
  });
});

Deno.test("encode is deterministic: the same inputs and options give the same patch bytes", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/target`, TARGET);
    assertOk(
      await poolboy(dir, "encode", "base", "target", "-o", "p1", ...SMALL_CHUNKS),
      "encode 1",
    );
    assertOk(
      await poolboy(dir, "encode", "base", "target", "-o", "p2", ...SMALL_CHUNKS),
      "encode 2",
    );
    assert.deepEqual(await Deno.readFile(`${dir}/p1`), await Deno.readFile(`${dir}/p2`));
  });
});

/** Encodes `target` against `base`, applies the patch, and returns the patch's inspect JSON. */
async function roundTrip(
  base: Uint8Array,
  target: Uint8Array,
  ...encodeArgs: string[]
): Promise<Record<string, unknown>> {
  return await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/target`, target);
    assertOk(
      await poolboy(dir, "encode", "base", "target", "-o", "p", ...SMALL_CHUNKS, ...encodeArgs),
      "encode",
    );
    const inspected = await poolboy(dir, "inspect", "p", "--json");
    assertOk(inspected, "inspect");
    assertOk(await poolboy(dir, "apply", "base", "p", "-o", "out"), "apply");
    assert.deepEqual(await Deno.readFile(`${dir}/out`), target);
    return json(inspected);
  });
}

Deno.test("round trip: identical base and target make a patch of COPYs only", async () => {
  const d = await roundTrip(BASE, BASE);
  assert.equal(d.literalBytes, 0);
  assert.equal(d.copyBytes, BASE.length);
  assert.ok((d.patchSize as number) < 1024, `patch is ${d.patchSize} bytes`);
});

Deno.test("round trip: an empty target is a bare 86-byte v2 header", async () => {
  const d = await roundTrip(BASE.subarray(0, 100 * KiB), new Uint8Array(), "--format", "2");
  assert.equal(d.targetSize, 0);
  assert.equal(d.patchSize, 86);
  assert.equal(d.copyOps, 0);
  assert.equal(d.literalOps, 0);
});

Deno.test("round trip: an empty target is a bare v3 header: 88 bytes and 44 per base sample (two 64 KiB samples cover a 100 KiB base)", async () => {
  const d = await roundTrip(BASE.subarray(0, 100 * KiB), new Uint8Array(), "--format", "3");
  assert.equal(d.version, 3);
  assert.equal(d.targetSize, 0);
  assert.equal(d.patchSize, 88 + 2 * 44);
  assert.deepEqual(
    (d.baseSamples as { offset: number; length: number }[]).map((s) => [s.offset, s.length]),
    [[0, 64 * KiB], [64 * KiB, 36 * KiB]],
  );
  assert.equal(d.copyOps, 0);
  assert.equal(d.literalOps, 0);
});

Deno.test("round trip: an empty base makes a patch of LITERALs only", async () => {
  const d = await roundTrip(new Uint8Array(), TARGET.subarray(0, 300 * KiB));
  assert.equal(d.baseSize, 0);
  assert.equal(d.copyBytes, 0);
  assert.equal(d.literalBytes, 300 * KiB);
});

Deno.test("round trip: empty base and empty target", async () => {
  assert.equal(
    (await roundTrip(new Uint8Array(), new Uint8Array(), "--format", "2")).patchSize,
    86,
  );
  const v3 = await roundTrip(new Uint8Array(), new Uint8Array(), "--format", "3");
  assert.equal(v3.patchSize, 88, "v3: no samples of an empty base");
  assert.deepEqual(v3.baseSamples, []);
  const v4 = await roundTrip(new Uint8Array(), new Uint8Array());
  assert.equal(v4.patchSize, 87, "v4 (the default): no samples of an empty base");
  assert.deepEqual(v4.baseSamples, []);
});

Deno.test("round trip: an empty target is a bare v4 header by default: 87 bytes and 8 per base sample (the same two ranges)", async () => {
  const d = await roundTrip(BASE.subarray(0, 100 * KiB), new Uint8Array());
  assert.equal(d.version, 4);
  assert.equal(d.patchSize, 87 + 2 * 8);
  assert.deepEqual(
    (d.baseSamples as { offset: number; length: number }[]).map((s) => [s.offset, s.length]),
    [[0, 64 * KiB], [64 * KiB, 36 * KiB]],
  );
  assert.equal(d.copyOps, 0);
  assert.equal(d.literalOps, 0);
});

Deno.test("round trip: small files below the minimum chunk size", async () => {
  await roundTrip(new TextEncoder().encode("hello"), new TextEncoder().encode("hello, world"));
});

const USAGE_LINES: Record<string, RegExp> = {
  encode: /^Usage: poolboy encode BASE TARGET -o PATCH/m,
  apply: /^Usage: poolboy apply BASE PATCH -o OUT/m,
  inspect: /^Usage: poolboy inspect PATCH/m,
  hash: /^Usage: poolboy hash FILE\.\.\./m,
};

Deno.test("--help at the top level exits 0 and shows the usage line and every command", async () => {
  await withTempDir(async (dir) => {
    for (const args of [["--help"], ["-h"], ["help"]]) {
      const result = await poolboy(dir, ...args);
      assertOk(result, args.join(" "));
      assert.match(result.stdout, /^Usage: poolboy <command> \[options\]$/m);
      for (const command of Object.keys(USAGE_LINES)) {
        assert.match(
          result.stdout,
          new RegExp(`^ {2}${command} `, "m"),
          `${args}: lists ${command}`,
        );
      }
    }
  });
});

for (const [command, usageLine] of Object.entries(USAGE_LINES)) {
  Deno.test(`${command} --help, -h and "poolboy help ${command}" exit 0 and show its usage`, async () => {
    await withTempDir(async (dir) => {
      // --help wins over missing arguments and options.
      for (
        const args of [[command, "--help"], [command, "-h"], ["help", command], [
          command,
          "x",
          "--help",
        ]]
      ) {
        const result = await poolboy(dir, ...args);
        assertOk(result, args.join(" "));
        assert.match(result.stdout, usageLine, `${args.join(" ")}:\n${result.stdout}`);
        assert.match(result.stdout, /Exit codes: 0 ok, 2 usage, 3 I\/O/);
      }
    });
  });
}

Deno.test("encode --format 1 writes the v1 format of docs/spec/patch-v1.md, --format 2 v2, --format 3 v3, --format 4 (the default) v4", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);
    for (
      const [format, version] of [["1", 1], ["2", 2], ["3", 3], ["4", 4], [
        undefined,
        4,
      ]] as const
    ) {
      const args = format ? ["--format", format] : [];
      const run = await poolboy(dir, "encode", "base.bin", "target.bin", "-o", "p", ...args);
      assertOk(run, `encode --format ${format}`);
      const inspect = json(await poolboy(dir, "inspect", "p", "--json"));
      assert.equal(inspect.version, version, `--format ${format}`);
      const applied = await poolboy(dir, "apply", "base.bin", "p", "-o", "out.bin");
      assertOk(applied, `apply v${version}`);
      assert.deepEqual(await Deno.readFile(`${dir}/out.bin`), TARGET);
    }
  });
});

Deno.test("encode --format 5 is a usage error (exit 2) naming the formats", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, BASE);
    await Deno.writeFile(`${dir}/target.bin`, TARGET);
    const run = await poolboy(dir, "encode", "base.bin", "target.bin", "-o", "p", "--format", "5");
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--format must be 1, 2, 3 or 4, got "5"/);
  });
});
