/**
 * Every ONNX tensor (codec/onnx_layout.ts): initializers, sparse initializers,
 * Constant nodes and other attribute tensors, subgraphs of If/Loop nodes and
 * model-local functions are laid out with their path names, from raw_data,
 * float_data and double_data; varint-packed data and external tensors are not
 * inline ranges. A fine-tuned constant and subgraph weight become DELTA ops
 * against the same-named base tensor even when every offset moved. Side files
 * of external data are laid out from their model (`externalDataLayout`,
 * `poolboy encode --base-onnx/--target-onnx`), and paths that leave the
 * model's directory, ranges past the side file and models without a tensor in
 * it are refused with one clear line. Malformed models of every kind have no
 * layout and still encode and apply.
 */

import assert from "node:assert/strict";
import { encodeFile } from "../codec/encoder.ts";
import { applyFile } from "../codec/applier.ts";
import {
  externalDataLayout,
  MAX_GRAPH_DEPTH,
  MAX_TENSORS,
  onnxLayout,
  onnxTensors,
  unsafeLocation,
} from "../codec/onnx_layout.ts";
import { modelLayout, type TensorRange } from "../codec/tensor_layout.ts";
import { InvalidArgumentError } from "../kernel/errors.ts";
import { varint } from "../testkit/corpus.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";
import { assertUserError, EXIT, poolboy } from "./cli_helpers.ts";
import { layoutOfBytes } from "./support/layouts.ts";
import {
  attrGraph,
  attrGraphs,
  attrTensor,
  attrTensors,
  bytesOf,
  DT,
  findOnce,
  floats,
  fn,
  graph,
  key,
  model,
  node,
  pbBytes,
  pbString,
  pbVarint,
  tensor,
} from "./support/onnx_proto.ts";

const KiB = 1024;

// ---------------------------------------------------------------------------
// A model with a tensor in every place

/** Distinct bytes for each tensor, so that each can be found in the file. */
function raw(n: number, seed: number): Uint8Array {
  return randomBytes(n, 1000 + seed);
}

const R = {
  w: raw(40, 1),
  fd: raw(32, 2),
  dd: raw(16, 3),
  spValues: raw(12, 4),
  spIndices: raw(24, 5),
  constant: raw(10, 6),
  namedConstant: raw(8, 7),
  cos: raw(8, 8),
  thenW: raw(16, 9),
  thenC: raw(6, 10),
  elseW: raw(20, 11),
  deep: raw(12, 12),
  br0: raw(8, 13),
  br1: raw(8, 14),
  table0: raw(8, 15),
  table1: raw(8, 16),
  fnC: raw(12, 17),
};

