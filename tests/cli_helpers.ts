/**
 * Helpers for the CLI tests: running `poolboy` as a user would (a `deno run`
 * subprocess of `mod.ts`), temporary directories, deterministic bytes, patches
 * built by hand, and checks shared by the error tests.
 *
 * @module
 */

import assert from "node:assert/strict";

/** Absolute path of the CLI entry point. */
export const MOD_PATH: string = decodeURIComponent(new URL("../mod.ts", import.meta.url).pathname);

/** What one run of the CLI produced. */
export interface RunResult {
  readonly code: number;
  readonly signal: Deno.Signal | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The permissions the codec commands run with. */
export const CODEC_PERMISSIONS = ["--allow-read", "--allow-write"];

/** The arguments of `deno run` for `poolboy ...args`, with `permissions`. */
export function poolboyArgs(args: string[], permissions = CODEC_PERMISSIONS): string[] {
  return ["run", ...permissions, MOD_PATH, ...args];
}

/** Runs `poolboy ...args` in `cwd` and waits for it. */
export async function poolboy(cwd: string, ...args: string[]): Promise<RunResult> {
  return await poolboyWith(CODEC_PERMISSIONS, cwd, args);
}

/**
 * Runs `poolboy ...args` in `cwd` with the given Deno permissions (and extra
 * environment variables) and waits for it.
 */
export async function poolboyWith(
  permissions: string[],
  cwd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<RunResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: poolboyArgs(args, permissions),
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).output();
  return decodeOutput(output);
}

