/**
 * Where an ONNX model's tensors are, for the v2 encoder's DELTA alignment and
 * element widths (`modelLayout` in tensor_layout.ts calls `onnxLayout`), and
 * the layout of a model's side file of external data.
 *
 * A protobuf walk over the whole file (every other field skipped by its
 * length; the file must parse as fields that end exactly at its end) finds
 * the TensorProtos in:
 * - ModelProto.graph (7): GraphProto.initializer (5), sparse_initializer (15:
 *   SparseTensorProto values (1) and indices (2), named `NAME/values` and
 *   `NAME/indices` after the values tensor's name), and every node's (1)
 *   attributes (NodeProto.attribute 5 → AttributeProto t 5, tensors 10,
 *   sparse_tensor 22): a tensor that has its own name (TensorProto.name 8)
 *   keeps it; a Constant node's unnamed value is named by the node's first
 *   output (else its name), any other unnamed attribute tensor `NODE/ATTR`
 *   (`NODE/ATTR/i` in a list), NODE being the node's name, else its first
 *   output, else `#index`;
 * - subgraphs of If/Loop/Scan and any other node (AttributeProto g 6, graphs
 *   11), recursively up to `MAX_GRAPH_DEPTH` levels, their tensors named with
 *   their path, e.g. `If_0/then_branch/w` (`NODE/ATTR/i/...` in a list);
 * - model-local functions (ModelProto.functions 25 → FunctionProto.node 7),
 *   as `functions/NAME/...`, and training graphs (ModelProto.training_info 20
 *   → initialization 1, algorithm 2) as `training_info/i/initialization/...`.
 * A name seen twice gets `#2`, `#3`, ... in file order.
 *
 * A tensor's bytes are read where they are fixed-width little-endian values
 * back to back: raw_data (9, width by data_type), packed float_data (4, width
 * 4) and packed double_data (10, 8-byte: no width). The varint-packed fields
 * (int32_data 5, which also holds FLOAT16/BFLOAT16 one value per varint,
 * int64_data 7, uint64_data 11) are not tensors here: varints have no fixed
 * width, and those bytes are coded as bytes. Tensors with data_location (14)
 * EXTERNAL and external_data (13, key/value entries "location", "offset",
 * "length") are listed apart (`onnxTensors(...).external`): their bytes are in
 * a side file, whose layout `externalDataLayout` makes.
 *
 * Bounds: at most `MAX_PROTOBUF_FIELDS` fields, `MAX_TENSORS` tensors,
 * `MAX_NAME_BYTES` bytes of names kept, graphs nested `MAX_GRAPH_DEPTH` deep.
 * Anything malformed or over a bound (truncation, a bad varint, a length past
 * its message, a group wire type, nesting too deep) means no layout (null):
 * the encoder then codes the file as bytes. Nothing read from the file is
 * trusted: a side file's location must stay inside the model's directory.
 *
 * @module
 */

import { dirname, isAbsolute, join, resolve } from "node:path";
import { FileCursor, LayoutError } from "./file_cursor.ts";
import { InvalidArgumentError, ioError } from "../kernel/errors.ts";
import type { ElementWidth, TensorRange } from "./tensor_layout.ts";

/** Element widths of ONNX TensorProto data types (8-byte types are left to the encoder). */
const ONNX_WIDTH: Readonly<Record<number, ElementWidth>> = {
  1: 4, // FLOAT
  2: 1, // UINT8
  3: 1, // INT8
  4: 2, // UINT16
  5: 2, // INT16
  6: 4, // INT32
  9: 1, // BOOL
  10: 2, // FLOAT16
  12: 4, // UINT32
  14: 4, // COMPLEX64 (two FLOATs)
  16: 2, // BFLOAT16
  17: 1, // FLOAT8E4M3FN
  18: 1, // FLOAT8E4M3FNUZ
  19: 1, // FLOAT8E5M2
  20: 1, // FLOAT8E5M2FNUZ
};

