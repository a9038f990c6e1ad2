/**
 * `poolboy apply BASE PATCH -o OUT`: the apply command.
 *
 * @module
 */

import { applyFile, type ApplySummary } from "../codec/applier.ts";
import { UsageError } from "../kernel/errors.ts";
import { ProgressLine } from "./progress_line.ts";
import { countOf, formatBytes, megabytesPerSecond } from "../kernel/units.ts";
import { parseCommand, requirePositionals, sameFile, samePath } from "./args.ts";
import { removeStaleTemporaries } from "../kernel/atomic_file.ts";
import { printJson, println } from "./output.ts";

export const APPLY_HELP = `poolboy apply — rebuild TARGET from BASE and a patch, verified

Usage: poolboy apply BASE PATCH -o OUT [options]

Checks BASE's size and, before writing anything, the BLAKE3 of the sampled
ranges a format 3 or 4 patch carries (format 2: of all of BASE). Then streams the
patch's ops in fixed memory, reading each BASE range they use once, writing to
a temporary file beside OUT (.OUT.poolboy-XXXXXXXX.tmp) while hashing it. OUT
is replaced, atomically, only if the output's BLAKE3 equals the one in the
patch; otherwise the temporary file is deleted and OUT, if it existed, is left
exactly as it was (formats 3 and 4 then hash BASE to say whether BASE is the wrong
one or the patch is damaged).

Options:
  -o, --output OUT   where the rebuilt file goes (required; may not be BASE or
                     PATCH). A temporary file of OUT left by a killed earlier
                     apply is deleted first (and said so on stderr)
  --threads N        0 (default): hash in the main thread, peak memory ~60 MB;
                     1: hash on a Worker while reading and writing, ~25%
                     faster when the disk keeps up, ~18 MB more memory
  --json             print the summary as JSON on stdout
  -q, --quiet        no progress line
  -h, --help         this help

Exit codes: 0 ok, 2 usage, 3 I/O error, 4 malformed patch,
5 verification failed (wrong base, or output digest mismatch).`;

/** Runs `apply`. */
export async function applyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("apply", args, {
    output: { type: "string", short: "o" },
    threads: { type: "string" },
  });
  if (values.help) {
    println(APPLY_HELP);
    return 0;
  }
  const [base, patch] = requirePositionals("apply", positionals, ["base", "patch"]);
  const threads = values.threads ?? "0";
  if (threads !== "0" && threads !== "1") {
    throw new UsageError(`apply: --threads: "${threads}" must be 0 (main thread) or 1 (a Worker)`);
  }
  if (!values.output) throw new UsageError("apply: -o OUT is required (see poolboy apply --help)");
  const out = values.output;
  if (samePath(base, out) || await sameFile(base, out)) {
    throw new UsageError(
      "apply: OUT must not be BASE (the base is read while OUT is written); write elsewhere, then move",
    );
  }
  if (samePath(patch, out) || await sameFile(patch, out)) {
    throw new UsageError(
      "apply: OUT must not be PATCH (the patch is read while OUT is written, and would be lost); write elsewhere",
    );
  }
  // A killed earlier apply (SIGKILL, power loss) may have left its temporary
  // file beside OUT; only files named as this OUT's temporaries, held by no
  // running apply, are deleted.
  for (const stale of await removeStaleTemporaries(out)) {
    console.error(`poolboy: apply: removed ${stale}, the temporary file of an interrupted apply`);
  }
  const progress = new ProgressLine("apply", { quiet: values.quiet || values.json });
  let summary: ApplySummary;
  try {
    summary = await applyFile(base, patch, out, {
      onProgress: progress.callback,
      threads: threads === "1" ? 1 : 0,
    });
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
    if (summary.zliteralOps + summary.deltaOps > 0) {
      println(
        `  ZLITERAL ${formatBytes(summary.zliteralBytes)} in ${countOf(summary.zliteralOps, "op")}`,
      );
      println(
        `  DELTA    ${formatBytes(summary.deltaBytes)} in ${countOf(summary.deltaOps, "op")}`,
      );
    }
    if (summary.zrecordsOps + summary.drecordsOps > 0) {
      println(
        `  ZRECORDS ${formatBytes(summary.zrecordsBytes)} in ${countOf(summary.zrecordsOps, "op")}`,
      );
      println(
        `  DRECORDS ${formatBytes(summary.drecordsBytes)} in ${countOf(summary.drecordsOps, "op")}`,
      );
    }
    println(
      `  time     ${(summary.elapsedMs / 1000).toFixed(2)} s, ${
        megabytesPerSecond(summary.targetSize, summary.elapsedMs).toFixed(0)
      } MB/s, hashed ${summary.threads === 1 ? "on a Worker" : "in the main thread"}`,
    );
    println(`  target   BLAKE3 ${summary.targetBlake3}`);
  }
  return 0;
}
