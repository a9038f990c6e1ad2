/**
 * The CLI refuses bad input cleanly: every mistake a user (or a damaged or
 * hostile patch) can make gives the documented exit code, one line on stderr
 * that names the problem, no stack trace, and leaves the output path as it was
 * (absent, or byte-for-byte unchanged) with no temporary file beside it.
 *
 * Exit codes: 2 usage, 3 I/O, 4 malformed patch, 5 verification failed.
 *
 * Each case runs `poolboy` as a subprocess (`deno run mod.ts ...`) on real files
 * in a temporary directory.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  assertUserError,
  concat,
  copyOp,
  decodeOutput,
  exists,
  EXIT,
  fromHex,
  GNU_TIME,
  header,
  HEADER_SIZE,
  literalOp,
  parseOps,
  poolboy,
  poolboyArgs,
  poolboyMeasured,
  randomBytes,
  type RunResult,
  tempFilesIn,
  TMPFS_UNAVAILABLE,
  withTempDir,
  withTmpfs,
} from "./cli_helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SMALL_CHUNKS = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];

// ---------------------------------------------------------------------------
// Fixture: a real base/target pair and the patch the CLI makes of it, kept in
// memory; each test writes what it needs into its own temporary directory.
//
// base   1 MiB of PRNG bytes
// target base[0..400K] + 64 KiB new + base[400K..] + base again with 1 KiB changed
//        (about 2 MiB: COPY, LITERAL, COPY, ..., a small patch for a 2 MiB output)
// ---------------------------------------------------------------------------

const BASE = randomBytes(1 * MiB, 1);
const TARGET = (() => {
  const second = BASE.slice();
  second.set(randomBytes(1 * KiB, 3), 700 * KiB);
  return concat(
    BASE.subarray(0, 400 * KiB),
    randomBytes(64 * KiB, 2),
    BASE.subarray(400 * KiB),
    second,
  );
})();

/** The patch `poolboy encode` makes, and what it said about it. */
const FIXTURE = await withTempDir(async (dir) => {
  await Deno.writeFile(`${dir}/base`, BASE);
  await Deno.writeFile(`${dir}/target`, TARGET);
  const run = await poolboy(
    dir,
    "encode",
    "base",
    "target",
    "-o",
    "patch",
    "--json",
    "--format",
    "1",
    ...SMALL_CHUNKS,
  );
  assert.equal(run.code, 0, `fixture encode failed: ${run.stderr}`);
  const summary = JSON.parse(run.stdout) as { targetBlake3: string };
  return { patch: await Deno.readFile(`${dir}/patch`), digest: fromHex(summary.targetBlake3) };
});
const PATCH = FIXTURE.patch;
const OPS = parseOps(PATCH);
const FIRST_COPY = OPS.find((op) => op.kind === "copy")!;
const FIRST_LITERAL = OPS.find((op) => op.kind === "literal")!;
const LAST_OP = OPS[OPS.length - 1];
assert.ok(FIRST_COPY && FIRST_LITERAL, "the fixture patch must hold both COPY and LITERAL ops");
assert.ok(FIRST_LITERAL.length >= 1 * KiB, "the fixture's first LITERAL must carry bytes");
assert.ok(PATCH.length < TARGET.length / 4, "the fixture patch must be small");

/** A header that matches the fixture's base (and, by default, its target). */
function fixtureHeader(fields: Partial<Parameters<typeof header>[0]> = {}): Uint8Array {
  return header({
    baseSize: BASE.length,
    targetSize: TARGET.length,
    digest: FIXTURE.digest,
    ...fields,
  });
}

/** The fixture patch with `bytes` written over it at `at`. */
function patchedAt(at: number, bytes: Uint8Array): Uint8Array {
  const copy = PATCH.slice();
  copy.set(bytes, at);
  return copy;
}

function u16(value: number): Uint8Array {
  const bytes = new Uint8Array(2);
  new DataView(bytes.buffer).setUint16(0, value, true);
  return bytes;
}

/** Content of an output file that existed before the failing command. */
const PREVIOUS = new TextEncoder().encode("the previous version: must survive any failure\n");

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/** Marks a path to create as a directory rather than a file. */
const DIR = Symbol("directory");

interface Case {
  /** What is wrong, as the test's name says it. */
  readonly name: string;
  /** Files to create in the working directory first: bytes, or DIR. */
  readonly files: Record<string, Uint8Array | typeof DIR>;
  readonly args: string[];
  readonly code: number;
  /** Substrings the error line must contain (case-insensitive). */
  readonly mentions: string[];
  /**
   * The output the command must not create or change. The case also runs with
   * this path already holding PREVIOUS, which must survive byte for byte.
   */
  readonly out?: string;
  /** The patch itself is at fault: `inspect PATCH` must fail with the same code and line. */
  readonly inspect?: boolean;
}

