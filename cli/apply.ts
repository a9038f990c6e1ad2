/**
 * `poolboy apply BASE PATCH -o OUT`: the apply command.
 *
 * @module
 */

import { applyFile, type ApplySummary } from "../codec/applier.ts";
import { UsageError } from "../codec/errors.ts";
import { ProgressLine } from "../codec/progress.ts";
import { countOf, formatBytes, megabytesPerSecond } from "../codec/units.ts";
import { parseCommand, printJson, println, requirePositionals, sameFile } from "./args.ts";

export const APPLY_HELP = `poolboy apply — rebuild TARGET from BASE and a patch, verified

Usage: poolboy apply BASE PATCH -o OUT [options]

Streams the patch's ops in fixed memory, writing to a temporary file beside OUT
(.OUT.poolboy-XXXXXXXX.tmp) while hashing it. OUT is replaced, atomically, only
if the output's BLAKE3 equals the one in the patch; otherwise the temporary file
is deleted and OUT, if it existed, is left exactly as it was.

Options:
  -o, --output OUT   where the rebuilt file goes (required; may not be BASE)
  --json             print the summary as JSON on stdout
  -q, --quiet        no progress line
  -h, --help         this help

Exit codes: 0 ok, 2 usage, 3 I/O error, 4 malformed patch,
5 verification failed (wrong base, or output digest mismatch).`;

/** Runs `apply`. */
export async function applyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("apply", args, {
    output: { type: "string", short: "o" },
  });
  if (values.help) {
    println(APPLY_HELP);
    return 0;
  }
  const [base, patch] = requirePositionals("apply", positionals, ["base", "patch"]);
  if (!values.output) throw new UsageError("apply: -o OUT is required (see poolboy apply --help)");
  if (await sameFile(base, values.output)) {
    throw new UsageError(
      "apply: OUT must not be BASE (the base is read while OUT is written); write elsewhere, then move",
    );
  }
  const progress = new ProgressLine("apply", { quiet: values.quiet || values.json });
  let summary: ApplySummary;
  try {
    summary = await applyFile(base, patch, values.output, { onProgress: progress.callback });
  } finally {
    progress.done();
  }
  if (values.json) {
    printJson({ command: "apply", base, patch, output: values.output, verified: true, ...summary });
  } else {
    println(`applied ${patch} to ${base}`);
    println(`  output   ${values.output}: ${formatBytes(summary.targetSize)}, BLAKE3 verified`);
    println(`  COPY     ${formatBytes(summary.copyBytes)} in ${countOf(summary.copyOps, "op")}`);
    println(
      `  LITERAL  ${formatBytes(summary.literalBytes)} in ${countOf(summary.literalOps, "op")}`,
    );
    println(
      `  time     ${(summary.elapsedMs / 1000).toFixed(2)} s, ${
        megabytesPerSecond(summary.targetSize, summary.elapsedMs).toFixed(0)
      } MB/s`,
    );
    println(`  target   BLAKE3 ${summary.targetBlake3}`);
  }
  return 0;
}