/** Most protobuf fields an ONNX walk reads before giving up (a guard against odd files). */
export const MAX_PROTOBUF_FIELDS = 10_000_000;
/** Most TensorProtos (with bytes or not) a model may have for a layout. */
export const MAX_TENSORS = 200_000;
/** Most bytes of tensor names (with their paths) kept for one model. */
export const MAX_NAME_BYTES = 32 * 1024 * 1024;
/** Deepest nesting of subgraphs read (the main graph is level 0). */
export const MAX_GRAPH_DEPTH = 16;
/** Longest single name or string read from the file (a longer one counts as absent). */
const MAX_STRING = 64 * 1024;

/** A tensor whose bytes are in a side file (TensorProto.data_location EXTERNAL). */
export interface ExternalTensor {
  readonly name: string;
  /** external_data "location" as the model wrote it: untrusted. */
  readonly location: string;
  /** external_data "offset" and "length" as the model wrote them (decimal strings), if present. */
  readonly offset?: string;
  readonly length?: string;
  readonly width?: ElementWidth;
}

/** The tensors of an ONNX model: inline ones by their byte range, external ones by their entries. */
export interface OnnxTensors {
  /** Sorted by start, disjoint. */
  readonly inline: TensorRange[];
  /** In file order. */
  readonly external: ExternalTensor[];
}

/**
 * The tensors of an ONNX model whose bytes are in the file (raw_data,
 * float_data, double_data, anywhere in the model), or null if the file is not
 * a whole ModelProto with a graph and at least one such tensor.
 */
export function onnxLayout(file: Deno.FsFile, fileSize: number): TensorRange[] | null {
  const tensors = onnxTensors(file, fileSize);
  return tensors && tensors.inline.length > 0 ? tensors.inline : null;
}

/** A tensor as found, named relative to the message it was found in. */
type Found =
  | { kind: "inline"; name: string; start: number; end: number; width?: ElementWidth }
  | {
    kind: "external";
    name: string;
    location: string;
    offset?: string;
    length?: string;
    width?: ElementWidth;
  };

/** One TensorProto's fields that matter here. */
interface TensorInfo {
  name: string;
  data?: { start: number; end: number; width?: ElementWidth };
  external?: { location: string; offset?: string; length?: string; width?: ElementWidth };
}

/**
 * Every tensor of an ONNX model (see the module comment), or null if the file
 * is not a whole ModelProto with a graph, or is over a bound.
 */
export function onnxTensors(file: Deno.FsFile, fileSize: number): OnnxTensors | null {
  const walker = new Walker(new FileCursor(file, fileSize));
  let found: Found[];
  try {
    found = walker.model(fileSize);
  } catch (err) {
    if (err instanceof LayoutError) return null;
    throw err;
  }
  if (found.length === 0 && !walker.sawGraph) return null;
  // Names seen again get #2, #3, ... in file order.
  const seen = new Map<string, number>();
  const unique = (name: string) => {
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    return n === 1 ? name : `${name}#${n}`;
  };
  const byPosition = found.map((f, i) => ({ f, i })).sort((a, b) =>
    position(a.f) - position(b.f) || a.i - b.i
  );
  const inline: TensorRange[] = [];
  const external: ExternalTensor[] = [];
  for (const { f } of byPosition) {
    const name = unique(f.name);
    if (f.kind === "inline") {
      inline.push({ name, start: f.start, end: f.end, ...(f.width && { width: f.width }) });
    } else {
      const { kind: _, ...rest } = f;
      external.push({ ...rest, name });
    }
  }
  return { inline, external };
}

/** Where a found tensor sorts: inline ones by their start, external ones after all of them. */
function position(f: Found): number {
  return f.kind === "inline" ? f.start : Number.MAX_SAFE_INTEGER;
}

/** The walk over a ModelProto; each method reads one message that ends at `end`. */
class Walker {
  readonly #r: FileCursor;
  #fields = 0;
  #tensors = 0;
  #nameBytes = 0;
  sawGraph = false;

  constructor(r: FileCursor) {
    this.#r = r;
  }