function everyPlaceModel(): Uint8Array {
  const ifNode = node({
    name: "If_0",
    opType: "If",
    inputs: ["cond"],
    outputs: ["y"],
    attributes: [
      attrGraph(
        "then_branch",
        graph({
          name: "then",
          nodes: [
            node({
              opType: "Constant",
              outputs: ["t_c"],
              attributes: [attrTensor("value", tensor({ dataType: DT.BFLOAT16, raw: R.thenC }))],
            }),
          ],
          initializers: [tensor({ name: "w", dataType: DT.FLOAT, raw: R.thenW })],
        }),
      ),
      attrGraph(
        "else_branch",
        graph({
          name: "else",
          initializers: [tensor({ name: "w", dataType: DT.FLOAT, raw: R.elseW })],
        }),
      ),
    ],
  });
  const loopNode = node({
    opType: "Loop",
    outputs: ["loop_out"],
    attributes: [
      attrGraph(
        "body",
        graph({
          name: "body",
          nodes: [
            node({
              name: "inner",
              opType: "If",
              attributes: [
                attrGraph(
                  "then_branch",
                  graph({
                    initializers: [tensor({ name: "deep", dataType: DT.FLOAT, raw: R.deep })],
                  }),
                ),
              ],
            }),
          ],
        }),
      ),
    ],
  });
  const main = graph({
    name: "main",
    nodes: [
      node({
        name: "Constant_0",
        opType: "Constant",
        outputs: ["c_out"],
        attributes: [attrTensor("value", tensor({ dataType: DT.FLOAT16, raw: R.constant }))],
      }),
      node({
        opType: "Constant",
        outputs: ["named_out"],
        attributes: [
          attrTensor("value", tensor({ name: "k", dataType: DT.FLOAT, raw: R.namedConstant })),
        ],
      }),
      node({
        name: "cos",
        opType: "ConstantOfShape",
        inputs: ["shape"],
        outputs: ["filled"],
        attributes: [attrTensor("value", tensor({ dataType: DT.INT64, raw: R.cos }))],
      }),
      ifNode,
      loopNode,
      node({
        name: "Scanish",
        opType: "Custom",
        attributes: [
          attrGraphs("branches", [
            graph({ initializers: [tensor({ name: "a", dataType: DT.FLOAT, raw: R.br0 })] }),
            graph({ initializers: [tensor({ name: "a", dataType: DT.FLOAT, raw: R.br1 })] }),
          ]),
        ],
      }),
      node({
        name: "multi",
        opType: "Custom",
        attributes: [
          attrTensors("tables", [
            tensor({ dataType: DT.INT32, raw: R.table0 }),
            tensor({ name: "tb", dataType: DT.INT32, raw: R.table1 }),
          ]),
        ],
      }),
    ],
    initializers: [
      tensor({ name: "w", dataType: DT.FLOAT, dims: [10], raw: R.w }),
      tensor({ name: "fd", dataType: DT.FLOAT, floatData: R.fd }),
      tensor({ name: "dd", dataType: DT.DOUBLE, doubleData: R.dd }),
      tensor({ name: "i32", dataType: DT.INT32, int32Data: [1, 300, 70000] }),
      tensor({
        name: "ext",
        dataType: DT.FLOAT,
        external: { location: "weights.bin", offset: "4096", length: "64" },
      }),
    ],
    sparse: [{
      values: tensor({ name: "sp", dataType: DT.FLOAT, raw: R.spValues }),
      indices: tensor({ dataType: DT.INT64, raw: R.spIndices }),
      dims: [100],
    }],
  });
  const local = fn("Fn", [
    node({
      opType: "Constant",
      outputs: ["f_c"],
      attributes: [attrTensor("value", tensor({ dataType: DT.FLOAT, raw: R.fnC }))],
    }),
  ]);
  return model(main, [local]);
}

/** The layout `everyPlaceModel` must have, by where each tensor's bytes are. */
function everyPlaceLayout(bytes: Uint8Array): TensorRange[] {
  const at = (name: string, data: Uint8Array, width?: 1 | 2 | 4): TensorRange => {
    const start = findOnce(bytes, data);
    return { name, start, end: start + data.length, ...(width && { width }) };
  };
  return [
    at("w", R.w, 4),
    at("fd", R.fd, 4),
    at("dd", R.dd),
    at("sp/values", R.spValues, 4),
    at("sp/indices", R.spIndices),
    at("c_out", R.constant, 2),
    at("k", R.namedConstant, 4),
    at("cos/value", R.cos),
    at("If_0/then_branch/w", R.thenW, 4),
    at("If_0/then_branch/t_c", R.thenC, 2),
    at("If_0/else_branch/w", R.elseW, 4),
    at("loop_out/body/inner/then_branch/deep", R.deep, 4),
    at("Scanish/branches/0/a", R.br0, 4),
    at("Scanish/branches/1/a", R.br1, 4),
    at("multi/tables/0", R.table0, 4),
    at("tb", R.table1, 4),
    at("functions/Fn/f_c", R.fnC, 4),
  ].sort((a, b) => a.start - b.start);
}

Deno.test("a tensor in every place of an ONNX model is laid out under its path name: initializers, float_data, double_data, sparse values and indices, Constant nodes, attribute tensors, If/Loop subgraphs nested twice, graph lists and model-local functions", async () => {
  const bytes = everyPlaceModel();
  const want = everyPlaceLayout(bytes);
  assert.deepEqual(await layoutOfBytes(bytes, onnxLayout), want);
  assert.deepEqual(await layoutOfBytes(bytes, modelLayout), want, "modelLayout agrees");
});