/** `apply base patch -o out` with the fixture's base and the given patch bytes. */
function applyCase(
  name: string,
  patch: Uint8Array,
  code: number,
  mentions: string[],
  base: Uint8Array = BASE,
): Case {
  return {
    name,
    files: { base, patch },
    args: ["apply", "base", "patch", "-o", "out"],
    code,
    mentions,
    out: "out",
    inspect: code === EXIT.malformed,
  };
}

/** A malformed patch: exit 4, and `inspect` agrees. */
function malformed(name: string, patch: Uint8Array, ...mentions: string[]): Case {
  return applyCase(name, patch, EXIT.malformed, mentions);
}

const TWO_63 = 1n << 63n;
const TWO_64_MINUS_1 = (1n << 64n) - 1n;

const CASES: Case[] = [
  // Inputs that are not there, or not files.
  {
    name: "apply with a missing base",
    files: { patch: PATCH },
    args: ["apply", "base", "patch", "-o", "out"],
    code: EXIT.io,
    mentions: ["cannot open base", '"base"', "no such file"],
    out: "out",
  },
  {
    name: "apply with a missing patch",
    files: { base: BASE },
    args: ["apply", "base", "patch", "-o", "out"],
    code: EXIT.io,
    mentions: ["cannot open patch", '"patch"', "no such file"],
    out: "out",
  },
  {
    name: "apply with a directory as the base",
    files: { base: DIR, patch: PATCH },
    args: ["apply", "base", "patch", "-o", "out"],
    code: EXIT.io,
    mentions: ["base", "is a directory"],
    out: "out",
  },
  {
    name: "apply with a directory as the patch",
    files: { base: BASE, patch: DIR },
    args: ["apply", "base", "patch", "-o", "out"],
    code: EXIT.io,
    mentions: ["patch", "is a directory"],
    out: "out",
  },
  {
    name: "apply with -o naming a directory",
    files: { base: BASE, patch: PATCH, outdir: DIR },
    args: ["apply", "base", "patch", "-o", "outdir"],
    code: EXIT.io,
    mentions: ["outdir", "is a directory"],
  },
  {
    name: "apply with -o inside a directory that does not exist",
    files: { base: BASE, patch: PATCH },
    args: ["apply", "base", "patch", "-o", "nowhere/out"],
    code: EXIT.io,
    mentions: ["nowhere/out", "no such file"],
  },
  {
    name: "encode with a missing base",
    files: { target: TARGET },
    args: ["encode", "base", "target", "-o", "out"],
    code: EXIT.io,
    mentions: ["cannot open base", "no such file"],
    out: "out",
  },
  {
    name: "encode with a missing target",
    files: { base: BASE },
    args: ["encode", "base", "target", "-o", "out"],
    code: EXIT.io,
    mentions: ["cannot open target", '"target"', "no such file"],
    out: "out",
  },
  {
    name: "encode with a directory as the base",
    files: { base: DIR, target: TARGET },
    args: ["encode", "base", "target", "-o", "out"],
    code: EXIT.io,
    mentions: ["base", "is a directory"],
    out: "out",
  },
  {
    name: "encode with a directory as the target",
    files: { base: BASE, target: DIR },
    args: ["encode", "base", "target", "-o", "out"],
    code: EXIT.io,
    mentions: ["target", "is a directory"],
    out: "out",
  },
  {
    name: "encode with -o naming a directory",
    files: { base: BASE, target: TARGET, outdir: DIR },
    args: ["encode", "base", "target", "-o", "outdir", ...SMALL_CHUNKS],
    code: EXIT.io,
    mentions: ["outdir", "is a directory"],
  },
  {
    name: "inspect with a missing patch",
    files: {},
    args: ["inspect", "patch"],
    code: EXIT.io,
    mentions: ["cannot open patch", "no such file"],
  },
  {
    name: "hash of a missing file",
    files: {},
    args: ["hash", "nothing.bin"],
    code: EXIT.io,
    mentions: ["nothing.bin", "no such file"],
  },
  {
    name: "hash of a directory",
    files: { somedir: DIR },
    args: ["hash", "somedir"],
    code: EXIT.io,
    mentions: ["somedir", "is a directory"],
  },

  // A patch cut short, at every kind of place.
  ...[0, 3, 5].map((n) =>
    malformed(
      `a patch truncated to ${n} bytes (inside magic and version)`,
      PATCH.slice(0, n),
      "truncated",
      `${n} bytes`,
    )
  ),
  ...[6, 20, 53].map((n) =>
    malformed(
      `a patch truncated to ${n} bytes (inside the header)`,
      PATCH.slice(0, n),
      "truncated",
      "header",
      `${n}`,
    )
  ),
  malformed(
    "a patch that ends right after its header though the target needs ops",
    PATCH.slice(0, HEADER_SIZE),
    "truncated",
    `offset ${HEADER_SIZE}`,
  ),
  ...[1, 5, 9, 16].map((k) =>
    malformed(
      `a patch cut ${k} bytes into a COPY op (inside its offset/len fields)`,
      PATCH.slice(0, FIRST_COPY.at + k),
      "truncated",
      "COPY",
    )
  ),
  ...[1, 4, 8].map((k) =>
    malformed(
      `a patch cut ${k} bytes into a LITERAL op (inside its length field)`,
      PATCH.slice(0, FIRST_LITERAL.at + k),
      "truncated",
      "LITERAL",
    )
  ),
  malformed(
    "a patch cut right after a LITERAL's length, before its bytes",
    PATCH.slice(0, FIRST_LITERAL.at + 9),
    "truncated",
    "inside a LITERAL",
  ),
  malformed(
    "a patch cut in the middle of a LITERAL's bytes",
    PATCH.slice(0, FIRST_LITERAL.at + 9 + Math.floor(FIRST_LITERAL.length / 2)),
    "truncated",
    "inside a LITERAL",
  ),
  malformed(
    "a patch cut between two ops, before the target is complete",
    PATCH.slice(0, LAST_OP.at),
    "truncated",
    `of ${TARGET.length}`,
  ),
  malformed(
    "a patch whose ops produce fewer bytes than target_size",
    concat(fixtureHeader({ targetSize: 100 }), copyOp(0, 60), literalOp(39, randomBytes(39, 9))),
    "truncated",
    "99 of 100",
  ),

  // Not a patch, or not one this version reads.
  malformed(
    "a patch with bad magic",
    patchedAt(0, new TextEncoder().encode("PULL")),
    "bad magic",
    "PULL",
  ),
  malformed(
    "a model file given as the patch (no magic)",
    BASE.slice(0, 64 * KiB),
    "not a poolboy patch",
  ),
  malformed("a patch of version 5", patchedAt(4, u16(5)), "unknown patch version 5"),
  malformed("a patch of version 9", patchedAt(4, u16(9)), "unknown patch version 9"),
  malformed("a patch of version 0", patchedAt(4, u16(0)), "unknown patch version 0"),

  // Ops that are unknown or out of bounds.
  malformed(
    "an unknown op byte 0x07 right after the header",
    concat(fixtureHeader(), new Uint8Array([0x07]), copyOp(0, 16)),
    "unknown op 0x07",
    `offset ${HEADER_SIZE}`,
  ),
  malformed(
    "an unknown op byte 0x07 in place of a later op",
    patchedAt(LAST_OP.at, new Uint8Array([0x07])),
    "unknown op 0x07",
    `offset ${LAST_OP.at}`,
  ),
  malformed(
    "an op byte 0x00",
    concat(fixtureHeader(), new Uint8Array(17)),
    "unknown op 0x00",
  ),
  malformed(
    "a COPY that reads past the end of the base (offset+len > base_size)",
    concat(fixtureHeader({ targetSize: 20 }), copyOp(BASE.length - 10, 20)),
    "COPY",
    "beyond the base",
  ),
  malformed(
    "a COPY that starts at the end of the base",
    concat(fixtureHeader({ targetSize: 1 }), copyOp(BASE.length, 1)),
    "COPY",
    "beyond the base",
  ),
  malformed(
    "a COPY whose offset+len wraps around 2^64",
    concat(fixtureHeader({ targetSize: 2 }), copyOp(TWO_64_MINUS_1, 3)),
    "COPY offset",
    "too large",
  ),
  malformed(
    "a COPY of length 2^64-1",
    concat(fixtureHeader({ targetSize: 2 }), copyOp(0, TWO_64_MINUS_1)),
    "COPY length",
    "too large",
  ),
  malformed(
    "a COPY that overruns target_size",
    concat(fixtureHeader({ targetSize: 100 }), copyOp(0, 101)),
    "COPY",
    "target_size 100",
  ),
  malformed(
    "a LITERAL that overruns target_size",
    concat(fixtureHeader({ targetSize: 100 }), literalOp(101, randomBytes(101, 4))),
    "LITERAL",
    "target_size 100",
  ),
  malformed(
    "a later op that overruns target_size",
    concat(fixtureHeader({ targetSize: 100 }), copyOp(0, 90), literalOp(11, randomBytes(11, 5))),
    "LITERAL",
    "only 10 of target_size 100 remain",
  ),
  malformed(
    "a LITERAL whose length is 2^63",
    concat(fixtureHeader(), literalOp(TWO_63, randomBytes(64, 6))),
    "LITERAL length",
    "too large",
  ),
  malformed(
    "a LITERAL whose length is 2^64-1",
    concat(fixtureHeader(), literalOp(TWO_64_MINUS_1, randomBytes(64, 7))),
    "LITERAL length",
    "too large",
  ),
  malformed(
    "a LITERAL of 2^52 bytes (a safe integer) in a 2 MiB target",
    concat(fixtureHeader(), literalOp(2n ** 52n, randomBytes(64, 8))),
    "LITERAL",
    "target_size",
  ),
  malformed(
    "a header whose base_size is 2^64-1",
    fixtureHeader({ baseSize: TWO_64_MINUS_1 }),
    "base_size",
    "too large",
  ),
  malformed(
    "a header whose target_size is 2^63",
    fixtureHeader({ targetSize: TWO_63 }),
    "target_size",
    "too large",
  ),
  malformed(
    "trailing bytes after the last op (one zero byte)",
    concat(PATCH, new Uint8Array(1)),
    "trailing bytes",
  ),
  malformed(
    "trailing bytes after the last op (a whole valid COPY)",
    concat(PATCH, copyOp(0, 1)),
    "trailing bytes",
    `offset ${PATCH.length}`,
  ),
  malformed(
    "ops after an empty target's header",
    concat(fixtureHeader({ targetSize: 0 }), literalOp(0)),
    "trailing bytes",
  ),

  // Well-formed, but not for this base, or damaged inside.
  applyCase(
    "apply with a base one byte short",
    PATCH,
    EXIT.verification,
    ["wrong base", `${BASE.length - 1} bytes`, `${BASE.length}-byte base`],
    BASE.slice(0, -1),
  ),
  applyCase(
    "apply with a base one byte long",
    PATCH,
    EXIT.verification,
    ["wrong base"],
    concat(BASE, new Uint8Array(1)),
  ),
  applyCase(
    "apply with a base of the right size but different content",
    PATCH,
    EXIT.verification,
    ["BLAKE3", "does not verify"],
    (() => {
      const other = BASE.slice();
      other[FIRST_COPY.offset + 10] ^= 0xff;
      return other;
    })(),
  ),
  applyCase(
    "apply of a patch whose LITERAL bytes were damaged",
    (() => {
      const damaged = PATCH.slice();
      damaged[FIRST_LITERAL.at + 9 + 100] ^= 0x01;
      return damaged;
    })(),
    EXIT.verification,
    ["BLAKE3", "does not verify"],
  ),
  applyCase(
    "apply of a patch whose target digest was damaged",
    patchedAt(22, new Uint8Array([FIXTURE.digest[0] ^ 0x80])),
    EXIT.verification,
    ["BLAKE3", "does not verify"],
  ),

  // Command lines that are wrong.
  usage("an unknown command", ["frobnicate"], "unknown command", "frobnicate"),
  usage("help for an unknown command", ["help", "frobnicate"], "unknown command", "frobnicate"),
  usage("an unknown flag to apply", ["apply", "base", "patch", "-o", "out", "--frob"], "--frob"),
  usage("an unknown flag to encode", ["encode", "base", "target", "-o", "out", "--fast"], "--fast"),
  usage("an unknown flag to inspect", ["inspect", "--verbose", "patch"], "--verbose"),
  usage("an unknown flag to hash", ["hash", "-x", "file"], "-x"),
  usage("apply without -o", ["apply", "base", "patch"], "-o OUT is required"),
  usage("encode without -o", ["encode", "base", "target"], "-o PATCH is required"),
  usage("apply with -o but no value", ["apply", "base", "patch", "-o"], "apply:", "--output"),
  usage(
    "apply with one positional",
    ["apply", "base", "-o", "out"],
    "BASE PATCH",
    "got 1 argument",
  ),
  usage(
    "apply with three positionals",
    ["apply", "base", "patch", "extra", "-o", "out"],
    "got 3 arguments",
  ),
  usage(
    "encode with one positional",
    ["encode", "base", "-o", "out"],
    "BASE TARGET",
    "got 1 argument",
  ),
  usage("inspect with no patch", ["inspect"], "PATCH", "got 0 arguments"),
  usage("inspect with two patches", ["inspect", "a", "b"], "PATCH", "got 2 arguments"),
  usage("hash with no file", ["hash"], "one or more"),
  usage(
    "--avg-chunk 3MiB (not a power of two)",
    ["encode", "base", "target", "-o", "out", "--avg-chunk", "3MiB"],
    "power of two",
  ),
  usage(
    "--avg-chunk lots (not a size)",
    ["encode", "base", "target", "-o", "out", "--avg-chunk", "lots"],
    "--avg-chunk",
    '"lots"',
    "not a size",
  ),
  usage(
    "--min-chunk larger than --max-chunk",
    [
      "encode",
      "base",
      "target",
      "-o",
      "out",
      "--min-chunk",
      "1MiB",
      "--avg-chunk",
      "1MiB",
      "--max-chunk",
      "64KiB",
    ],
    "min <= avg <= max",
  ),
  usage(
    "encode --threads 65",
    ["encode", "base", "target", "-o", "out", "--threads", "65"],
    "--threads",
    "0 to 64",
  ),
  usage(
    "encode --threads many",
    ["encode", "base", "target", "-o", "out", "--threads", "many"],
    '"many"',
  ),
  usage(
    "index --threads 65",
    ["index", "file", "-o", "file.idx", "--threads", "65"],
    "1 to 64",
  ),
  usage(
    "the renamed command signature (now index)",
    ["signature", "file", "-o", "file.sig"],
    '"signature" was renamed',
    "poolboy index FILE -o FILE.idx",
    "encode --base-index",
  ),
  usage(
    "encode with the renamed option --base-sig (now --base-index)",
    ["encode", "base", "target", "-o", "out", "--base-sig", "base.sig"],
    "--base-sig was renamed",
    "--base-index",
  ),
  usage(
    "apply --threads 2 (one Worker at most)",
    ["apply", "base", "patch", "-o", "out", "--threads", "2"],
    "0 (main thread) or 1 (a Worker)",
  ),
  usage(
    "--max-chunk 0",
    ["encode", "base", "target", "-o", "out", "--max-chunk", "0"],
    "max chunk size",
  ),
  {
    name: "apply with -o equal to the base path",
    files: { base: BASE, patch: PATCH },
    args: ["apply", "base", "patch", "-o", "base"],
    code: EXIT.usage,
    mentions: ["must not be BASE"],
  },
  {
    name: "apply with -o naming the base by another spelling (./base)",
    files: { base: BASE, patch: PATCH },
    args: ["apply", "base", "patch", "-o", "./base"],
    code: EXIT.usage,
    mentions: ["must not be BASE"],
  },
];