  /** Calls `onField(field, wire, fieldEnd)` for each field of the message ending at `end`; a field it does not read (false) is skipped. */
  #walk(end: number, onField: (field: number, wire: number, fieldEnd: number) => boolean): void {
    const r = this.#r;
    while (r.position < end) {
      if (++this.#fields > MAX_PROTOBUF_FIELDS) throw new LayoutError("too many fields");
      const tag = r.varint();
      const field = Math.floor(tag / 8);
      const wire = tag % 8;
      if (field === 0) throw new LayoutError("field 0");
      let fieldEnd: number;
      if (wire === 0) {
        const start = r.position;
        r.varint();
        fieldEnd = r.position;
        r.position = start;
      } else if (wire === 1) fieldEnd = r.position + 8;
      else if (wire === 5) fieldEnd = r.position + 4;
      else if (wire === 2) {
        const length = r.varint();
        fieldEnd = r.position + length;
      } else throw new LayoutError(`wire type ${wire}`);
      if (fieldEnd > end) throw new LayoutError("field past its message");
      if (!onField(field, wire, fieldEnd)) r.position = fieldEnd;
      if (r.position !== fieldEnd) throw new LayoutError("field misread");
    }
    if (r.position !== end) throw new LayoutError("message past its end");
  }

  /** A length-delimited string field, or undefined if longer than `MAX_STRING`. */
  #string(fieldEnd: number): string | undefined {
    const n = fieldEnd - this.#r.position;
    if (n > MAX_STRING) {
      this.#r.position = fieldEnd;
      return undefined;
    }
    return this.#r.utf8(n);
  }

  /** `prefix` + `name`, counted against the name budget. */
  #named(prefix: string, found: Found[]): Found[] {
    if (prefix === "") return found;
    for (const f of found) {
      f.name = prefix + f.name;
      this.#nameBytes += f.name.length;
    }
    if (this.#nameBytes > MAX_NAME_BYTES) throw new LayoutError("names too long");
    return found;
  }

  /** One more TensorProto read, within `MAX_TENSORS`. */
  #count(): void {
    if (++this.#tensors > MAX_TENSORS) throw new LayoutError("too many tensors");
  }

  model(end: number): Found[] {
    const out: Found[] = [];
    let functionIndex = 0;
    let trainingIndex = 0;
    this.#walk(end, (field, wire, fieldEnd) => {
      if (wire !== 2) return false;
      if (field === 7) {
        this.sawGraph = true;
        append(out, this.graph(fieldEnd, 0));
      } else if (field === 25) {
        append(out, this.function(fieldEnd, functionIndex++));
      } else if (field === 20) {
        const i = trainingIndex++;
        this.#walk(fieldEnd, (f, w, e) => {
          if (w !== 2 || (f !== 1 && f !== 2)) return false;
          const part = f === 1 ? "initialization" : "algorithm";
          append(out, this.#named(`training_info/${i}/${part}/`, this.graph(e, 1)));
          return true;
        });
      } else return false;
      return true;
    });
    if (!this.sawGraph) throw new LayoutError("no graph");
    return out;
  }

  /** A FunctionProto: its nodes, as `functions/NAME/...`. */
  function(end: number, index: number): Found[] {
    const out: Found[] = [];
    let name: string | undefined;
    let nodeIndex = 0;
    this.#walk(end, (field, wire, fieldEnd) => {
      if (wire !== 2) return false;
      if (field === 1) name = this.#string(fieldEnd);
      else if (field === 7) append(out, this.node(fieldEnd, 1, nodeIndex++));
      else return false;
      return true;
    });
    return this.#named(`functions/${name || `#${index}`}/`, out);
  }

  /** A GraphProto at nesting `depth`: its initializers, sparse initializers and nodes' tensors. */
  graph(end: number, depth: number): Found[] {
    if (depth > MAX_GRAPH_DEPTH) throw new LayoutError("graphs nested too deep");
    const out: Found[] = [];
    let nodeIndex = 0;
    this.#walk(end, (field, wire, fieldEnd) => {
      if (wire !== 2) return false;
      if (field === 5) {
        const t = this.tensor(fieldEnd);
        if (t.name !== "") this.#push(out, t.name, t);
      } else if (field === 15) {
        const s = this.sparse(fieldEnd);
        if (s.name !== "") append(out, this.#named(`${s.name}/`, s.found));
      } else if (field === 1) {
        append(out, this.node(fieldEnd, depth, nodeIndex++));
      } else return false;
      return true;
    });
    return out;
  }

  /** A SparseTensorProto: its values (1) and indices (2) tensors, named `values` and `indices`; `name` is the values tensor's. */
  sparse(end: number): { name: string; found: Found[] } {
    const found: Found[] = [];
    let name = "";
    this.#walk(end, (field, wire, fieldEnd) => {
      if (wire !== 2 || (field !== 1 && field !== 2)) return false;
      const t = this.tensor(fieldEnd);
      if (field === 1) name = t.name;
      this.#push(found, field === 1 ? "values" : "indices", t);
      return true;
    });
    return { name, found };
  }

  /** A NodeProto: the tensors of its attributes and subgraphs, named as the module comment says. */
  node(end: number, depth: number, index: number): Found[] {
    let firstOutput: string | undefined;
    let nodeName: string | undefined;
    let opType: string | undefined;
    const attributes: { name: string; tensors: { t: TensorInfo; i?: number }[]; sub: Found[] }[] =
      [];
    this.#walk(end, (field, wire, fieldEnd) => {
      if (wire !== 2) return false;
      if (field === 2) {
        const output = this.#string(fieldEnd);
        firstOutput ??= output;
      } else if (field === 3) nodeName = this.#string(fieldEnd);
      else if (field === 4) opType = this.#string(fieldEnd);
      else if (field === 5) attributes.push(this.attribute(fieldEnd, depth));
      else return false;
      return true;
    });
    const id = nodeName || firstOutput || `#${index}`;
    const out: Found[] = [];
    for (const a of attributes) {
      for (const { t, i } of a.tensors) {
        let name = t.name;
        if (name === "") {
          if (opType === "Constant" && i === undefined) name = firstOutput || nodeName || id;
          else name = i === undefined ? `${id}/${a.name}` : `${id}/${a.name}/${i}`;
        }
        this.#push(out, name, t);
      }
      append(out, this.#named(`${id}/`, a.sub));
    }
    return out;
  }

  /** An AttributeProto: its tensors (t, tensors, sparse_tensor) and its subgraphs' tensors (named `ATTR/...`). */
  attribute(
    end: number,
    depth: number,
  ): { name: string; tensors: { t: TensorInfo; i?: number }[]; sub: Found[] } {
    let name = "";
    const tensors: { t: TensorInfo; i?: number }[] = [];
    const graphs: Found[][] = [];
    const sub: Found[] = [];
    let sparse: { name: string; found: Found[] } | undefined;
    this.#walk(end, (field, wire, fieldEnd) => {
      if (wire !== 2) return false;
      if (field === 1) name = this.#string(fieldEnd) ?? "";
      else if (field === 5) tensors.push({ t: this.tensor(fieldEnd) });
      else if (field === 10) tensors.push({ t: this.tensor(fieldEnd), i: tensors.length });
      else if (field === 6 || field === 11) graphs.push(this.graph(fieldEnd, depth + 1));
      else if (field === 22) sparse = this.sparse(fieldEnd);
      else return false;
      return true;
    });
    const attr = name || "attribute";
    if (graphs.length === 1) append(sub, this.#named(`${attr}/`, graphs[0]));
    else graphs.forEach((g, i) => append(sub, this.#named(`${attr}/${i}/`, g)));
    if (sparse) append(sub, this.#named(`${sparse.name || attr}/`, sparse.found));
    return { name: attr, tensors, sub };
  }

  /** Adds tensor `t` as `name` if it has bytes (inline or external). */
  #push(out: Found[], name: string, t: TensorInfo): void {
    this.#nameBytes += name.length;
    if (this.#nameBytes > MAX_NAME_BYTES) throw new LayoutError("names too long");
    if (t.data && t.data.end > t.data.start) {
      const { start, end, width } = t.data;
      out.push({ kind: "inline", name, start, end, ...(width && { width }) });
    } else if (t.external) {
      out.push({ kind: "external", name, ...t.external });
    }
  }

  /** A TensorProto: name (8), data_type (2), raw_data (9), float_data (4), double_data (10), external data (13, 14). */
  tensor(end: number): TensorInfo {
    this.#count();
    const r = this.#r;
    let name = "";
    let dataType = 0;
    let dataLocation = 0;
    let raw: { start: number; end: number } | undefined;
    let floats: { start: number; end: number } | undefined;
    let doubles: { start: number; end: number } | undefined;
    const entries = new Map<string, string>();
    this.#walk(end, (field, wire, fieldEnd) => {
      if (field === 8 && wire === 2) name = this.#string(fieldEnd) ?? "";
      else if (field === 2 && wire === 0) dataType = r.varint();
      else if (field === 14 && wire === 0) dataLocation = r.varint();
      else if (field === 9 && wire === 2) raw = { start: r.position, end: fieldEnd };
      else if (field === 4 && wire === 2) floats = { start: r.position, end: fieldEnd };
      else if (field === 10 && wire === 2) doubles = { start: r.position, end: fieldEnd };
      else if (field === 13 && wire === 2) {
        let key: string | undefined;
        let value: string | undefined;
        this.#walk(fieldEnd, (f, w, e) => {
          if (w !== 2 || (f !== 1 && f !== 2)) return false;
          if (f === 1) key = this.#string(e);
          else value = this.#string(e);
          return true;
        });
        if (key !== undefined && value !== undefined) entries.set(key, value);
        return true;
      } else return false;
      r.position = fieldEnd;
      return true;
    });
    const width = ONNX_WIDTH[dataType];
    const info: TensorInfo = { name };
    const location = entries.get("location");
    if (dataLocation === 1 && location !== undefined) {
      const offset = entries.get("offset");
      const length = entries.get("length");
      info.external = {
        location,
        ...(offset !== undefined && { offset }),
        ...(length !== undefined && { length }),
        ...(width && { width }),
      };
    } else if (raw) info.data = { ...raw, ...(width && { width }) };
    else if (floats) info.data = { ...floats, width: 4 };
    else if (doubles) info.data = doubles;
    return info;
  }
}

