/**
 * `poolboy inspect PATCH`: describe a patch without applying it.
 *
 * @module
 */

import { inspectPatch } from "../codec/inspect.ts";
import { ProgressLine } from "./progress_line.ts";
import { countOf, formatBytes } from "../kernel/units.ts";
import { parseCommand, requirePositionals } from "./args.ts";
import { printJson, println } from "./output.ts";

export const INSPECT_HELP = `poolboy inspect — show what a patch holds, without applying it

Usage: poolboy inspect PATCH [--json]

Prints the header (version, base and target sizes, the target's BLAKE3 and,
for a v2, v3 or v4 patch, the base's; for v3 and v4 the sampled base ranges and
their BLAKE3, in v4 its first 8 bytes, shown followed by "...") and the op
counts and bytes. Reads the whole patch
in fixed memory and checks it as apply does, without a base: every op's bounds,
the sizes adding up to the target's, and every compressed op decompressed (whole
zstd frames giving exactly its length, a valid filter). A patch refused here is
refused by apply with the same exit code. What needs the base or the output is
left to apply: the base's samples and BLAKE3, and the output's (a change inside compressed
data that still decodes to the right length shows only there).

Options:
  --json        print as JSON on stdout
  -q, --quiet   no progress line
  -h, --help    this help

Exit codes: 0 ok, 2 usage, 3 I/O error, 4 malformed patch.`;

/** Runs `inspect`. */
export async function inspectCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("inspect", args, {});
  if (values.help) {
    println(INSPECT_HELP);
    return 0;
  }
  const [patch] = requirePositionals("inspect", positionals, ["patch"]);
  const progress = new ProgressLine("inspect", { quiet: values.quiet || values.json });
  const d = await inspectPatch(patch, progress.callback).finally(() => progress.done());
  if (values.json) {
    printJson({ patch, ...d });
    return 0;
  }
  const percent = d.targetSize > 0 ? ((100 * d.patchSize) / d.targetSize).toFixed(2) : "0.00";
  println(`patch        ${patch} (${formatBytes(d.patchSize)}, ${percent}% of target)`);
  println(`version      ${d.version}`);
  println(`base size    ${d.baseSize} (${formatBytes(d.baseSize)})`);
  println(`target size  ${d.targetSize} (${formatBytes(d.targetSize)})`);
  if (d.baseBlake3 !== undefined) println(`base         BLAKE3 ${d.baseBlake3}`);
  if (d.baseSamples !== undefined) {
    println(`base samples ${countOf(d.baseSamples.length, "range")}`);
    for (const s of d.baseSamples) {
      println(
        `  ${s.offset}..${s.offset + s.length} (${formatBytes(s.length)}) BLAKE3 ${s.blake3}${
          s.blake3.length < 64 ? "..." : ""
        }`,
      );
    }
  }
  println(`target       BLAKE3 ${d.targetBlake3}`);
  println(
    `COPY         ${countOf(d.copyOps, "op")}, ${d.copyBytes} bytes (${formatBytes(d.copyBytes)})`,
  );
  println(
    `LITERAL      ${countOf(d.literalOps, "op")}, ${d.literalBytes} bytes (${
      formatBytes(d.literalBytes)
    })`,
  );
  if (d.version >= 2) {
    println(
      `ZLITERAL     ${countOf(d.zliteralOps, "op")}, ${d.zliteralBytes} bytes (${
        formatBytes(d.zliteralBytes)
      }) produced`,
    );
    println(
      `DELTA        ${countOf(d.deltaOps, "op")}, ${d.deltaBytes} bytes (${
        formatBytes(d.deltaBytes)
      }) produced`,
    );
  }
  if (d.version >= 3) {
    println(
      `ZRECORDS     ${countOf(d.zrecordsOps, "op")}, ${d.zrecordsBytes} bytes (${
        formatBytes(d.zrecordsBytes)
      }) produced`,
    );
    println(
      `DRECORDS     ${countOf(d.drecordsOps, "op")}, ${d.drecordsBytes} bytes (${
        formatBytes(d.drecordsBytes)
      }) produced`,
    );
  }
  return 0;
}
