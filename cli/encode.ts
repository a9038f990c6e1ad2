/**
 * `poolboy encode BASE TARGET -o PATCH`: the encode command.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { encodeFile, type EncodeSummary } from "../codec/encoder.ts";
import { externalDataLayout } from "../codec/onnx_layout.ts";
import type { TensorRange } from "../codec/tensor_layout.ts";
import { ioError } from "../kernel/errors.ts";
import { ProgressLine } from "./progress_line.ts";
import { countOf, formatBytes, megabytesPerSecond } from "../kernel/units.ts";
import {
  chunkOptions,
  chunkParamsFrom,
  parseCommand,
  requirePositionals,
  sameFile,
  threadsFrom,
  threadsOption,
} from "./args.ts";
import { printJson, println } from "./output.ts";

export const ENCODE_HELP = `poolboy encode — make a patch that turns BASE into TARGET

Usage: poolboy encode BASE TARGET -o PATCH [options]

Writes a patch (docs/spec/patch-v4.md): COPY ops for the chunks of TARGET
found in BASE, and for the rest (formats 4, the default, 3 and 2) runs of BASE's bytes
found nearby as COPYs and the remaining bytes as the smallest of a LITERAL, a
zstd-compressed ZLITERAL or a DELTA against the aligned BASE range (the
same-named tensor in SafeTensors, GGUF and ONNX files; float planes and
differences filtered before zstd). The header carries TARGET's and BASE's
BLAKE3 and (formats 4 and 3) the BLAKE3 of up to 4 sampled 64 KiB ranges of BASE,
so that apply refuses a wrong BASE before writing (formats 4 and 3: from the
samples, reading BASE only once) and verifies its output. PATCH appears only
when complete. --format 3 writes the same ops with fixed-size heads and a
longer header; --format 2 without record ops and with a v2 header (apply
hashes all of BASE first); --format 1 writes COPY and LITERAL ops only.

Options:
  -o, --output PATCH   where to write the patch (required)
  --min-chunk SIZE     smallest chunk (default 256KiB)
  --avg-chunk SIZE     average chunk, a power of two (default 1MiB)
  --max-chunk SIZE     largest chunk (default 2MiB)
  --threads N          Workers hashing the whole-file BLAKE3 digests (with
                       --base-index also the chunks' BLAKE3; otherwise chunks
                       are matched by a fast fingerprint, each match checked
                       byte for byte). Default for formats 2 to 4: 1 for a
                       target of 256 MiB or more without quantized GGUF
                       tensors where there is a second core (hashing overlaps
                       coding: ~35 % faster, within 100 MB), else 0 (the main
                       thread hashes); format 1: one per core but one. Each
                       Worker adds about 12 MB and one buffer of 1.25 × max
                       chunk
  --format 1|2|3|4     patch format (default 4: format 3 with varint op heads
                       and a compact header, docs/spec/patch-v4.md; 3 for
                       appliers older than format 4: v2's ops plus record ops
                       for quantized GGUF blocks, and base samples checked
                       before any output, docs/spec/patch-v3.md; 2 for appliers
                       older than format 3, docs/spec/patch-v2.md; 1 is the plain
                       COPY/LITERAL format, docs/spec/patch-v1.md; much larger
                       on updates)
  --base-index IDX     take BASE's chunks from its index file (poolboy index;
                       a .sig file of the old signature command works too)
                       instead of reading BASE whole: format 1 then reads only
                       TARGET, formats 2 to 4 also the BASE ranges where
                       TARGET differs (formats 3 and 4 also BASE's samples). IDX must match BASE's size and modification
                       time; chunk sizes come from IDX
  --base-onnx MODEL    BASE is a side file of ONNX external data and MODEL the
  --target-onnx MODEL  .onnx that names it (TARGET likewise): its tensors are
                       laid out from MODEL's external_data entries (location,
                       offset, length), so that each is a DELTA against the
                       same-named tensor of BASE. Only tensors whose location,
                       relative to MODEL's directory, names this file are
                       used; a MODEL with any location that is absolute or
                       climbs out of its directory (..) is refused, and so is
                       one with no tensor in the file or a range past its end.
                       Formats 2 to 4; each side may be given alone (the other
                       is read as usual). The .onnx files themselves are
                       encoded as any other file, in their own patch
  --json               print the summary as JSON on stdout
  -q, --quiet          no progress line
  -h, --help           this help

Sizes take KiB, MiB, GiB suffixes. Smaller chunks find more reuse in scattered
edits at the cost of more ops and a larger index.

Exit codes: 0 ok, 2 usage, 3 I/O error, 4 malformed index file,
5 index file does not match BASE.`;

/** The values of `--format`. */
const FORMATS = new Map<string, 1 | 2 | 3 | 4>([["1", 1], ["2", 2], ["3", 3], ["4", 4]]);

/** The option `--base-index` had before index files were renamed from signatures. */
const OLD_BASE_INDEX_OPTION = "--base-sig";

