/**
 * The operator's surface of the CLI, as a user meets it (issue 16): every
 * error class ends with its documented exit code and a line that says what to
 * do (a port in use or an address outside --allow-net is exit 3, never an
 * "internal error"); apply refuses OUT equal to PATCH and clears a killed
 * earlier run's temporary file of OUT, and only that; inspect decodes every
 * compressed op as apply does and shows a v2 patch's base digest; --version
 * and --help work for every command; an unknown flag is one clear line.
 *
 * Each case runs `poolboy` as a subprocess (`deno run mod.ts ...`) in a
 * temporary directory, as tests/cli_errors_test.ts does.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  assertUserError,
  CODEC_PERMISSIONS,
  concat,
  EXIT,
  poolboy,
  poolboyWith,
  randomBytes,
  type RunResult,
  tempFilesIn,
  withTempDir,
} from "./cli_helpers.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { VERSION } from "../kernel/version.ts";
import { applyFile } from "../codec/applier.ts";
import { inspectPatch } from "../codec/inspect.ts";
import { ExitCode, MalformedPatchError, osErrorToPoolboy } from "../kernel/errors.ts";

const KiB = 1024;
const SMALL_CHUNKS = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];

/** The fleet commands need the network (loopback here) and cbor-x's environment variable. */
const FLEET_PERMISSIONS = [
  ...CODEC_PERMISSIONS,
  "--allow-net=127.0.0.0/8",
];

/** Every command, as `poolboy --help` lists them. */
const COMMANDS = [
  "encode",
  "apply",
  "inspect",
  "hash",
  "index",
  "controlplane",
  "agent",
  "keygen",
  "delegate",
  "publish",
  "rollout",
  "status",
  "rollback",
  "token",
  "audit",
  "device",
];

/** A loopback port free now (bound, then released). */
function freePort(transport: "tcp" | "udp"): number {
  const socket = transport === "tcp"
    ? Deno.listen({ hostname: "127.0.0.1", port: 0 })
    : Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const port = (socket.addr as Deno.NetAddr).port;
  socket.close();
  return port;
}

/** The last line of stderr (the agent prints its --insecure warning before anything). */
function lastLine(text: string): string {
  return text.trimEnd().split("\n").pop() ?? "";
}

// ---------------------------------------------------------------------------
// Ports and addresses
// ---------------------------------------------------------------------------

Deno.test("controlplane on an HTTP port another process holds: exit 3, one line naming the address, the port and --http-port", async () => {
  await withTempDir(async (dir) => {
    const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const httpPort = (held.addr as Deno.NetAddr).port;
      const run = await poolboyWith(FLEET_PERMISSIONS, dir, [
        "controlplane",
        "--bind",
        "127.0.0.1",
        "--data",
        "cp",
        "--udp-port",
        String(freePort("udp")),
        "--p2p-port",
        String(freePort("tcp")),
        "--http-port",
        String(httpPort),
        "-q",
      ]);
      assertUserError(run, EXIT.io, `127.0.0.1:${httpPort}`, "already in use", "--http-port");
    } finally {
      held.close();
    }
  });
});

Deno.test("agent on a UDP port another process holds: exit 3, names the address, the port and --udp-port", async () => {
  await withTempDir(async (dir) => {
    const held = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    try {
      const udpPort = (held.addr as Deno.NetAddr).port;
      const run = await poolboyWith(FLEET_PERMISSIONS, dir, [
        "agent",
        "--control-plane",
        `127.0.0.1:${freePort("udp")}`,
        "--bind",
        "127.0.0.1",
        "--node-id",
        "a1",
        "--data",
        "agent",
        "--insecure",
        "--udp-port",
        String(udpPort),
        "--p2p-port",
        String(freePort("tcp")),
        "-q",
      ]);
      const context = `exit ${run.code}\nstderr: ${run.stderr}`;
      assert.equal(run.code, EXIT.io, context);
      assert.doesNotMatch(run.stderr, /internal error|^ {4}at /m, context);
      const line = lastLine(run.stderr);
      assert.ok(line.startsWith("poolboy: error: "), context);
      for (const mention of [`127.0.0.1:${udpPort}`, "already in use", "--udp-port"]) {
        assert.ok(line.includes(mention), `the error should mention ${mention}; ${context}`);
      }
    } finally {
      held.close();
    }
  });
});

