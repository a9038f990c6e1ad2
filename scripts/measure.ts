/**
 * Measuring tools for the benchmarks (bench.ts, corpus_bench.ts): run a
 * command under GNU time for its wall-clock seconds and peak RSS, after a
 * `sync` so that no run pays for the writeback of another's output; and find
 * whether a peer tool is installed.
 *
 * @module
 */

import { LEAN_ENV, LEAN_RUN } from "./install.ts";

/** GNU time, which reports a child's peak RSS. */
export const TIME = "/usr/bin/time";

/**
 * How `deno task apply` (deno.json) starts deno, up to the permissions: the
 * launcher's apply and encode settings (`LEAN_ENV`, `LEAN_RUN` of scripts/install.ts)
 * and a small young generation. Measured together ~2.5 MB less peak RSS than
 * plain `deno run`. A test checks the task says the same.
 */
export function leanCommand(deno: string): string[] {
  return ["env", LEAN_ENV, deno, "run", ...LEAN_RUN, "--v8-flags=--max-semi-space-size=1"];
}

/** Wall-clock seconds and peak resident memory of one run. */
export interface Measure {
  seconds: number;
  peakRssBytes: number;
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `cmd` is installed in a standard bin directory. */
export async function which(cmd: string): Promise<boolean> {
  for (const dir of ["/usr/bin", "/usr/local/bin", "/bin"]) {
    if (await exists(`${dir}/${cmd}`)) return true;
  }
  return false;
}

/**
 * Runs a command under /usr/bin/time; returns wall seconds and peak RSS. Dirty
 * pages of earlier steps are flushed first (`sync`), so that no run pays for
 * the writeback of another's output. `dir` holds time's output file.
 */
export async function measure(cmd: string[], dir: string): Promise<Measure> {
  await new Deno.Command("sync").output();
  const timeFile = `${dir}/time.out`;
  const out = await new Deno.Command(TIME, {
    args: ["-f", "%e %M", "-o", timeFile, ...cmd],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-2).join(" ");
    throw new Error(`${cmd[0]} failed (exit ${out.code}): ${err}`);
  }
  const [seconds, kib] = (await Deno.readTextFile(timeFile)).trim().split("\n").pop()!.split(" ");
  return { seconds: Number(seconds), peakRssBytes: Number(kib) * 1024 };
}

/** A file's size in bytes. */
export async function size(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

/** Prints a markdown table: the first column left-aligned, the others right-aligned. */
export function printTable(header: string[], lines: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) =>
    "| " +
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(" | ") +
    " |";
  console.log(fmt(header));
  console.log(
    "|" + widths.map((w, i) => "-".repeat(w + 1) + (i === 0 ? "-" : ":")).join("|") + "|",
  );
  for (const l of lines) console.log(fmt(l));
}

/**
 * xdelta3's source window (`-B`) for a base of `baseSize` bytes: the whole
 * base, rounded up to a MiB, at most 2 GiB − 1 MiB (xdelta3's limit).
 */
export function xdeltaSourceWindow(baseSize: number): number {
  return Math.min(2 ** 31 - 2 ** 20, Math.ceil(baseSize / 2 ** 20) * 2 ** 20);
}

/** The zstd command making `patch` from `target` against `base` (`--long=31`), with `flags` such as `["-19", "-T0"]`. */
export function zstdPatchCommand(
  flags: readonly string[],
  base: string,
  target: string,
  patch: string,
): string[] {
  return ["zstd", "-q", "-f", ...flags, "--long=31", `--patch-from=${base}`, target, "-o", patch];
}