// ---------------------------------------------------------------------------
// External data

/** Most characters of a decimal offset or length in external_data. */
const MAX_DECIMAL_DIGITS = 16;

/**
 * Why `location`, a side-file path from a model, is refused, or undefined if
 * it is a plain relative path inside the model's directory: not empty, not
 * absolute, no `..` segment, no backslash, no NUL.
 */
export function unsafeLocation(location: string): string | undefined {
  if (location === "") return "it is empty";
  if (location.includes("\0")) return "it holds a NUL byte";
  if (location.includes("\\")) return "it holds a backslash";
  if (isAbsolute(location) || /^[A-Za-z]:/.test(location)) return "it is an absolute path";
  if (location.split("/").includes("..")) return "it climbs out of the model's directory (..)";
  return undefined;
}

/** A decimal byte count from external_data, or undefined if it is not one. */
function decimal(text: string): number | undefined {
  if (text.length === 0 || text.length > MAX_DECIMAL_DIGITS || !/^[0-9]+$/.test(text)) {
    return undefined;
  }
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * The tensors of the side file `dataPath` (`dataSize` bytes), from the
 * external tensors of the model at `modelPath` whose location names it
 * (relative to the model's directory): each a range [offset, offset + length)
 * (no length: to the end of the file), with the width of its data_type.
 * Overlapping ranges keep the first. Throws an InvalidArgumentError if the
 * model is not an ONNX model poolboy reads, has no external tensor, names a
 * location outside its directory (any of its tensors), names none in
 * `dataPath`, or has an offset or length that is not a decimal byte count or
 * runs past the side file's end.
 */
export async function externalDataLayout(
  modelPath: string,
  dataPath: string,
  dataSize: number,
): Promise<TensorRange[]> {
  let tensors: OnnxTensors | null;
  let model: Deno.FsFile;
  try {
    model = await Deno.open(modelPath, { read: true });
  } catch (err) {
    throw ioError("open model", modelPath, err);
  }
  try {
    const info = await model.stat();
    if (!info.isFile) throw new InvalidArgumentError(`model "${modelPath}" is not a regular file`);
    tensors = onnxTensors(model, info.size);
  } finally {
    model.close();
  }
  if (tensors === null) {
    throw new InvalidArgumentError(
      `"${modelPath}" is not an ONNX model poolboy can read (a whole ModelProto with a graph, within the layout limits)`,
    );
  }
  if (tensors.external.length === 0) {
    throw new InvalidArgumentError(
      `model "${modelPath}" keeps no tensor in a side file (data_location EXTERNAL): it cannot give the layout of "${dataPath}"`,
    );
  }
  for (const t of tensors.external) {
    const why = unsafeLocation(t.location);
    if (why) {
      throw new InvalidArgumentError(
        `model "${modelPath}": tensor "${t.name}" has its data at location ${
          JSON.stringify(t.location)
        }, refused because ${why}; poolboy reads side files only by plain relative paths inside the model's directory`,
      );
    }
  }
  const modelDir = dirname(modelPath);
  const wanted = resolve(dataPath);
  const wantedReal = await realPathOrUndefined(dataPath);
  const dirReal = await realPathOrUndefined(modelDir);
  const names = (location: string) =>
    resolve(modelDir, location) === wanted ||
    (wantedReal !== undefined && dirReal !== undefined && join(dirReal, location) === wantedReal);
  const matching = new Map<string, boolean>();
  const mine = tensors.external.filter((t) => {
    let m = matching.get(t.location);
    if (m === undefined) matching.set(t.location, m = names(t.location));
    return m;
  });
  if (mine.length === 0) {
    const locations = [...matching.keys()].slice(0, 8).map((l) => JSON.stringify(l)).join(", ");
    throw new InvalidArgumentError(
      `no tensor of model "${modelPath}" has its data in "${dataPath}" (locations are relative to the model's directory; it names ${locations}${
        matching.size > 8 ? ", ..." : ""
      })`,
    );
  }
  const ranges: TensorRange[] = [];
  for (const t of mine) {
    const offset = t.offset === undefined ? 0 : decimal(t.offset);
    const length = t.length === undefined ? undefined : decimal(t.length);
    if (offset === undefined || (t.length !== undefined && length === undefined)) {
      throw new InvalidArgumentError(
        `model "${modelPath}": tensor "${t.name}" has an external data offset or length that is not a decimal byte count (${
          JSON.stringify(t.offset ?? "")
        }, ${JSON.stringify(t.length ?? "")})`,
      );
    }
    const end = length === undefined ? dataSize : offset + length;
    if (offset > dataSize || end > dataSize) {
      throw new InvalidArgumentError(
        `model "${modelPath}": tensor "${t.name}" runs to byte ${end}, past the end of "${dataPath}" (${dataSize} bytes): is it this side file's model?`,
      );
    }
    if (end > offset) {
      ranges.push({ name: t.name, start: offset, end, ...(t.width && { width: t.width }) });
    }
  }
  ranges.sort((a, b) => a.start - b.start || a.end - b.end);
  const disjoint: TensorRange[] = [];
  for (const range of ranges) {
    const last = disjoint[disjoint.length - 1];
    if (!last || range.start >= last.end) disjoint.push(range);
  }
  return disjoint;
}

async function realPathOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await Deno.realPath(path);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// Reading

/** Appends `items` to `out` one by one (a spread of a long array would overflow the stack). */
function append<T>(out: T[], items: readonly T[]): void {
  for (const item of items) out.push(item);
}