Deno.test("controlplane bound outside the allowed network (--allow-net): exit 3, names the address and --allow-net", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboyWith(FLEET_PERMISSIONS, dir, [
      "controlplane",
      "--bind",
      "10.9.8.7",
      "--data",
      "cp",
      "-q",
    ]);
    assertUserError(run, EXIT.io, "10.9.8.7", "--allow-net", "--bind");
  });
});

Deno.test("every Deno OS error class that escapes a command is an I/O error (exit 3) with a one-line message; other errors stay bugs", () => {
  for (const [name, OsError] of Object.entries(Deno.errors)) {
    const mapped = osErrorToPoolboy(new OsError(`${name} (os error 1): open '/x/y'`));
    assert.ok(mapped !== undefined, name);
    assert.equal(mapped.exitCode, ExitCode.io, name);
    assert.doesNotMatch(mapped.message, /\n/, name);
  }
  const denied = osErrorToPoolboy(
    new Deno.errors.NotCapable(`Requires net access to "10.1.2.3:80", run again with --allow-net`),
  );
  assert.match(denied?.message ?? "", /10\.1\.2\.3:80.*--allow-net/);
  assert.equal(osErrorToPoolboy(new TypeError("x is undefined")), undefined);
});

// ---------------------------------------------------------------------------
// apply: OUT equal to PATCH, stale temporary files
// ---------------------------------------------------------------------------

const BASE = randomBytes(256 * KiB, 11);
const TARGET = concat(
  BASE.subarray(0, 100 * KiB),
  randomBytes(8 * KiB, 12),
  BASE.subarray(100 * KiB),
);

/** Writes base, target and the patch `poolboy encode` makes of them into `dir`. */
async function encodeFixture(
  dir: string,
  base = BASE,
  target = TARGET,
  ...extra: string[]
): Promise<void> {
  await Deno.writeFile(`${dir}/base`, base);
  await Deno.writeFile(`${dir}/target`, target);
  const run = await poolboy(
    dir,
    "encode",
    "base",
    "target",
    "-o",
    "patch",
    "-q",
    ...SMALL_CHUNKS,
    ...extra,
  );
  assert.equal(run.code, 0, run.stderr);
}

Deno.test("apply refuses OUT equal to PATCH (same path, ./path, absolute path, hard link, symlink): exit 2, patch untouched", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const patch = await Deno.readFile(`${dir}/patch`);
    await Deno.link(`${dir}/patch`, `${dir}/hard`);
    await Deno.symlink("patch", `${dir}/sym`);
    for (const out of ["patch", "./patch", `${dir}/patch`, "hard", "sym"]) {
      const run = await poolboy(dir, "apply", "base", "patch", "-o", out);
      assertUserError(run, EXIT.usage, "must not be PATCH");
      assert.deepEqual(await Deno.readFile(`${dir}/patch`), patch, `patch changed by -o ${out}`);
    }
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test("apply refuses OUT equal to BASE written as another path to it (./base): exit 2", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const run = await poolboy(dir, "apply", "base", "patch", "-o", "./base");
    assertUserError(run, EXIT.usage, "must not be BASE");
    assert.deepEqual(await Deno.readFile(`${dir}/base`), BASE);
  });
});