Deno.test("varint-packed int32_data and external tensors are not inline ranges; the external tensor is listed with its entries as written", async () => {
  const bytes = everyPlaceModel();
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/m.onnx`, bytes);
    using file = await Deno.open(`${dir}/m.onnx`);
    const found = onnxTensors(file, bytes.length);
    assert.ok(found);
    assert.ok(!found.inline.some((t) => t.name === "i32" || t.name === "ext"));
    assert.deepEqual(found.external, [
      { name: "ext", location: "weights.bin", offset: "4096", length: "64", width: 4 },
    ]);
  });
});

Deno.test("a name seen twice is told apart by #2 in file order (nodes are written before initializers)", async () => {
  const a = raw(8, 40);
  const b = raw(8, 41);
  const bytes = model(graph({
    nodes: [
      node({
        opType: "Constant",
        outputs: ["w"],
        attributes: [attrTensor("value", tensor({ dataType: DT.FLOAT, raw: a }))],
      }),
    ],
    initializers: [tensor({ name: "w", dataType: DT.FLOAT, raw: b })],
  }));
  const layout = await layoutOfBytes(bytes, onnxLayout);
  assert.deepEqual(layout?.map((t) => t.name), ["w", "w#2"]);
  assert.equal(layout?.[0].start, findOnce(bytes, a));
});

Deno.test("a model with only external tensors has no inline layout, so its .onnx is coded as bytes", async () => {
  const bytes = model(graph({
    initializers: [
      tensor({ name: "a", dataType: DT.FLOAT, external: { location: "m.data", offset: "0" } }),
    ],
  }));
  assert.equal(await layoutOfBytes(bytes, onnxLayout), null);
  assert.equal(await layoutOfBytes(bytes, modelLayout), null);
});

// ---------------------------------------------------------------------------
// Malformed models: no layout, no throw

/** Checks that `layout` is null or a sorted, disjoint list of ranges inside a file of `size` bytes. */
function assertSane(layout: TensorRange[] | null, size: number, context: string): void {
  if (layout === null) return;
  let last = 0;
  for (const t of layout) {
    assert.ok(t.start >= last && t.end > t.start && t.end <= size, `${context}: ${t.name}`);
    last = t.end;
  }
}

/** `onnxLayout` of each of `cases`, all written into one directory. */
async function layoutsOf(cases: Uint8Array[]): Promise<(TensorRange[] | null)[]> {
  return await withTempDir(async (dir) => {
    const out: (TensorRange[] | null)[] = [];
    for (const [i, bytes] of cases.entries()) {
      await Deno.writeFile(`${dir}/${i}`, bytes);
      using file = await Deno.open(`${dir}/${i}`);
      out.push(onnxLayout(file, bytes.length));
    }
    return out;
  });
}

Deno.test("every truncation of a model (its graph is the last field) has no layout", async () => {
  const bytes = everyPlaceModel();
  const cuts = Array.from({ length: bytes.length }, (_, n) => n);
  const layouts = await layoutsOf(cuts.map((n) => bytes.subarray(0, n)));
  for (const [i, layout] of layouts.entries()) assert.equal(layout, null, `cut at ${cuts[i]}`);
});

Deno.test("a model with random bytes overwritten anywhere never throws: no layout, or ranges inside the file", async () => {
  const bytes = everyPlaceModel();
  const noise = randomBytes(3 * 400, 77);
  const cases = Array.from({ length: 400 }, (_, i) => {
    const copy = bytes.slice();
    const at = (noise[3 * i] * 256 + noise[3 * i + 1]) % copy.length;
    copy[at] = noise[3 * i + 2];
    return copy;
  });
  for (const [i, layout] of (await layoutsOf(cases)).entries()) {
    assertSane(layout, cases[i].length, `case ${i}`);
  }
});

/** A model whose If node's then_branch graph body is `body` (lengths around it made right). */
function withThenBranch(body: Uint8Array): Uint8Array {
  return model(graph({
    nodes: [node({ name: "If_0", opType: "If", attributes: [attrGraph("then_branch", body)] })],
    initializers: [tensor({ name: "w", dataType: DT.FLOAT, raw: raw(16, 50) })],
  }));
}

Deno.test("a bad varint, a length past its message, a group wire type or a huge length inside a subgraph gives no layout", async () => {
  const long = concat(new Uint8Array(10).fill(0x80), new Uint8Array([0x01])); // 11 bytes
  const cases: [string, Uint8Array][] = [
    ["data_type varint of 11 bytes", withThenBranch(pbBytes(5, pbString(8, "x"), key(2, 0), long))],
    [
      "initializer longer than its graph",
      withThenBranch(concat(key(5, 2), varint(1000), raw(8, 51))),
    ],
    ["start group wire type", withThenBranch(concat(key(5, 3), raw(4, 52)))],
    ["length of 2^50", withThenBranch(concat(key(5, 2), varint(2 ** 50)))],
    ["field number 0", withThenBranch(concat(pbVarint(0, 1)))],
    ["graph length of 2^53 - 1", concat(pbVarint(1, 8), key(7, 2), varint(2 ** 53 - 1))],
  ];
  const layouts = await layoutsOf(cases.map(([, bytes]) => bytes));
  for (const [i, layout] of layouts.entries()) assert.equal(layout, null, cases[i][0]);
  // The same model with a well-formed then_branch has one.
  const good = withThenBranch(
    graph({ initializers: [tensor({ name: "x", dataType: 1, raw: raw(8, 53) })] }),
  );
  assert.deepEqual((await layoutOf(good))?.map((t) => t.name), ["If_0/then_branch/x", "w"]);
});

async function layoutOf(bytes: Uint8Array): Promise<TensorRange[] | null> {
  return (await layoutsOf([bytes]))[0];
}

/** A model with If nodes nested `depth` graphs deep, the innermost graph holding tensor "x". */
function nested(depth: number): Uint8Array {
  let g = graph({ initializers: [tensor({ name: "x", dataType: DT.FLOAT, raw: raw(8, 60) })] });
  for (let level = depth; level > 0; level--) {
    g = graph({
      nodes: [
        node({ name: `If_${level}`, opType: "If", attributes: [attrGraph("then_branch", g)] }),
      ],
    });
  }
  return model(g);
}

Deno.test(`subgraphs nested ${MAX_GRAPH_DEPTH} deep are read; one level deeper the model has no layout`, async () => {
  const [ok, tooDeep] = await layoutsOf([nested(MAX_GRAPH_DEPTH), nested(MAX_GRAPH_DEPTH + 1)]);
  assert.equal(ok?.length, 1);
  assert.match(ok![0].name, /^If_1\/then_branch\/If_2\/.*\/If_16\/then_branch\/x$/);
  assert.equal(tooDeep, null);
});

Deno.test(`a model with more than ${MAX_TENSORS} TensorProtos has no layout`, async () => {
  const one = pbBytes(5, tensor({ name: "a", dataType: DT.FLOAT, raw: new Uint8Array(1) }));
  const many = new Uint8Array(one.length * (MAX_TENSORS + 1));
  for (let i = 0; i <= MAX_TENSORS; i++) many.set(one, i * one.length);
  const bytes = concat(pbVarint(1, 8), key(7, 2), varint(many.length), many);
  assert.equal(await layoutOf(bytes), null);
});

Deno.test("malformed ONNX bases and targets still encode and apply to the exact target", async () => {
  const good = everyPlaceModel();
  const truncated = good.subarray(0, good.length - 7);
  const damaged = good.slice();
  damaged[Math.floor(good.length / 2)] ^= 0xff;
  await withTempDir(async (dir) => {
    const pairs: [Uint8Array, Uint8Array][] = [
      [good, truncated],
      [truncated, good],
      [damaged, good],
      [good, damaged],
      [nested(MAX_GRAPH_DEPTH + 1), nested(MAX_GRAPH_DEPTH + 1).reverse()],
    ];
    for (const [i, [base, target]] of pairs.entries()) {
      await Deno.writeFile(`${dir}/base`, base);
      await Deno.writeFile(`${dir}/target`, target);
      await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch`, { threads: 1 });
      await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`, { threads: 1 });
      assert.deepEqual(await Deno.readFile(`${dir}/out`), target, `pair ${i}`);
    }
  });
});

// ---------------------------------------------------------------------------
// Fine-tunes of constants and subgraph weights

/** `values` with each float nudged by about 1e-4 of itself (a fine-tune). */
function fineTune(values: Float32Array, seed: number): Float32Array {
  const noise = floats(values.length, seed, 1e-4);
  return values.map((v, i) => v * (1 + noise[i]));
}

/**
 * A model with a main-graph initializer, a Constant node and an If subgraph
 * initializer; `lead` is a node name that moves every offset, and `swap` puts
 * the If node before the Constant.
 */
function fineTuneModel(
  t: { emb: Float32Array; c: Float32Array; w: Float32Array },
  lead: string,
  swap = false,
): Uint8Array {
  const constant = node({
    opType: "Constant",
    outputs: ["c"],
    attributes: [attrTensor("value", tensor({ dataType: DT.FLOAT, raw: bytesOf(t.c) }))],
  });
  const ifNode = node({
    name: "If_0",
    opType: "If",
    attributes: [
      attrGraph(
        "then_branch",
        graph({ initializers: [tensor({ name: "w", dataType: DT.FLOAT, raw: bytesOf(t.w) })] }),
      ),
    ],
  });
  return model(graph({
    nodes: [
      node({ name: lead, opType: "Identity", inputs: ["x"], outputs: ["x1"] }),
      ...(swap ? [ifNode, constant] : [constant, ifNode]),
    ],
    initializers: [tensor({ name: "emb", dataType: DT.FLOAT, raw: bytesOf(t.emb) })],
  }));
}

Deno.test("a fine-tuned Constant, If-subgraph weight and initializer become DELTA ops against the same-named base tensors though every offset moved and the nodes swapped places", async () => {
  const base = { emb: floats(16 * KiB, 1), c: floats(20 * KiB, 2), w: floats(24 * KiB, 3) };
  const tuned = { emb: fineTune(base.emb, 4), c: fineTune(base.c, 5), w: fineTune(base.w, 6) };
  const baseBytes = fineTuneModel(base, "n");
  // Every tensor 3000 bytes later, and c and w swapped: c 96 KiB later, w 80 KiB earlier.
  const targetBytes = fineTuneModel(tuned, "n".repeat(3001), true);
  const tensorBytes = 4 * (16 + 20 + 24) * KiB;
  const layout = await layoutOf(targetBytes);
  assert.deepEqual(layout?.map((t) => t.name), ["If_0/then_branch/w", "c", "emb"]);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.onnx`, baseBytes);
    await Deno.writeFile(`${dir}/target.onnx`, targetBytes);
    const summary = await encodeFile(`${dir}/base.onnx`, `${dir}/target.onnx`, `${dir}/p`, {
      threads: 1,
    });
    assert.ok(summary.deltaOps >= 3, `${summary.deltaOps} DELTA ops`);
    assert.ok(summary.deltaBytes >= tensorBytes, `${summary.deltaBytes} bytes as DELTA`);
    // A fine-tune's residue is mostly zero planes: far under the tensors' size.
    assert.ok(summary.patchSize < tensorBytes * 0.6, `patch ${summary.patchSize} B`);
    await applyFile(`${dir}/base.onnx`, `${dir}/p`, `${dir}/out`, { threads: 1 });
    assert.deepEqual(await Deno.readFile(`${dir}/out`), targetBytes);
  });
});

