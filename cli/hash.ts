/**
 * `poolboy hash FILE...`: BLAKE3 digests in b3sum's format.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { hashFile } from "../codec/hash_file.ts";
import { ProgressLine } from "./progress_line.ts";
import { parseCommand } from "./args.ts";
import { printJson, println } from "./output.ts";

export const HASH_HELP = `poolboy hash — BLAKE3 digests of files

Usage: poolboy hash FILE... [--json]

Prints one line per file, "<64 hex digits>  <path>", the format of b3sum.

Options:
  --json        print [{ "path", "blake3" }] as JSON on stdout
  -q, --quiet   no progress line
  -h, --help    this help

Exit codes: 0 ok, 2 usage, 3 I/O error (the digests before the failing file are printed).`;

/** Runs `hash`. */
export async function hashCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("hash", args, {});
  if (values.help) {
    println(HASH_HELP);
    return 0;
  }
  if (positionals.length === 0) {
    throw new UsageError("hash takes one or more FILEs (see poolboy hash --help)");
  }
  const results: { path: string; blake3: string }[] = [];
  for (const path of positionals) {
    const progress = new ProgressLine(`hash ${path}`, { quiet: values.quiet || values.json });
    const blake3 = await hashFile(path, progress.callback).finally(() => progress.done());
    if (values.json) results.push({ path, blake3 });
    else println(`${blake3}  ${path}`);
  }
  if (values.json) printJson(results);
  return 0;
}