Deno.test("apply removes a temporary file of its own OUT left by a killed earlier run, says so on stderr, and touches nothing else", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    await Deno.mkdir(`${dir}/models`);
    const stale = `models/.out.bin.poolboy-0123abcd.tmp`;
    const others = [
      "models/.out.bin.poolboy-0123abcd.tmp.keep", // not the pattern
      "models/.out.bin.poolboy-0123ABCD.tmp", // upper-case hex: not a name apply makes
      "models/.out.bin.poolboy-0123abc.tmp", // 7 digits
      "models/.other.bin.poolboy-0123abcd.tmp", // another OUT's
      "models/out.bin.poolboy-0123abcd.tmp", // not hidden
      ".out.bin.poolboy-0123abcd.tmp", // beside another directory's OUT
    ];
    for (const name of [stale, ...others]) await Deno.writeTextFile(`${dir}/${name}`, "partial");
    const run = await poolboy(dir, "apply", "base", "patch", "-o", "models/out.bin");
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(await Deno.readFile(`${dir}/models/out.bin`), TARGET);
    assert.match(run.stderr, /removed models\/\.out\.bin\.poolboy-0123abcd\.tmp/);
    await assert.rejects(Deno.lstat(`${dir}/${stale}`), Deno.errors.NotFound);
    for (const name of others) {
      assert.equal(await Deno.readTextFile(`${dir}/${name}`), "partial", `${name} was touched`);
    }
  });
});

Deno.test("apply leaves a temporary file of its OUT that a running writer holds (locked)", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const live = `${dir}/.out.poolboy-89abcdef.tmp`;
    const file = await Deno.open(live, { write: true, create: true });
    try {
      await file.write(new TextEncoder().encode("being written"));
      await file.lock(true);
      const run = await poolboy(dir, "apply", "base", "patch", "-o", "out");
      assert.equal(run.code, 0, run.stderr);
      assert.doesNotMatch(run.stderr, /removed/);
      assert.equal(await Deno.readTextFile(live), "being written");
    } finally {
      file.close();
    }
  });
});

// ---------------------------------------------------------------------------
// inspect: every compressed op decoded, the base digest shown
// ---------------------------------------------------------------------------

/** float32 weights, nudged by a small relative amount when `nudge` > 0 (a fine-tune). */
function weights(n: number, seed: number, nudge = 0): Uint8Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = ((x >>> 8) / 2 ** 24 - 0.5) * 0.1;
  }
  if (nudge > 0) {
    let y = seed ^ 0x5555;
    for (let i = 0; i < n; i++) {
      y = (y * 1103515245 + 12345) >>> 0;
      out[i] *= 1 + ((y >>> 8) / 2 ** 24 - 0.5) * nudge;
    }
  }
  return new Uint8Array(out.buffer);
}

/** A fine-tune (DELTA ops) with a compressible insertion (ZLITERAL ops). */
const V2_BASE = weights(96 * 1024, 5);
const V2_TARGET = concat(
  weights(48 * 1024, 5, 1e-4),
  new Uint8Array(40 * KiB).map((_, i) => (i * 7) % 13),
  weights(96 * 1024, 5, 1e-4).subarray(48 * 1024 * 4),
);

/** Where a v2, v3 or v4 patch's compressed payloads are: [start, end) byte ranges. */
function compressedPayloads(patch: Uint8Array): [number, number][] {
  const view = new DataView(patch.buffer, patch.byteOffset, patch.byteLength);
  if (view.getUint16(4, true) === 4) return compressedPayloadsV4(patch);
  const ranges: [number, number][] = [];
  // v2: 86 header bytes; v3: 88, then 44 per base sample.
  const headerLength = view.getUint16(4, true) === 3 ? 88 + 44 * view.getUint16(86, true) : 86;
  for (let at = headerLength; at < patch.length;) {
    const op = patch[at];
    if (op === 0x01) at += 17;
    else if (op === 0x02) at += 9 + Number(view.getBigUint64(at + 1, true));
    else if (op === 0x03) {
      const payload = view.getUint32(at + 5, true);
      ranges.push([at + 10, at + 10 + payload]);
      at += 10 + payload;
    } else if (op === 0x04) {
      const payload = view.getUint32(at + 13, true);
      ranges.push([at + 18, at + 18 + payload]);
      at += 18 + payload;
    } else throw new Error(`unknown op ${op} at ${at}`);
  }
  return ranges;
}

/**
 * The same for v4 (docs/spec/patch-v4.md): 87 header bytes and 8 per sample,
 * op heads of LEB128 varints (read here by hand, not with the codec's reader).
 */
