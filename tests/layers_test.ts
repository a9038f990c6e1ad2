/**
 * The layers are one-way doors, and this guard keeps them shut: every product
 * file's imports (static, re-exports, dynamic `import("...")` and Worker
 * `new URL("...", import.meta.url)`) are read and checked against the rules in
 * `tests/support/layers.ts`: kernel/ imports only kernel/; codec/ only codec/
 * and kernel/, without cbor-x or sockets; transfer/ only transfer/ and kernel/;
 * agent/ and controlplane/ never each other; a cli command never another
 * command, a cli helper never a command; mod.ts only cli/ and kernel/; no
 * product file imports tests/, testkit/ or scripts/; scripts/ never tests/;
 * testkit/ never tests/ or scripts/. A failure names each file → import and
 * the rule it breaks. The checker is itself tested on synthetic files, so that
 * it cannot pass by reading nothing.
 */

import assert from "node:assert/strict";
import {
  checkLayers,
  describeViolations,
  importsOf,
  readSourceTree,
  resolveSpecifier,
  type SourceFile,
} from "./support/layers.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");

Deno.test("no file of the repository imports across a layer the wrong way", async () => {
  const report = checkLayers(await readSourceTree(ROOT));
  assert.ok(report.productFiles > 50, `read only ${report.productFiles} product files`);
  assert.ok(report.productImports > 100, `read only ${report.productImports} product imports`);
  assert.equal(
    report.violations.length,
    0,
    `layer rules broken:\n${describeViolations(report.violations)}`,
  );
});

Deno.test("the guard reads the real tree's lazy command imports and Worker URL, and reports a wrong-way import planted in it", async () => {
  const files = await readSourceTree(ROOT);
  const mod = files.find((f) => f.path === "mod.ts")!;
  assert.ok(
    importsOf(mod.text).some((i) => i.specifier === "./cli/encode.ts" && i.kind === "dynamic"),
  );
  const pool = files.find((f) => f.path === "codec/hash_pool.ts")!;
  assert.deepEqual(
    importsOf(pool.text).filter((i) => i.kind === "worker-url"),
    [{ specifier: "./hash_worker.ts", kind: "worker-url" }],
  );
  const planted: SourceFile = {
    path: "codec/planted.ts",
    text: `import { encodeMessage } from "../transfer/control_messages.ts";\n`,
  };
  const report = checkLayers([...files, planted]);
  assert.equal(
    describeViolations(report.violations),
    "codec/planted.ts → ../transfer/control_messages.ts: codec/ imports only codec/ and kernel/",
  );
});

Deno.test("the import reader finds static, multi-line, type, re-export, side-effect, dynamic and Worker imports, and not those in doc comments", () => {
  const text = `/**
 * An example in a doc comment is not an import:
 * import { nope } from "../tests/nope.ts";
 */
import { a } from "./a.ts";
import {
  b,
  c,
} from "../kernel/b.ts";
import type { T } from "./t.ts";
import * as ns from "node:fs";
import "./side_effect.ts";
export { d } from "./d.ts";
export * from "./e.ts";
export type { U } from "./u.ts";
const m = await import("./lazy.ts");
type Z = typeof import("node:zlib");
const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
const here = import.meta.url;
`;
  assert.deepEqual(importsOf(text), [
    { specifier: "./a.ts", kind: "static" },
    { specifier: "../kernel/b.ts", kind: "static" },
    { specifier: "./t.ts", kind: "static" },
    { specifier: "node:fs", kind: "static" },
    { specifier: "./side_effect.ts", kind: "static" },
    { specifier: "./d.ts", kind: "re-export" },
    { specifier: "./e.ts", kind: "re-export" },
    { specifier: "./u.ts", kind: "re-export" },
    { specifier: "./lazy.ts", kind: "dynamic" },
    { specifier: "node:zlib", kind: "dynamic" },
    { specifier: "./worker.ts", kind: "worker-url" },
  ]);
});

/** A synthetic file that imports `specifier` (by `kind`) and nothing else. */
function fileImporting(
  path: string,
  specifier: string,
  kind: "static" | "re-export" | "dynamic" | "worker-url" = "static",
): SourceFile {
  const text = {
    static: `import { x } from "${specifier}";\n`,
    "re-export": `export { x } from "${specifier}";\n`,
    dynamic: `const m = await import("${specifier}");\n`,
    "worker-url": `new Worker(new URL("${specifier}", import.meta.url), { type: "module" });\n`,
  }[kind];
  return { path, text };
}

