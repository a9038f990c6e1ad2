/**
 * `poolboy signature FILE -o FILE.sig`: write a file's chunk list for later encodes.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { ProgressLine } from "./progress_line.ts";
import { writeSignature } from "../codec/signature.ts";
import { formatBytes, megabytesPerSecond } from "../kernel/units.ts";
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

export const SIGNATURE_HELP =
  `poolboy signature — save a file's chunk list, so encodes against it skip reading it

Usage: poolboy signature FILE -o FILE.sig [options]

Chunks FILE with FastCDC and writes every chunk's length and BLAKE3, the file's
size, modification time and BLAKE3, and the chunk sizes used (format in
README, "Signature format"). Then

  poolboy encode FILE NEW -o PATCH --base-sig FILE.sig

reads only NEW. encode refuses a signature whose size or modification time no
longer match FILE. A signature of a 200 GB file at 1 MiB chunks is about 7 MB.

Options:
  -o, --output SIG     where to write the signature (required)
  --min-chunk SIZE     smallest chunk (default 256KiB)
  --avg-chunk SIZE     average chunk, a power of two (default 1MiB)
  --max-chunk SIZE     largest chunk (default 4MiB)
  --threads N          Workers hashing chunks (default: one per core but one,
                       at least 1); the main thread reads and cuts. Each adds
                       about 7-18 MB and one buffer of 1.25 × max chunk
  --json               print the summary as JSON on stdout
  -q, --quiet          no progress line
  -h, --help           this help

Exit codes: 0 ok, 2 usage, 3 I/O error.`;

/** Runs `signature`. */
export async function signatureCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("signature", args, {
    output: { type: "string", short: "o" },
    ...chunkOptions,
    ...threadsOption,
  });
  if (values.help) {
    println(SIGNATURE_HELP);
    return 0;
  }
  const [file] = requirePositionals("signature", positionals, ["file"]);
  if (!values.output) {
    throw new UsageError("signature: -o SIG is required (see poolboy signature --help)");
  }
  if (await sameFile(file, values.output)) {
    throw new UsageError("signature: -o SIG must not be FILE (it would replace it)");
  }
  const progress = new ProgressLine("signature", { quiet: values.quiet || values.json });
  const s = await writeSignature(file, values.output, {
    chunk: chunkParamsFrom(values),
    onProgress: progress.callback,
    threads: threadsFrom(values),
  }).finally(() => progress.done());
  if (values.json) {
    printJson({ command: "signature", file, signature: values.output, ...s });
  } else {
    println(`signed ${file}: ${formatBytes(s.fileSize)} in ${s.chunkCount} chunks`);
    println(`  signature ${values.output}: ${formatBytes(s.signatureSize)}`);
    println(
      `  time      ${(s.elapsedMs / 1000).toFixed(2)} s, ${
        megabytesPerSecond(s.fileSize, s.elapsedMs).toFixed(0)
      } MB/s`,
    );
    println(`  file      BLAKE3 ${s.fileBlake3}`);
  }
  return 0;
}