function compressedPayloadsV4(patch: Uint8Array): [number, number][] {
  let at = 87 + 8 * patch[86];
  const varint = () => {
    let value = 0;
    for (let scale = 1;; scale *= 128) {
      const byte = patch[at++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
    }
  };
  const ranges: [number, number][] = [];
  while (at < patch.length) {
    const op = patch[at++];
    if (op === 0x01) (varint(), varint());
    else if (op === 0x02) at += varint();
    else if (op === 0x03 || op === 0x04) {
      if (op === 0x04) varint(); // the relative base offset
      varint(); // raw_len
      const payload = varint();
      at++; // the filter byte
      ranges.push([at, at + payload]);
      at += payload;
    } else throw new Error(`unknown op ${op} at ${at - 1}`);
  }
  return ranges;
}

/** The error a promise rejects with, or undefined. */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err;
  }
}

for (const format of ["4", "3"]) {
  Deno.test(`inspect refuses a flipped byte inside a compressed op exactly when apply refuses it as malformed, with the same message (format ${format})`, async () => {
    await withTempDir(async (dir) => {
      await encodeFixture(dir, V2_BASE, V2_TARGET, "--format", format);
      const patch = await Deno.readFile(`${dir}/patch`);
      assert.equal(patch[4], Number(format), `a v${format} patch`);
      const ranges = compressedPayloads(patch);
      assert.ok(ranges.length > 0, "the fixture's patch has compressed ops");
      let refused = 0;
      for (const [start, end] of ranges.slice(0, 4)) {
        // The frame header, the first block header, and bytes spread through the data.
        const positions = new Set([start, start + 4, start + 5, start + 6, start + 7, start + 8]);
        for (let k = 1; k < 16; k++) positions.add(start + Math.floor(((end - start) * k) / 16));
        for (const at of positions) {
          const damaged = patch.slice();
          damaged[at] ^= 0x5a;
          await Deno.writeFile(`${dir}/damaged`, damaged);
          const applied = await failure(applyFile(`${dir}/base`, `${dir}/damaged`, `${dir}/out`));
          const inspected = await failure(inspectPatch(`${dir}/damaged`));
          if (applied instanceof MalformedPatchError) {
            refused++;
            assert.ok(inspected instanceof MalformedPatchError, `byte ${at}: inspect passed`);
            assert.equal(inspected.message, applied.message, `byte ${at}`);
          } else {
            assert.equal(inspected, undefined, `byte ${at}: inspect refused what apply takes`);
          }
        }
      }
      assert.ok(refused > 0, "some flipped bytes make the patch malformed");
    });
  });
}

Deno.test("poolboy inspect on a patch with a flipped byte in a compressed op: exit 4 as apply, one line", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir, V2_BASE, V2_TARGET);
    const patch = await Deno.readFile(`${dir}/patch`);
    const [start] = compressedPayloads(patch)[0];
    // The frame header descriptor: frame content size and block layout no longer agree.
    let chosen: number | undefined;
    for (const at of [start + 4, start + 5, start + 6, start + 7]) {
      const damaged = patch.slice();
      damaged[at] ^= 0x5a;
      await Deno.writeFile(`${dir}/damaged`, damaged);
      if (await failure(inspectPatch(`${dir}/damaged`)) instanceof MalformedPatchError) {
        chosen = at;
        break;
      }
    }
    assert.ok(chosen !== undefined, "a flipped byte of the frame header is refused");
    const inspected = await poolboy(dir, "inspect", "damaged");
    assertUserError(inspected, EXIT.malformed, "decompress");
    const applied = await poolboy(dir, "apply", "base", "damaged", "-o", "out");
    assertUserError(applied, EXIT.malformed);
    assert.equal(inspected.stderr, applied.stderr, "inspect reports the patch as apply does");
  });
});