/** A usage error: exit 2, whatever files exist (none here: arguments are checked first). */
function usage(name: string, args: string[], ...mentions: string[]): Case {
  return { name, files: {}, args, code: EXIT.usage, mentions };
}

// ---------------------------------------------------------------------------
// Running the cases
// ---------------------------------------------------------------------------

async function createFiles(dir: string, files: Case["files"]): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    if (content === DIR) await Deno.mkdir(`${dir}/${name}`);
    else if (content !== undefined) await Deno.writeFile(`${dir}/${name}`, content);
  }
}

/** The directory part of a relative path, `.` for a bare name. */
function dirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "." : path.slice(0, slash);
}

/** After a failure: inputs unchanged, OUT absent or as it was, no temporary file left. */
async function assertNothingWritten(
  dir: string,
  c: Case,
  previousOut: Uint8Array | undefined,
): Promise<void> {
  for (const [name, content] of Object.entries(c.files)) {
    if (content === DIR) {
      assert.ok(
        (await Deno.stat(`${dir}/${name}`)).isDirectory,
        `${name} must still be a directory`,
      );
      assert.deepEqual(await tempFilesIn(`${dir}/${name}`), [], `temporary file left in ${name}/`);
    } else if (content !== undefined) {
      assert.deepEqual(await Deno.readFile(`${dir}/${name}`), content, `input ${name} was changed`);
    }
  }
  if (c.out !== undefined) {
    if (previousOut === undefined) {
      assert.equal(await exists(`${dir}/${c.out}`), false, `${c.out} must not be created`);
    } else {
      assert.deepEqual(await Deno.readFile(`${dir}/${c.out}`), previousOut, `${c.out} was changed`);
    }
    if (await exists(`${dir}/${dirOf(c.out)}`)) {
      assert.deepEqual(
        await tempFilesIn(`${dir}/${dirOf(c.out)}`),
        [],
        "temporary file left beside OUT",
      );
    }
  }
  assert.deepEqual(await tempFilesIn(dir), [], "temporary file left in the working directory");
}