Deno.test("the checker reports each kind of wrong-way import, naming the file, the import and the rule", () => {
  const cases: [SourceFile, RegExp][] = [
    [fileImporting("kernel/units.ts", "../codec/fastcdc.ts"), /kernel\/ imports only kernel\//],
    [fileImporting("codec/encoder.ts", "../transfer/blob_store.ts"), /codec\/ imports only/],
    [fileImporting("codec/encoder.ts", "cbor-x"), /must not import cbor-x/],
    [fileImporting("codec/encoder.ts", "npm:cbor-x@1.6.0"), /must not import cbor-x/],
    [fileImporting("transfer/blob_store.ts", "../codec/encoder.ts"), /transfer\/ imports only/],
    [fileImporting("release/keys.ts", "../transfer/blob_store.ts"), /release\/ imports only/],
    [fileImporting("release/trust_policy.ts", "../agent/agent.ts"), /release\/ imports only/],
    [fileImporting("transfer/blob_store.ts", "../agent/agent.ts", "dynamic"), /transfer\//],
    [
      fileImporting("agent/agent.ts", "../controlplane/election.ts"),
      /must not import controlplane/,
    ],
    [fileImporting("controlplane/http_api.ts", "../agent/model_slots.ts", "re-export"), /agent/],
    [fileImporting("agent/agent.ts", "../cli/output.ts"), /agent\/ imports only/],
    [fileImporting("cli/encode.ts", "./apply.ts"), /command must not import another command/],
    [fileImporting("cli/encode.ts", "./status.ts", "dynamic"), /another command/],
    [fileImporting("cli/output.ts", "./status.ts"), /helpers .* must not import commands/],
    [fileImporting("cli/status.ts", "../mod.ts"), /cli\/ imports only/],
    [fileImporting("mod.ts", "./codec/encoder.ts"), /mod\.ts imports only cli\/ and kernel\//],
    [fileImporting("cli/apply.ts", "../tests/helpers.ts"), /never imports tests\//],
    [fileImporting("codec/applier.ts", "../testkit/corpus.ts"), /never imports tests\/, testkit\//],
    [fileImporting("kernel/blake3.ts", "../scripts/bench.ts"), /never imports .*scripts\//],
    [fileImporting("codec/hash_pool.ts", "../tests/worker.ts", "worker-url"), /never imports/],
    [
      fileImporting("scripts/bench.ts", "../tests/cli_helpers.ts"),
      /scripts\/ must not import tests\//,
    ],
    [fileImporting("testkit/corpus.ts", "../tests/helpers.ts"), /testkit\/ must not import tests/],
    [
      fileImporting("testkit/corpus.ts", "../scripts/demo.ts"),
      /testkit\/ must not import .*scripts/,
    ],
    [fileImporting("codec/x.ts", "jsr:@std/path"), /no jsr:/],
    [fileImporting("codec/x.ts", "../../outside.ts"), /inside the repository/],
    [{ path: "cli/hash.ts", text: "const m = await import(name);\n" }, /string literal/],
    [{ path: "codec/x.ts", text: "const l = Deno.listen({ port: 1 });\n" }, /sockets/],
    [{ path: "codec/x.ts", text: "await Deno.connect({ port: 1 });\n" }, /sockets/],
    [
      { path: "codec/x.ts", text: 'Deno.listenDatagram({ port: 1, transport: "udp" });\n' },
      /sockets/,
    ],
    [{ path: "codec/x.ts", text: "const r = await fetch(url);\n" }, /sockets/],
  ];
  for (const [file, rule] of cases) {
    const { violations } = checkLayers([file]);
    assert.equal(violations.length, 1, `${file.path}: ${file.text}`);
    const line = describeViolations(violations);
    assert.ok(line.startsWith(`${file.path} → `), line);
    assert.match(line, rule);
  }
});

Deno.test("the checker lets the allowed directions through", () => {
  const allowed: SourceFile[] = [
    fileImporting("kernel/blake3.ts", "./blake3_wasm.ts"),
    fileImporting("kernel/file_io.ts", "node:fs"),
    fileImporting("codec/encoder.ts", "../kernel/errors.ts"),
    fileImporting("codec/hash_pool.ts", "./hash_worker.ts", "worker-url"),
    fileImporting("codec/zstd_context.ts", "node:zlib", "dynamic"),
    fileImporting("transfer/control_messages.ts", "cbor-x"),
    fileImporting("transfer/blob_server.ts", "../kernel/atomic_file.ts"),
    fileImporting("agent/agent.ts", "../transfer/blob_client.ts"),
    fileImporting("agent/agent.ts", "../codec/applier.ts"),
    fileImporting("agent/agent.ts", "../release/trust_policy.ts"),
    fileImporting("release/keys.ts", "../kernel/blake3.ts"),
    fileImporting("cli/publish.ts", "../release/documents.ts"),
    fileImporting("controlplane/control_plane.ts", "../codec/encoder.ts"),
    fileImporting("cli/encode.ts", "./args.ts"),
    fileImporting("cli/status.ts", "./api_client.ts"),
    fileImporting("cli/output.ts", "./progress_line.ts"),
    fileImporting("cli/agent.ts", "../agent/agent.ts"),
    fileImporting("cli/controlplane.ts", "../controlplane/control_plane.ts"),
    fileImporting("mod.ts", "./cli/encode.ts", "dynamic"),
    fileImporting("mod.ts", "./kernel/errors.ts"),
    fileImporting("scripts/bench.ts", "../testkit/corpus.ts"),
    fileImporting("scripts/bench.ts", "../mod.ts", "worker-url"),
    fileImporting("testkit/fleet_harness.ts", "../transfer/default_ports.ts"),
  ];
  const report = checkLayers(allowed);
  assert.equal(report.violations.length, 0, describeViolations(report.violations));
  assert.equal(report.imports, allowed.length);
  assert.equal(report.productFiles, allowed.length - 3);
});

Deno.test("an import of new URL(literal, import.meta.url).href is read as a dynamic import of that literal, and checked like one", () => {
  const text = `const m = await import(new URL("./cli/apply.ts", import.meta.url).href);
const n = await import(
  new URL("./tests/helpers.ts", import.meta.url).href
);
const w = new Worker(new URL("./kernel/worker.ts", import.meta.url), { type: "module" });
const o = await import(new URL(name, import.meta.url).href);
`;
  const found = importsOf(text);
  assert.deepEqual(found.slice(0, 3), [
    { specifier: "./cli/apply.ts", kind: "dynamic" },
    { specifier: "./tests/helpers.ts", kind: "dynamic" },
    { specifier: "./kernel/worker.ts", kind: "worker-url" },
  ]);
  assert.equal(found.length, 4);
  assert.match(found[3].specifier, /^<non-literal/);
  const { violations } = checkLayers([{ path: "mod.ts", text }]);
  assert.equal(violations.length, 2, describeViolations(violations));
  assert.match(describeViolations(violations), /never imports tests\//);
  assert.match(describeViolations(violations), /string literal/);
});

/**
 * Every module `poolboy apply` loads: mod.ts's static imports, cli/apply.ts
 * and what they import (static and dynamic, Worker URLs too), transitively.
 */
function applyGraph(files: SourceFile[]): Map<string, string[]> {
  const byPath = new Map(files.map((f) => [f.path, f]));
  const graph = new Map<string, string[]>();
  const visit = (path: string, onlyStatic: boolean) => {
    if (graph.has(path)) return;
    const file = byPath.get(path);
    assert.ok(file, `the graph names ${path}, which is not in the tree`);
    const specifiers = importsOf(file.text)
      .filter((i) => !onlyStatic || i.kind === "static" || i.kind === "re-export")
      .map((i) => i.specifier);
    graph.set(path, specifiers);
    for (const s of specifiers) {
      const target = resolveSpecifier(path, s);
      if (target !== undefined) visit(target, false);
    }
  };
  visit("mod.ts", true);
  visit("cli/apply.ts", false);
  return graph;
}

Deno.test("poolboy apply loads no node: module (Deno's Node layer costs ~4.5 MB of its 64 MB)", async () => {
  const graph = applyGraph(await readSourceTree(ROOT));
  assert.ok(graph.has("codec/applier.ts") && graph.has("codec/zstd_decoder.ts"));
  assert.ok(graph.size > 15, `read only ${graph.size} modules`);
  const offenders = [...graph].flatMap(([path, specifiers]) =>
    specifiers.filter((s) => s.startsWith("node:")).map((s) => `${path} → ${s}`)
  );
  assert.deepEqual(offenders, []);
});