// ---------------------------------------------------------------------------
// External data

/** A model directory: `model.onnx` naming tensors in `model.onnx.data`, laid out in `order` at 4 KiB steps. */
async function writeExternalModel(
  dir: string,
  tensors: Record<string, Float32Array>,
  order: string[],
  location = "model.onnx.data",
): Promise<{ ranges: TensorRange[] }> {
  await Deno.mkdir(dir, { recursive: true });
  const parts: Uint8Array[] = [];
  const initializers: Uint8Array[] = [];
  const ranges: TensorRange[] = [];
  let offset = 0;
  for (const name of order) {
    const data = bytesOf(tensors[name]);
    const pad = (4096 - (offset % 4096)) % 4096;
    parts.push(new Uint8Array(pad), data);
    offset += pad;
    initializers.push(
      tensor({
        name,
        dataType: DT.FLOAT,
        external: { location, offset: String(offset), length: String(data.length) },
      }),
    );
    ranges.push({ name, start: offset, end: offset + data.length, width: 4 });
    offset += data.length;
  }
  await Deno.writeFile(`${dir}/model.onnx`, model(graph({ initializers })));
  await Deno.writeFile(`${dir}/model.onnx.data`, concat(...parts));
  return { ranges };
}

Deno.test("a side file's layout comes from its model's external_data entries (location, offset, length)", async () => {
  await withTempDir(async (dir) => {
    const t = { a: floats(1000, 1), b: floats(3000, 2) };
    const { ranges } = await writeExternalModel(`${dir}/v1`, t, ["b", "a"]);
    const size = (await Deno.stat(`${dir}/v1/model.onnx.data`)).size;
    assert.deepEqual(
      await externalDataLayout(`${dir}/v1/model.onnx`, `${dir}/v1/model.onnx.data`, size),
      ranges,
    );
  });
});