for (const c of CASES) {
  Deno.test(`refuses ${c.name}: exit ${c.code}, one clear line, nothing written`, async () => {
    const variants = c.out === undefined ? [undefined] : [undefined, PREVIOUS];
    for (const previousOut of variants) {
      await withTempDir(async (dir) => {
        await createFiles(dir, c.files);
        if (previousOut) await Deno.writeFile(`${dir}/${c.out}`, previousOut);
        const result = await poolboy(dir, ...c.args);
        assertUserError(result, c.code, ...c.mentions);
        await assertNothingWritten(dir, c, previousOut);
        if (c.inspect && previousOut === undefined) {
          const inspected = await poolboy(dir, "inspect", "patch");
          assertUserError(inspected, c.code, ...c.mentions);
          assert.equal(
            inspected.stderr,
            result.stderr,
            "inspect must report the patch as apply does",
          );
        }
      });
    }
  });
}

Deno.test("refuses apply with -o naming the base through a symlink or a hard link: exit 2, base untouched", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, PATCH);
    await Deno.symlink("base", `${dir}/sym`);
    await Deno.link(`${dir}/base`, `${dir}/hard`);
    for (const out of ["sym", "hard", `${dir}/base`]) {
      const result = await poolboy(dir, "apply", "base", "patch", "-o", out);
      assertUserError(result, EXIT.usage, "must not be BASE");
      assert.deepEqual(await Deno.readFile(`${dir}/base`), BASE, `base changed by -o ${out}`);
    }
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test({
  name: "refuses encode with -o equal to the base or the target: exit 2, inputs untouched",
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, BASE);
      await Deno.writeFile(`${dir}/target`, TARGET);
      for (const out of ["base", "target", "./target"]) {
        const result = await poolboy(dir, "encode", "base", "target", "-o", out, ...SMALL_CHUNKS);
        assertUserError(result, EXIT.usage, "must not be");
        assert.deepEqual(await Deno.readFile(`${dir}/base`), BASE, `base changed by -o ${out}`);
        assert.deepEqual(
          await Deno.readFile(`${dir}/target`),
          TARGET,
          `target changed by -o ${out}`,
        );
      }
      assert.deepEqual(await tempFilesIn(dir), []);
    });
  },
});