Deno.test("inspect of a clean v2 patch passes and shows the base's BLAKE3 (also in --json as baseBlake3)", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir, V2_BASE, V2_TARGET);
    const baseHex = toHex(blake3(V2_BASE));
    const human = await poolboy(dir, "inspect", "patch");
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`^base +BLAKE3 ${baseHex}$`, "m"));
    const json = await poolboy(dir, "inspect", "patch", "--json");
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout);
    assert.equal(parsed.baseBlake3, baseHex);
    assert.equal(parsed.targetBlake3, toHex(blake3(V2_TARGET)));
    assert.ok(parsed.zliteralOps + parsed.deltaOps > 0, "the patch has compressed ops");
  });
});

// ---------------------------------------------------------------------------
// --version, --help, unknown flags
// ---------------------------------------------------------------------------

const VERSION_LINE =
  `poolboy ${VERSION} (deno ${Deno.version.deno}, ${Deno.build.os}-${Deno.build.arch})\n`;

Deno.test("--version on the binary and on every command prints poolboy VERSION (deno V, OS-ARCH) and exits 0", async () => {
  await withTempDir(async (dir) => {
    for (const args of [["--version"], ...COMMANDS.map((c) => [c, "--version"])]) {
      const run = await poolboyWith(FLEET_PERMISSIONS, dir, args);
      assert.equal(run.code, 0, `${args.join(" ")}: ${run.stderr}`);
      assert.equal(run.stdout, VERSION_LINE, args.join(" "));
    }
    const late = await poolboy(dir, "encode", "a", "b", "-o", "p", "--version");
    assert.equal(late.stdout, VERSION_LINE, "--version after other arguments");
  });
});

/**
 * Whether every `"` and every `'` has its pair; apostrophes (`device's`,
 * `operators' API`) are not quotes.
 */
function balancedQuotes(text: string): boolean {
  const doubles = (text.match(/"/g) ?? []).length;
  const singles = (text.replace(/(?<=\w)'(?=\w)|(?<=s)'(?=\s)/g, "").match(/'/g) ?? []).length;
  return doubles % 2 === 0 && singles % 2 === 0;
}

for (const command of COMMANDS) {
  Deno.test(`${command} --help is whole: exit 0, a Usage line, balanced quotes, nothing on stderr`, async () => {
    const run = await poolboyWith(FLEET_PERMISSIONS, Deno.cwd(), [command, "--help"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.match(run.stdout, /^Usage: poolboy /m);
    assert.ok(balancedQuotes(run.stdout), `unbalanced quotes in:\n${run.stdout}`);
  });
}

/**
 * The columns where option text starts in the Options section of a help: after
 * an option and two or more spaces, and at the indent of a continuation line.
 */
function optionColumns(help: string): Set<number> {
  const columns = new Set<number>();
  const start = help.indexOf("\nOptions:\n") + "\nOptions:\n".length;
  const end = help.indexOf("\n\n", start);
  for (const line of help.slice(start, end < 0 ? undefined : end).split("\n")) {
    const option = /^ {2}-\S.*? {2,}(?=\S)/.exec(line);
    if (option) columns.add(option[0].length);
    else if (!/^ {2}-/.test(line)) columns.add(line.length - line.trimStart().length);
  }
  return columns;
}

Deno.test("agent --help and controlplane --help align every option's text in one column", async () => {
  for (const command of ["agent", "controlplane"]) {
    const run = await poolboyWith(FLEET_PERMISSIONS, Deno.cwd(), [command, "--help"]);
    assert.equal(run.code, 0, run.stderr);
    const columns = optionColumns(run.stdout);
    assert.equal(columns.size, 1, `${command}: columns ${[...columns]} in:\n${run.stdout}`);
  }
});

Deno.test("an unknown flag, for every command: exit 2 and one line 'poolboy: error: CMD: unknown option --x (see poolboy CMD --help)'", async () => {
  await withTempDir(async (dir) => {
    for (const command of COMMANDS) {
      const run: RunResult = await poolboyWith(FLEET_PERMISSIONS, dir, [command, "--no-such"]);
      assert.equal(run.code, EXIT.usage, `${command}: ${run.stderr}`);
      assert.equal(
        run.stderr,
        `poolboy: error: ${command}: unknown option --no-such (see poolboy ${command} --help)\n`,
      );
    }
  });
});
