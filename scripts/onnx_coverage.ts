/**
 * How much of ONNX models the encoder sees as tensors (codec/onnx_layout.ts):
 * per file, its size, the tensors whose bytes are inline and the share of the
 * file they cover (all of them, and those of at least `MIN_LAYOUT_TENSOR`
 * bytes that the coder uses), by element width, and how many tensors live in
 * side files of external data.
 *
 * Usage: deno run --allow-read scripts/onnx_coverage.ts MODEL.onnx...
 *
 * @module
 */

import { onnxTensors } from "../codec/onnx_layout.ts";
import { MIN_LAYOUT_TENSOR } from "../codec/encoder.ts";
import { printTable } from "./measure.ts";

if (Deno.args.length === 0 || Deno.args.includes("-h") || Deno.args.includes("--help")) {
  console.log(`deno run --allow-read scripts/onnx_coverage.ts MODEL.onnx...

Prints, per ONNX file, the tensors whose bytes are in it (initializers, sparse
initializers, Constant nodes, subgraphs, functions) and the share of the file
they cover, all of them and those the encoder codes as tensors (at least
${MIN_LAYOUT_TENSOR} bytes), by element width, and the tensors kept in side files.`);
  Deno.exit(Deno.args.length === 0 ? 2 : 0);
}

const header = [
  "file",
  "bytes",
  "tensors",
  "covered",
  `coded (>= ${MIN_LAYOUT_TENSOR} B)`,
  "by width",
  "external",
];
const lines: string[][] = [];
for (const path of Deno.args) {
  using file = await Deno.open(path);
  const size = (await file.stat()).size;
  const found = onnxTensors(file, size);
  if (found === null) {
    lines.push([path, String(size), "not an ONNX model poolboy reads", "", "", "", ""]);
    continue;
  }
  const bytes = (ts: typeof found.inline) => ts.reduce((sum, t) => sum + t.end - t.start, 0);
  const coded = found.inline.filter((t) => t.end - t.start >= MIN_LAYOUT_TENSOR);
  const widths = new Map<string, number>();
  for (const t of found.inline) {
    const w = t.width === undefined ? "none" : String(t.width);
    widths.set(w, (widths.get(w) ?? 0) + t.end - t.start);
  }
  const percent = (n: number) => `${(100 * n / size).toFixed(1)}%`;
  lines.push([
    path.split("/").pop() ?? path,
    String(size),
    String(found.inline.length),
    percent(bytes(found.inline)),
    `${coded.length}: ${percent(bytes(coded))}`,
    [...widths].map(([w, n]) => `${w}: ${percent(n)}`).join(", "),
    String(found.external.length),
  ]);
}
printTable(header, lines);