/** A finished child's exit code, signal and decoded output. */
export function decodeOutput(
  output: Pick<Deno.CommandOutput, "code" | "signal" | "stdout" | "stderr">,
): RunResult {
  const decoder = new TextDecoder();
  return {
    code: output.code,
    signal: output.signal,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Where `/usr/bin/time` is, if it is installed (it reports a child's peak RSS). */
export const GNU_TIME: string | undefined = (() => {
  try {
    return Deno.statSync("/usr/bin/time").isFile ? "/usr/bin/time" : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Runs `poolboy ...args` under `/usr/bin/time -f %M` and returns its result with
 * the peak resident set size in KiB (time's lines removed from stderr).
 */
export async function poolboyMeasured(
  cwd: string,
  ...args: string[]
): Promise<RunResult & { peakRssKiB: number }> {
  if (!GNU_TIME) throw new Error("/usr/bin/time is not installed");
  const output = await new Deno.Command(GNU_TIME, {
    args: ["-f", "%M", Deno.execPath(), ...poolboyArgs(args)],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  const lines = decoder.decode(output.stderr).split("\n");
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const rss = lines.pop() ?? "";
  assert.match(rss, /^\d+$/, `expected /usr/bin/time's %M as the last line, got ${rss}`);
  const stderr = lines.filter((l) => !l.startsWith("Command exited with non-zero status"));
  return {
    code: output.code,
    signal: output.signal,
    stdout: decoder.decode(output.stdout),
    stderr: stderr.length > 0 ? stderr.join("\n") + "\n" : "",
    peakRssKiB: Number(rss),
  };
}

export {
  concat,
  copyOp,
  header,
  HEADER_SIZE,
  literalOp,
  randomBytes,
  withTempDir,
} from "./helpers.ts";
import { HEADER_SIZE } from "./helpers.ts";

/** Hex digest text to bytes. */
export function fromHex(hex: string): Uint8Array {
  assert.match(hex, /^([0-9a-f]{2})*$/);
  return new Uint8Array(hex.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
}

/** An op of a v1 patch as found at its byte offset `at`. */
export type ParsedOp =
  | { kind: "copy"; at: number; offset: number; length: number }
  | { kind: "literal"; at: number; length: number };

/** Lists the ops of a well-formed v1 patch (for finding places to cut or edit). */
export function parseOps(patch: Uint8Array): ParsedOp[] {
  const view = new DataView(patch.buffer, patch.byteOffset, patch.byteLength);
  const ops: ParsedOp[] = [];
  let at = HEADER_SIZE;
  while (at < patch.length) {
    const op = patch[at];
    if (op === 0x01) {
      ops.push({
        kind: "copy",
        at,
        offset: Number(view.getBigUint64(at + 1, true)),
        length: Number(view.getBigUint64(at + 9, true)),
      });
      at += 17;
    } else if (op === 0x02) {
      const length = Number(view.getBigUint64(at + 1, true));
      ops.push({ kind: "literal", at, length });
      at += 9 + length;
    } else {
      throw new Error(`parseOps: unknown op 0x${op.toString(16)} at ${at}`);
    }
  }
  assert.equal(at, patch.length, "parseOps: the last op overruns the patch");
  return ops;
}

/** Names of poolboy's temporary files (`.NAME.poolboy-XXXXXXXX.tmp`). */
export const TEMP_FILE = /\.poolboy-[0-9a-f]{8}\.tmp$/;

/** The poolboy temporary files in `dir`. */
export async function tempFilesIn(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (TEMP_FILE.test(entry.name)) names.push(entry.name);
  }
  return names;
}

/** Whether `path` exists (without following a final symlink). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Asserts that a run failed the way a user error must: exit `code`, nothing on
 * stdout, exactly one line on stderr starting "poolboy: error: " and containing
 * every `mentions` (case-insensitive), and no stack trace.
 */
export function assertUserError(result: RunResult, code: number, ...mentions: string[]): void {
  const context = `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
  assert.equal(result.code, code, `expected exit ${code}; ${context}`);
  assert.doesNotMatch(result.stderr, /^ {4}at /m, `stack trace on stderr; ${context}`);
  assert.doesNotMatch(result.stderr, /internal error/, context);
  assert.equal(result.stdout, "", `expected nothing on stdout; ${context}`);
  assert.ok(result.stderr.endsWith("\n"), `stderr must end with a newline; ${context}`);
  const lines = result.stderr.slice(0, -1).split("\n");
  assert.equal(lines.length, 1, `expected exactly one line on stderr; ${context}`);
  assert.ok(lines[0].startsWith("poolboy: error: "), context);
  for (const mention of mentions) {
    assert.ok(
      lines[0].toLowerCase().includes(mention.toLowerCase()),
      `the error should mention ${JSON.stringify(mention)}; ${context}`,
    );
  }
}

/** Exit codes of kernel/errors.ts, spelled out so that the tests read as the contract. */
export const EXIT = { ok: 0, usage: 2, io: 3, malformed: 4, verification: 5 } as const;

/** Runs a command (mount, umount, ...) and returns its exit code and stderr. */
export async function system(
  cmd: string,
  ...args: string[]
): Promise<{ ok: boolean; err: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
    return { ok: out.success, err: new TextDecoder().decode(out.stderr).trim() };
  } catch (err) {
    return { ok: false, err: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Why tmpfs cannot be mounted here (not root, no permission, no mount binary),
 * or `undefined` if it can: probed once, synchronously, so tests can `ignore` on it.
 */
export const TMPFS_UNAVAILABLE: string | undefined = (() => {
  let dir: string | undefined;
  try {
    dir = Deno.makeTempDirSync({ prefix: "poolboy-mount-probe-" });
    const mount = new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir],
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (!mount.success) {
      return `mount -t tmpfs failed: ${new TextDecoder().decode(mount.stderr).trim()}`;
    }
    new Deno.Command("umount", { args: [dir], stdout: "null", stderr: "null" }).outputSync();
    return undefined;
  } catch (err) {
    return `cannot run mount: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    if (dir) {
      try {
        Deno.removeSync(dir);
      } catch {
        // Still mounted (umount failed) or already gone: nothing more to do here.
      }
    }
  }
})();

/**
 * Runs `fn` with a fresh tmpfs of `size` (e.g. "256k") mounted on a new
 * directory, unmounted and removed afterwards.
 */
export async function withTmpfs<T>(
  size: string,
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-tmpfs-" });
  try {
    const mounted = await system("mount", "-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir);
    assert.ok(mounted.ok, `mount tmpfs on ${dir}: ${mounted.err}`);
    try {
      return await fn(dir);
    } finally {
      const unmounted = await system("umount", dir);
      assert.ok(unmounted.ok, `umount ${dir}: ${unmounted.err}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