Deno.test("no command at all: exit 2 with one error line naming the commands", async () => {
  await withTempDir(async (dir) => {
    const result = await poolboy(dir);
    assertUserError(result, EXIT.usage, "no command given", "encode, apply, inspect, hash");
  });
});

Deno.test("apply refuses an OUT that is a device node and leaves it a device", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, PATCH);
    const made = await new Deno.Command("mknod", { args: [`${dir}/null`, "c", "1", "3"] }).output();
    if (!made.success) {
      console.warn("apply device-node test: mknod failed (not root?); checked with a FIFO instead");
      await new Deno.Command("mkfifo", { args: [`${dir}/null`] }).output();
    }
    const result = await poolboy(dir, "apply", "base", "patch", "-o", "null");
    assertUserError(result, EXIT.io, "not a regular file");
    assert.ok(!(await Deno.lstat(`${dir}/null`)).isFile, "the node was replaced by a file");
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test("apply refuses an OUT ending in '/' and creates nothing", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, PATCH);
    const result = await poolboy(dir, "apply", "base", "patch", "-o", "newdir/");
    assertUserError(result, EXIT.io, "names a directory");
    assert.equal(await exists(`${dir}/newdir`), false);
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test("apply writes an OUT whose name is 250 bytes long (the temporary name stays legal)", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, PATCH);
    const name = "m".repeat(250);
    const result = await poolboy(dir, "apply", "base", "patch", "-o", name);
    assert.equal(result.code, EXIT.ok, result.stderr);
    assert.deepEqual(await Deno.readFile(`${dir}/${name}`), TARGET);
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test("apply writes an OUT whose 250-byte name is multibyte UTF-8 (the temporary name is cut on bytes)", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, PATCH);
    const name = "é".repeat(125); // 125 characters, 250 bytes
    const result = await poolboy(dir, "apply", "base", "patch", "-o", name);
    assert.equal(result.code, EXIT.ok, result.stderr);
    assert.deepEqual(await Deno.readFile(`${dir}/${name}`), TARGET);
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test("apply over an existing OUT keeps its permission bits", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, PATCH);
    await Deno.writeFile(`${dir}/out`, PREVIOUS);
    await Deno.chmod(`${dir}/out`, 0o600);
    const result = await poolboy(dir, "apply", "base", "patch", "-o", "out");
    assert.equal(result.code, EXIT.ok, result.stderr);
    assert.equal((await Deno.stat(`${dir}/out`)).mode! & 0o777, 0o600);
  });
});

