/**
 * Command-line parsing shared by every command: `arg_parser.ts` (parseArgs's
 * strict rules without `node:util`, whose import costs every command ~4.5 MB
 * of memory), with its errors turned into one-line `UsageError`s, and size
 * options.
 *
 * @module
 */

import { defaultThreads, MAX_THREADS } from "../codec/hash_pool.ts";
import { ArgumentError, type OptionSpecs, parseArguments } from "./arg_parser.ts";
import { UsageError } from "../kernel/errors.ts";
import { type ChunkParams, DEFAULT_CHUNK_PARAMS } from "../codec/fastcdc.ts";
import { parseSize } from "../kernel/units.ts";

export type { OptionSpecs };

/** Options every command accepts. */
export const COMMON_OPTIONS = {
  help: { type: "boolean", short: "h" },
  quiet: { type: "boolean", short: "q" },
  json: { type: "boolean" },
} as const satisfies OptionSpecs;

/**
 * Thrown by `parseCommand` when the arguments ask for `--version`: `main`
 * prints the version line and exits 0. Not an error.
 */
export class VersionRequested {
  readonly command: string;
  constructor(command: string) {
    this.command = command;
  }
}

/**
 * Parses `args` for `command`; unknown flags and missing values are
 * `UsageError`s. A command whose own options have no `--version V` also takes
 * `--version` (throws `VersionRequested`).
 */
export function parseCommand<T extends OptionSpecs>(command: string, args: string[], options: T) {
  let parsed;
  try {
    // A command's own `--version V` (publish, rollout, rollback) replaces the flag.
    parsed = parseArguments(args, {
      ...COMMON_OPTIONS,
      version: { type: "boolean" as const },
      ...options,
    });
  } catch (err) {
    if (!(err instanceof ArgumentError)) throw err;
    throw new UsageError(`${command}: ${err.message} (see poolboy ${command} --help)`);
  }
  if ((parsed.values as { version?: unknown }).version === true) {
    throw new VersionRequested(command);
  }
  return parsed;
}

/** Requires exactly `names.length` positional arguments, named in the error. */
export function requirePositionals(
  command: string,
  positionals: string[],
  names: string[],
): string[] {
  if (positionals.length !== names.length) {
    throw new UsageError(
      `${command} takes ${
        names.map((n) => n.toUpperCase()).join(" ")
      }, got ${positionals.length} argument${
        positionals.length === 1 ? "" : "s"
      } (see poolboy ${command} --help)`,
    );
  }
  return positionals;
}

/** The chunk-size options of encode and index. */
export const chunkOptions = {
  "min-chunk": { type: "string" },
  "avg-chunk": { type: "string" },
  "max-chunk": { type: "string" },
} as const satisfies OptionSpecs;

/** Chunk parameters from parsed chunk options, defaults where absent. */
export function chunkParamsFrom(
  values: { "min-chunk"?: string; "avg-chunk"?: string; "max-chunk"?: string },
): ChunkParams {
  return {
    min: sizeOption("min-chunk", values["min-chunk"], DEFAULT_CHUNK_PARAMS.min),
    avg: sizeOption("avg-chunk", values["avg-chunk"], DEFAULT_CHUNK_PARAMS.avg),
    max: sizeOption("max-chunk", values["max-chunk"], DEFAULT_CHUNK_PARAMS.max),
  };
}

/** The `--threads N` option of the commands that hash on Workers. */
export const threadsOption = {
  threads: { type: "string" },
} as const satisfies OptionSpecs;

/** The thread count from `--threads`, or the default (one per core). */
export function threadsFrom(values: { threads?: string }, least = 1): number {
  const value = values.threads;
  if (value === undefined) return defaultThreads();
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!(n >= least && n <= MAX_THREADS)) {
    throw new UsageError(
      `--threads: "${value}" is not a whole number from ${least} to ${MAX_THREADS}`,
    );
  }
  return n;
}

/** Reads a size option such as `--avg-chunk 1MiB`, or returns the default. */
export function sizeOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const size = parseSize(value);
  if (size === undefined) {
    throw new UsageError(`--${name}: "${value}" is not a size (examples: 65536, 256KiB, 1MiB)`);
  }
  return size;
}

/** Whether two paths are the same once resolved against the current directory (`a` and `./a`). */
export function samePath(a: string, b: string): boolean {
  return absolutePath(a) === absolutePath(b);
}

/** `path` made absolute against the current directory, with `.`, `..` and `//` resolved. */
function absolutePath(path: string): string {
  const parts: string[] = [];
  for (const part of (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

/** Whether two paths name the same existing file (hard links and symlinks included). */
export async function sameFile(a: string, b: string): Promise<boolean> {
  try {
    const [sa, sb] = await Promise.all([Deno.stat(a), Deno.stat(b)]);
    return sa.dev === sb.dev && sa.ino !== null && sa.ino === sb.ino;
  } catch {
    return false;
  }
}
