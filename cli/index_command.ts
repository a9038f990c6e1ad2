/**
 * `poolboy index FILE -o FILE.idx`: write a file's chunk index file (its chunk
 * list, `codec/index_file.ts`) so that later encodes against FILE read only the
 * new file. This command was called `signature` before; `mod.ts` answers the
 * old name with a usage error that names this one.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { ProgressLine } from "./progress_line.ts";
import { writeIndexFile } from "../codec/index_file.ts";
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

export const INDEX_HELP =
  `poolboy index — save a file's chunk index, so encodes against it skip reading it

Usage: poolboy index FILE -o FILE.idx [options]

Chunks FILE with FastCDC and writes every chunk's length and BLAKE3, the file's
size, modification time and BLAKE3, and the chunk sizes used (format in
docs/spec/chunk-index-v1.md). Then

  poolboy encode FILE NEW -o PATCH --base-index FILE.idx

reads only NEW. encode refuses an index file whose size or modification time
no longer match FILE. An index file of a 200 GB file at 1 MiB chunks is about
7 MB. (This command was called "signature"; .sig files it wrote are index
files and still work with --base-index.)

Options:
  -o, --output IDX     where to write the index file (required)
  --min-chunk SIZE     smallest chunk (default 256KiB)
  --avg-chunk SIZE     average chunk, a power of two (default 1MiB)
  --max-chunk SIZE     largest chunk (default 2MiB)
  --threads N          Workers hashing chunks (default: one per core but one,
                       at least 1); the main thread reads and cuts. Each adds
                       about 7-18 MB and one buffer of 1.25 × max chunk
  --json               print the summary as JSON on stdout
  -q, --quiet          no progress line
  -h, --help           this help

Exit codes: 0 ok, 2 usage, 3 I/O error.`;

/** Runs `index`. */
export async function indexCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("index", args, {
    output: { type: "string", short: "o" },
    ...chunkOptions,
    ...threadsOption,
  });
  if (values.help) {
    println(INDEX_HELP);
    return 0;
  }
  const [file] = requirePositionals("index", positionals, ["file"]);
  if (!values.output) {
    throw new UsageError("index: -o IDX is required (see poolboy index --help)");
  }
  if (await sameFile(file, values.output)) {
    throw new UsageError("index: -o IDX must not be FILE (it would replace it)");
  }
  const progress = new ProgressLine("index", { quiet: values.quiet || values.json });
  const s = await writeIndexFile(file, values.output, {
    chunk: chunkParamsFrom(values),
    onProgress: progress.callback,
    threads: threadsFrom(values),
  }).finally(() => progress.done());
  if (values.json) {
    printJson({ command: "index", file, index: values.output, ...s });
  } else {
    println(`indexed ${file}: ${formatBytes(s.fileSize)} in ${s.chunkCount} chunks`);
    println(`  index  ${values.output}: ${formatBytes(s.indexSize)}`);
    println(
      `  time   ${(s.elapsedMs / 1000).toFixed(2)} s, ${
        megabytesPerSecond(s.fileSize, s.elapsedMs).toFixed(0)
      } MB/s`,
    );
    println(`  file   BLAKE3 ${s.fileBlake3}`);
  }
  return 0;
}