Deno.test("a reader that closes stdout early is not an error (inspect | head -1)", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/patch`, PATCH);
    const child = new Deno.Command(Deno.execPath(), {
      args: poolboyArgs(["inspect", "patch"]),
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await child.stdout.cancel(); // the reader goes away before anything is written
    const status = await child.status;
    const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    assert.equal(status.code, EXIT.ok, stderr);
    assert.doesNotMatch(stderr, /internal error/);
  });
});

Deno.test("hash stops at the first missing file with exit 3, after printing the digests before it", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/a`, BASE.subarray(0, 1000));
    const result = await poolboy(dir, "hash", "a", "missing", "a");
    assert.equal(result.code, EXIT.io, result.stderr);
    assert.match(result.stdout, /^[0-9a-f]{64} {2}a\n$/);
    assert.match(result.stderr, /^poolboy: error: .*"missing".*no such file.*\n$/);
  });
});

// ---------------------------------------------------------------------------
// Memory: a hostile length is refused without being allocated.
// ---------------------------------------------------------------------------

/** Far below the gigabytes a hostile length asks for; well above Deno's own ~50 MB. */
const RSS_LIMIT_KIB = 160 * 1024;

Deno.test({
  name: "a LITERAL claiming 2^63 bytes fails fast with exit 4 and small peak RSS",
  ignore: GNU_TIME === undefined,
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, BASE);
      await Deno.writeFile(
        `${dir}/patch`,
        concat(fixtureHeader(), literalOp(TWO_63, randomBytes(4 * KiB, 10))),
      );
      await poolboy(dir, "--help"); // warm Deno's module cache so compiling is not measured
      const result = await poolboyMeasured(dir, "apply", "base", "patch", "-o", "out");
      assertUserError(result, EXIT.malformed, "LITERAL length", "too large");
      assert.ok(result.peakRssKiB < RSS_LIMIT_KIB, `peak RSS ${result.peakRssKiB} KiB`);
      assert.equal(await exists(`${dir}/out`), false);
      assert.deepEqual(await tempFilesIn(dir), []);
    });
  },
});

