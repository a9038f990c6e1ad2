/**
 * The command-line parser (cli/arg_parser.ts): parseArgs's strict rules for
 * the options poolboy's commands use, checked against `node:util` parseArgs
 * itself on the same arguments, and its refusals as short sentences.
 */

import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { ArgumentError, type OptionSpecs, parseArguments } from "../cli/arg_parser.ts";

const OPTIONS = {
  help: { type: "boolean", short: "h" },
  quiet: { type: "boolean", short: "q" },
  output: { type: "string", short: "o" },
  format: { type: "string" },
  release: { type: "string", multiple: true },
  force: { type: "boolean" },
} as const satisfies OptionSpecs;

/** node:util parseArgs on the same arguments, strict, positionals allowed, as plain data. */
function reference(args: string[]): { values: Record<string, unknown>; positionals: string[] } {
  const { values, positionals } = parseArgs({
    args,
    options: OPTIONS,
    strict: true,
    allowPositionals: true,
  });
  return { values: { ...values }, positionals };
}

const ACCEPTED: string[][] = [
  [],
  ["base", "patch"],
  ["base", "patch", "-o", "out", "-q"],
  ["-o", "out", "base"],
  ["-oout", "base"],
  ["--output", "out", "--format", "3", "a", "b"],
  ["--output=out", "--format=3"],
  ["--output="],
  ["--output=-dash-"],
  ["-hq"],
  ["-qo", "out"],
  ["-qoout"],
  ["--release", "1.0", "--release=2.0", "x"],
  ["--format", "2", "--format", "3"],
  ["a", "--", "--not-an-option", "-h"],
  ["-", "b"],
  ["--force", "--quiet", "--help"],
];

Deno.test("every accepted command line parses exactly as node:util parseArgs parses it", () => {
  for (const args of ACCEPTED) {
    const got = parseArguments(args, OPTIONS);
    assert.deepEqual(
      { values: { ...got.values }, positionals: got.positionals },
      reference(args),
      args.join(" "),
    );
  }
});

const REFUSED: Array<[string[], string]> = [
  [["--nope"], "unknown option --nope"],
  [["--nope=1"], "unknown option --nope"],
  [["-x"], "unknown option -x"],
  [["-qx"], "unknown option -x"],
  [["--output"], "option --output needs a value"],
  [["--output", "-q"], "option --output needs a value"],
  [["-o"], "option -o, --output needs a value"],
  [["-o", "--format"], "option -o, --output needs a value"],
  [["--force=yes"], "option --force takes no value"],
  [["--help=1"], "option --help takes no value"],
  [["--constructor", "x"], "unknown option --constructor"],
  [["--__proto__"], "unknown option --__proto__"],
];

Deno.test("a command line parseArgs refuses is refused too, with one short sentence", () => {
  for (const [args, message] of REFUSED) {
    assert.throws(() => reference(args), Error, `node:util accepts ${args.join(" ")}`);
    assert.throws(
      () => parseArguments(args, OPTIONS),
      (err: unknown) => err instanceof ArgumentError && err.message === message,
      args.join(" "),
    );
  }
});

Deno.test("absent options are undefined; a repeated option keeps its last value unless multiple", () => {
  const { values } = parseArguments(["--format", "2", "--format", "3", "--release", "a"], OPTIONS);
  assert.equal(values.format, "3");
  assert.deepEqual(values.release, ["a"]);
  assert.equal(values.output, undefined);
  assert.equal(values.help, undefined);
});

Deno.test("the parser imports nothing of node: (any node: import costs every command ~4.5 MB)", async () => {
  const source = await Deno.readTextFile(new URL("../cli/arg_parser.ts", import.meta.url));
  assert.doesNotMatch(source, /from\s+["']node:/);
});