Deno.test("external data locations that are empty, absolute or climb out of the directory are unsafe; plain relative paths are not", () => {
  for (const bad of ["", "/etc/passwd", "../model.data", "a/../../b", "C:/w.bin", "a\\b", "a\0b"]) {
    assert.ok(unsafeLocation(bad), JSON.stringify(bad));
  }
  for (const fine of ["model.onnx.data", "weights/part1.bin", "./w.bin", "a..b"]) {
    assert.equal(unsafeLocation(fine), undefined, fine);
  }
});

Deno.test("externalDataLayout refuses, naming the problem: a location outside the directory, no tensor in the file, a range past its end, a bad offset, no external tensor, not a model", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/w.data`, new Uint8Array(1000));
    const cases: [string, Uint8Array, RegExp][] = [
      [
        "escape",
        model(
          graph({
            initializers: [tensor({ name: "a", dataType: 1, external: { location: "../w.data" } })],
          }),
        ),
        /tensor "a".*"\.\.\/w\.data".*climbs out/,
      ],
      [
        "absolute",
        model(
          graph({
            initializers: [
              tensor({ name: "a", dataType: 1, external: { location: `${dir}/w.data` } }),
            ],
          }),
        ),
        /absolute path/,
      ],
      [
        "other file",
        model(
          graph({
            initializers: [tensor({ name: "a", dataType: 1, external: { location: "other.bin" } })],
          }),
        ),
        /no tensor of model .* has its data in .*"other\.bin"/,
      ],
      [
        "past the end",
        model(graph({
          initializers: [
            tensor({
              name: "a",
              dataType: 1,
              external: { location: "w.data", offset: "900", length: "200" },
            }),
          ],
        })),
        /tensor "a" runs to byte 1100, past the end .*\(1000 bytes\)/,
      ],
      [
        "bad offset",
        model(graph({
          initializers: [
            tensor({ name: "a", dataType: 1, external: { location: "w.data", offset: "-4" } }),
          ],
        })),
        /not a decimal byte count/,
      ],
      [
        "inline only",
        model(graph({ initializers: [tensor({ name: "a", dataType: 1, raw: raw(8, 70) })] })),
        /keeps no tensor in a side file/,
      ],
      ["not a model", raw(300, 71), /not an ONNX model/],
    ];
    for (const [name, bytes, message] of cases) {
      await Deno.writeFile(`${dir}/m.onnx`, bytes);
      await assert.rejects(
        externalDataLayout(`${dir}/m.onnx`, `${dir}/w.data`, 1000),
        (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message),
        name,
      );
    }
  });
});

Deno.test("poolboy encode --base-onnx --target-onnx: a fine-tuned, reordered side file of external data is coded as DELTA ops and applies exactly; the .onnx files encode too", async () => {
  await withTempDir(async (dir) => {
    const base = { a: floats(8 * KiB, 1), b: floats(12 * KiB, 2), c: floats(4 * KiB, 3) };
    const tuned = { a: fineTune(base.a, 4), b: fineTune(base.b, 5), c: fineTune(base.c, 6) };
    await writeExternalModel(`${dir}/v1`, base, ["a", "b", "c"]);
    await writeExternalModel(`${dir}/v2`, tuned, ["c", "b", "a"]); // another order: offsets differ
    const encoded = await poolboy(
      dir,
      "encode",
      "v1/model.onnx.data",
      "v2/model.onnx.data",
      "--base-onnx",
      "v1/model.onnx",
      "--target-onnx",
      "v2/model.onnx",
      "-o",
      "data.patch",
      "--json",
    );
    assert.equal(encoded.code, EXIT.ok, encoded.stderr);
    const summary = JSON.parse(encoded.stdout);
    const tensorBytes = 4 * 24 * KiB;
    assert.ok(summary.deltaBytes >= tensorBytes, `${summary.deltaBytes} bytes as DELTA`);
    assert.ok(summary.patchSize < tensorBytes * 0.6, `patch ${summary.patchSize} B`);
    const blind = await poolboy(
      dir,
      "encode",
      "v1/model.onnx.data",
      "v2/model.onnx.data",
      "-o",
      "blind.patch",
      "--json",
    );
    // The same pair without the models: no tensor edges, no DELTA found, more than twice the size.
    assert.equal(blind.code, EXIT.ok, blind.stderr);
    const blindSummary = JSON.parse(blind.stdout);
    assert.ok(
      summary.patchSize * 2 < blindSummary.patchSize,
      `${summary.patchSize} B with the models, ${blindSummary.patchSize} B without`,
    );
    const applied = await poolboy(
      dir,
      "apply",
      "v1/model.onnx.data",
      "data.patch",
      "-o",
      "out.data",
    );
    assert.equal(applied.code, EXIT.ok, applied.stderr);
    assert.deepEqual(
      await Deno.readFile(`${dir}/out.data`),
      await Deno.readFile(`${dir}/v2/model.onnx.data`),
    );
    // The models themselves (external tensors only) encode and apply as any file.
    const model = await poolboy(
      dir,
      "encode",
      "v1/model.onnx",
      "v2/model.onnx",
      "-o",
      "m.patch",
      "-q",
    );
    assert.equal(model.code, EXIT.ok, model.stderr);
    const rebuilt = await poolboy(dir, "apply", "v1/model.onnx", "m.patch", "-o", "out.onnx", "-q");
    assert.equal(rebuilt.code, EXIT.ok, rebuilt.stderr);
    assert.deepEqual(
      await Deno.readFile(`${dir}/out.onnx`),
      await Deno.readFile(`${dir}/v2/model.onnx`),
    );
  });
});

Deno.test("poolboy encode refuses a model whose external data location leaves its directory and --base-onnx with --format 1 (exit 2), and a missing model (exit 3), each in one line", async () => {
  await withTempDir(async (dir) => {
    await writeExternalModel(`${dir}/v1`, { a: floats(100, 1) }, ["a"], "../secret.bin");
    await Deno.writeFile(`${dir}/t.data`, new Uint8Array(400));
    const escaped = await poolboy(
      dir,
      "encode",
      "v1/model.onnx.data",
      "t.data",
      "--base-onnx",
      "v1/model.onnx",
      "-o",
      "p",
    );
    assertUserError(escaped, EXIT.usage, "v1/model.onnx", "../secret.bin", "directory");
    const format1 = await poolboy(
      dir,
      "encode",
      "v1/model.onnx.data",
      "t.data",
      "--target-onnx",
      "v1/model.onnx",
      "--format",
      "1",
      "-o",
      "p",
    );
    assertUserError(format1, EXIT.usage, "--format 3");
    const missing = await poolboy(
      dir,
      "encode",
      "v1/model.onnx.data",
      "t.data",
      "--base-onnx",
      "v1/nothing.onnx",
      "-o",
      "p",
    );
    assertUserError(missing, EXIT.io, "v1/nothing.onnx", "no such file");
    const help = await poolboy(dir, "encode", "--help");
    assert.match(help.stdout, /--base-onnx MODEL/);
    assert.match(help.stdout, /--target-onnx MODEL/);
  });
});