Deno.test({
  name: "a LITERAL claiming 1 GiB of a 1 GiB target, cut after 4 MiB: exit 4, small peak RSS",
  ignore: GNU_TIME === undefined,
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, BASE);
      const patch = concat(
        header({ baseSize: BASE.length, targetSize: 1 << 30 }),
        literalOp(1 << 30, randomBytes(4 * MiB, 11)),
      );
      await Deno.writeFile(`${dir}/patch`, patch);
      await poolboy(dir, "--help");
      for (const args of [["apply", "base", "patch", "-o", "out"], ["inspect", "patch"]]) {
        const result = await poolboyMeasured(dir, ...args);
        assertUserError(result, EXIT.malformed, "truncated", "inside a LITERAL");
        assert.ok(
          result.peakRssKiB < RSS_LIMIT_KIB,
          `${args[0]}: peak RSS ${result.peakRssKiB} KiB`,
        );
      }
      assert.equal(await exists(`${dir}/out`), false);
      assert.deepEqual(await tempFilesIn(dir), []);
    });
  },
});

if (GNU_TIME === undefined) {
  console.warn("cli_errors_test: /usr/bin/time is not installed; the peak-RSS checks are ignored");
}

// ---------------------------------------------------------------------------
// The output directory fails: full, or read-only (tmpfs mounts; root ignores chmod).
// ---------------------------------------------------------------------------

if (TMPFS_UNAVAILABLE !== undefined) {
  console.warn(`cli_errors_test: full/read-only directory tests ignored: ${TMPFS_UNAVAILABLE}`);
}

Deno.test({
  name:
    "apply into a full filesystem: exit 3 'no space left', previous OUT unchanged, no temp file",
  ignore: TMPFS_UNAVAILABLE !== undefined,
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, BASE);
      await Deno.writeFile(`${dir}/patch`, PATCH);
      await withTmpfs("256k", async (full) => {
        await Deno.writeFile(`${full}/out`, PREVIOUS);
        const result = await poolboy(dir, "apply", "base", "patch", "-o", `${full}/out`);
        assertUserError(result, EXIT.io, "no space left");
        assert.deepEqual(await Deno.readFile(`${full}/out`), PREVIOUS);
        assert.deepEqual(await tempFilesIn(full), []);
        // Nothing else is left either: the space is free again.
        const names = [];
        for await (const entry of Deno.readDir(full)) names.push(entry.name);
        assert.deepEqual(names, ["out"]);
      });
    });
  },
});