/** Runs `encode`. */
export async function encodeCommand(args: string[]): Promise<number> {
  rejectOldBaseIndexOption(args);
  const { values, positionals } = parseCommand("encode", args, {
    output: { type: "string", short: "o" },
    "base-index": { type: "string" },
    format: { type: "string" },
    "base-onnx": { type: "string" },
    "target-onnx": { type: "string" },
    ...chunkOptions,
    ...threadsOption,
  });
  if (values.help) {
    println(ENCODE_HELP);
    return 0;
  }
  const [base, target] = requirePositionals("encode", positionals, ["base", "target"]);
  if (!values.output) {
    throw new UsageError("encode: -o PATCH is required (see poolboy encode --help)");
  }
  for (const [role, input] of [["BASE", base], ["TARGET", target]]) {
    if (await sameFile(input, values.output)) {
      throw new UsageError(`encode: -o PATCH must not be ${role} (it would replace the input)`);
    }
  }
  const baseIndex = values["base-index"];
  if (baseIndex !== undefined && Object.keys(chunkOptions).some((k) => k in values)) {
    throw new UsageError(
      "encode: with --base-index the chunk sizes come from the index file; drop --min/--avg/--max-chunk",
    );
  }
  const format = FORMATS.get(values.format ?? "4");
  if (format === undefined) {
    throw new UsageError(`encode: --format must be 1, 2, 3 or 4, got "${values.format}"`);
  }
  const layouts = await sideFileLayouts(format, [
    ["BASE", base, values["base-onnx"]],
    ["TARGET", target, values["target-onnx"]],
  ]);
  const chunk = chunkParamsFrom(values);
  const progress = new ProgressLine("encode", { quiet: values.quiet || values.json });
  let summary: EncodeSummary;
  try {
    summary = await encodeFile(base, target, values.output, {
      chunk,
      baseIndex,
      onProgress: progress.callback,
      threads: values.threads === undefined ? undefined : threadsFrom(values, 0),
      format,
      ...(layouts && { layouts }),
    });
  } finally {
    progress.done();
  }
  if (values.json) {
    printJson({ command: "encode", base, target, patch: values.output, ...summary });
  } else {
    printEncodeSummary(base, target, values.output, summary);
  }
  return 0;
}

/**
 * The layouts of BASE and TARGET as side files of ONNX external data, from the
 * models given with --base-onnx and --target-onnx, or undefined if neither is.
 */
async function sideFileLayouts(
  format: 1 | 2 | 3 | 4,
  sides: [role: string, path: string, model: string | undefined][],
): Promise<{ base?: TensorRange[]; target?: TensorRange[] } | undefined> {
  if (sides.every(([, , model]) => model === undefined)) return undefined;
  if (format === 1) {
    throw new UsageError(
      "encode: --base-onnx and --target-onnx lay out tensors for the DELTA ops of formats 2 to 4; drop them or use --format 3 or 4",
    );
  }
  const [base, target] = await Promise.all(sides.map(async ([role, path, model]) => {
    if (model === undefined) return undefined;
    let size: number;
    try {
      size = (await Deno.stat(path)).size;
    } catch (err) {
      throw ioError(`read ${role}`, path, err);
    }
    return await externalDataLayout(model, path, size);
  }));
  return { ...(base && { base }), ...(target && { target }) };
}

/**
 * Refuses `--base-sig` (before option parsing, which would only call it unknown)
 * with an error naming its new spelling. Arguments after `--` are file names.
 */
function rejectOldBaseIndexOption(args: string[]): void {
  for (const arg of args) {
    if (arg === "--") return;
    if (arg === OLD_BASE_INDEX_OPTION || arg.startsWith(`${OLD_BASE_INDEX_OPTION}=`)) {
      throw new UsageError(
        "encode: --base-sig was renamed: use --base-index IDX (make one with poolboy index FILE -o FILE.idx; old .sig files still work)",
      );
    }
  }
}

function printEncodeSummary(base: string, target: string, patch: string, s: EncodeSummary): void {
  const percent = s.targetSize > 0 ? (100 * s.patchSize) / s.targetSize : 0;
  println(`encoded ${target} against ${base}`);
  println(
    `  patch    ${patch}: ${formatBytes(s.patchSize)} = ${percent.toFixed(2)}% of the target's ${
      formatBytes(s.targetSize)
    } (base ${formatBytes(s.baseSize)})`,
  );
  println(`  COPY     ${formatBytes(s.copyBytes)} in ${countOf(s.copyOps, "op")}`);
  println(`  LITERAL  ${formatBytes(s.literalBytes)} in ${countOf(s.literalOps, "op")}`);
  if (s.zliteralOps + s.deltaOps > 0) {
    println(`  ZLITERAL ${formatBytes(s.zliteralBytes)} in ${countOf(s.zliteralOps, "op")}`);
    println(`  DELTA    ${formatBytes(s.deltaBytes)} in ${countOf(s.deltaOps, "op")}`);
  }
  if (s.zrecordsOps + s.drecordsOps > 0) {
    println(`  ZRECORDS ${formatBytes(s.zrecordsBytes)} in ${countOf(s.zrecordsOps, "op")}`);
    println(`  DRECORDS ${formatBytes(s.drecordsBytes)} in ${countOf(s.drecordsOps, "op")}`);
  }
  println(
    `  chunks   base ${s.baseChunks}${
      s.usedBaseIndex ? " (from its index file)" : ""
    }, target ${s.targetChunks} (min ${formatBytes(s.chunk.min)}, avg ${
      formatBytes(s.chunk.avg)
    }, max ${formatBytes(s.chunk.max)})`,
  );
  println(
    `  time     ${(s.elapsedMs / 1000).toFixed(2)} s, ${
      megabytesPerSecond(s.targetSize, s.elapsedMs).toFixed(0)
    } MB/s of target (${
      megabytesPerSecond((s.usedBaseIndex ? 0 : s.baseSize) + s.targetSize, s.elapsedMs).toFixed(0)
    } MB/s read, ${
      s.threads === 0 ? "hashing in the main thread" : countOf(s.threads, "hashing thread")
    })`,
  );
  println(`  target   BLAKE3 ${s.targetBlake3}`);
}