Deno.test({
  name: "encode into a full filesystem: exit 3 'no space left', no patch, no temp file",
  ignore: TMPFS_UNAVAILABLE !== undefined,
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, randomBytes(64 * KiB, 12)); // nothing in common
      await Deno.writeFile(`${dir}/target`, TARGET);
      await withTmpfs("256k", async (full) => {
        const result = await poolboy(
          dir,
          "encode",
          "base",
          "target",
          "-o",
          `${full}/patch`,
          ...SMALL_CHUNKS,
        );
        assertUserError(result, EXIT.io, "no space left");
        assert.equal(await exists(`${full}/patch`), false);
        assert.deepEqual(await tempFilesIn(full), []);
      });
    });
  },
});

Deno.test({
  name: "apply into a read-only filesystem: exit 3 'read-only', previous OUT unchanged",
  ignore: TMPFS_UNAVAILABLE !== undefined,
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, BASE);
      await Deno.writeFile(`${dir}/patch`, PATCH);
      await withTmpfs("4m", async (ro) => {
        await Deno.writeFile(`${ro}/out`, PREVIOUS);
        const remount = await new Deno.Command("mount", { args: ["-o", "remount,ro", ro] })
          .output();
        assert.ok(remount.success, "mount -o remount,ro");
        for (const out of [`${ro}/out`, `${ro}/new`]) {
          const result = await poolboy(dir, "apply", "base", "patch", "-o", out);
          assertUserError(result, EXIT.io, "read-only");
        }
        assert.deepEqual(await Deno.readFile(`${ro}/out`), PREVIOUS);
        assert.equal(await exists(`${ro}/new`), false);
        const encoded = await poolboy(dir, "encode", "base", "base", "-o", `${ro}/patch`);
        assertUserError(encoded, EXIT.io, "read-only");
      });
    });
  },
});

// ---------------------------------------------------------------------------
// Interrupted: Ctrl-C or SIGTERM in the middle of writing leaves nothing behind.
// ---------------------------------------------------------------------------

/**
 * A patch whose output is 200 MiB of repeated PRNG blocks (200 COPYs of the
 * 1 MiB base): long enough to be caught writing. Its digest is zeros: the run is
 * interrupted long before verification (the exit code proves it).
 */
const LONG_PATCH = concat(
  header({ baseSize: BASE.length, targetSize: 200 * BASE.length }),
  ...Array.from({ length: 200 }, () => copyOp(0, BASE.length)),
);

/** Starts `apply`, waits (bounded) until its temporary file has bytes, then sends `signal`. */
async function interruptApply(dir: string, signal: Deno.Signal): Promise<RunResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: poolboyArgs(["apply", "base", "patch", "-o", "out"]),
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let exited = false;
  output.finally(() => (exited = true));
  const deadline = Date.now() + 60_000;
  let writing = false;
  while (!writing && !exited && Date.now() < deadline) {
    for (const name of await tempFilesIn(dir)) {
      const size = await Deno.stat(`${dir}/${name}`).then((s) => s.size, () => 0);
      if (size > 0) writing = true;
    }
    if (!writing) await new Promise((resolve) => setTimeout(resolve, 2));
  }
  if (!exited) child.kill(signal);
  const done = await output;
  assert.ok(
    writing,
    `apply never started writing its temporary file (exit ${done.code}): ${
      new TextDecoder().decode(done.stderr)
    }`,
  );
  return decodeOutput(done);
}

Deno.test("SIGTERM while apply writes: exit 143, no temporary file, OUT absent", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, LONG_PATCH);
    const result = await interruptApply(dir, "SIGTERM");
    assert.equal(
      result.code,
      143,
      `expected the SIGTERM handler's exit 143: ${JSON.stringify(result)}`,
    );
    assert.doesNotMatch(result.stderr, /^ {4}at /m);
    assert.deepEqual(await tempFilesIn(dir), []);
    assert.equal(await exists(`${dir}/out`), false);
  });
});

Deno.test("SIGINT (Ctrl-C) while apply writes: exit 130, no temporary file, previous OUT unchanged", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, BASE);
    await Deno.writeFile(`${dir}/patch`, LONG_PATCH);
    await Deno.writeFile(`${dir}/out`, PREVIOUS);
    const result = await interruptApply(dir, "SIGINT");
    assert.equal(
      result.code,
      130,
      `expected the SIGINT handler's exit 130: ${JSON.stringify(result)}`,
    );
    assert.deepEqual(await tempFilesIn(dir), []);
    assert.deepEqual(await Deno.readFile(`${dir}/out`), PREVIOUS);
  });
});
