/**
 * Patch format v2 on model files shaped like real ones (testkit/corpus.ts, every
 * container and scenario, 192 KiB) and on hand-made patches with every filter:
 * every v2 patch applies byte for byte, whether the container's layout is read
 * or not; the v2 machinery (DELTA with `sub`, byte planes, tiny front edits)
 * shows in the ops the encoder chooses and in patches smaller than v1's; and
 * every DELTA filter (width × shuffle × combine) and every ZLITERAL filter
 * (width × shuffle) is undone exactly by the applier, tails included.
 */

import assert from "node:assert/strict";
import { applyFile } from "../codec/applier.ts";
import { encodeFile, type EncodeSummary } from "../codec/encoder.ts";
import type { ChunkParams } from "../codec/fastcdc.ts";
import {
  encodeCopy,
  encodeDeltaHead,
  encodeLiteralHead,
  encodeZLiteralHead,
  type Filter,
  filterName,
} from "../codec/patch_format.ts";
import { PatchReader } from "../codec/patch_reader.ts";
import { combine, shuffle } from "../codec/residue_filter.ts";
import { modelLayout } from "../codec/tensor_layout.ts";
import {
  type ContainerFormat,
  FORMATS,
  type Scenario,
  SCENARIOS,
  writeScenario,
} from "../testkit/corpus.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";
import { v2Patch, zstd } from "./support/v2_patches.ts";
import { layoutOfFile } from "./support/layouts.ts";

const KiB = 1024;
/** The base's approximate size: big enough for several chunks and tensors, small enough to be quick. */
const SIZE = 192 * KiB;
const SEED = 1;
const SMALL: ChunkParams = { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };

// ---------------------------------------------------------------------------
// Helpers

/** An op as the reader lists it: its kind, the target bytes it makes, and its filter. */
interface ListedOp {
  readonly kind: "copy" | "literal" | "zliteral" | "delta" | "zrecords" | "drecords";
  readonly length: number;
  readonly filter?: Filter;
}

/** The version and ops of the patch at `path`, read through `PatchReader`. */
async function listOps(path: string): Promise<{ version: number; ops: ListedOp[] }> {
  const file = await Deno.open(path);
  try {
    const reader = await PatchReader.open(file);
    const scratch = new Uint8Array(64 * KiB);
    const ops: ListedOp[] = [];
    for (let op = await reader.next(); op !== null; op = await reader.next()) {
      if (op.kind === "copy") {
        ops.push({ kind: op.kind, length: op.length });
        continue;
      }
      ops.push(
        op.kind === "zliteral" || op.kind === "delta"
          ? { kind: op.kind, length: op.length, filter: op.filter }
          : { kind: op.kind, length: op.length },
      );
      await reader.skipLiteral(scratch);
    }
    return { version: reader.header.version, ops };
  } finally {
    file.close();
  }
}

/**
 * Encodes `base` → `target` as a patch of `format` at `patch`, applies it, and
 * asserts the output is the target byte for byte; returns the encoder's summary.
 */
async function encodeAndApply(
  base: string,
  target: string,
  patch: string,
  format: 1 | 2 = 2,
): Promise<EncodeSummary> {
  const summary = await encodeFile(base, target, patch, { format, chunk: SMALL, threads: 1 });
  await applyFile(base, patch, `${patch}.out`);
  const out = await Deno.readFile(`${patch}.out`);
  const expected = await Deno.readFile(target);
  assert.equal(out.length, expected.length, `${patch}: output length`);
  assert.ok(bytesEqual(out, expected), `${patch}: the output is the target byte for byte`);
  return summary;
}

/** Whether two byte arrays are equal (faster, and with a shorter failure, than deepEqual). */
function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Writes a copy of the file at `from` with `prefix` before its first byte to `to`. */
async function prepend(from: string, to: string, prefix: Uint8Array): Promise<void> {
  await Deno.writeFile(to, concat(prefix, await Deno.readFile(from)));
}

/** Total target bytes of the ops that match `pick`. */
function bytesOf(ops: readonly ListedOp[], pick: (op: ListedOp) => boolean): number {
  return ops.filter(pick).reduce((sum, op) => sum + op.length, 0);
}

/** A short account of a patch's ops by kind and filter, for failure messages. */
function describe(ops: readonly ListedOp[]): string {
  const counts = new Map<string, number>();
  for (const op of ops) {
    const key = op.filter ? `${op.kind}:${filterName(op.filter)}` : op.kind;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return JSON.stringify(Object.fromEntries(counts));
}

// ---------------------------------------------------------------------------
// Every container × every scenario

for (const format of FORMATS) {
  for (const scenario of SCENARIOS) {
    Deno.test(`${format} ${scenario}: both files have a layout and the v2 patch applies byte for byte`, async () => {
      await withTempDir(async (dir) => {
        const { base, target } = await writeScenario(dir, format, scenario, SIZE, SEED);
        assert.notEqual(await layoutOfFile(base, modelLayout), null, "the base's layout is read");
        assert.notEqual(
          await layoutOfFile(target, modelLayout),
          null,
          "the target's layout is read",
        );
        const summary = await encodeAndApply(base, target, `${dir}/patch`);
        assert.ok(summary.targetChunks > 1, `several chunks: ${summary.targetChunks}`);
        const { version, ops } = await listOps(`${dir}/patch`);
        assert.equal(version, 2);
        assert.equal(bytesOf(ops, () => true), summary.targetSize, "the ops make the whole target");
      });
    });
  }
}

for (const format of FORMATS) {
  for (const scenario of SCENARIOS) {
    Deno.test(`${format} ${scenario}: with one byte prepended no layout is found, and the v2 patch still applies byte for byte`, async () => {
      await withTempDir(async (dir) => {
        const paths = await writeScenario(dir, format, scenario, SIZE, SEED);
        const prefix = new Uint8Array([0]);
        await prepend(paths.base, `${dir}/base`, prefix);
        await prepend(paths.target, `${dir}/target`, prefix);
        assert.equal(
          await layoutOfFile(`${dir}/base`, modelLayout),
          null,
          "the base has no layout",
        );
        assert.equal(
          await layoutOfFile(`${dir}/target`, modelLayout),
          null,
          "the target has no layout",
        );
        await encodeAndApply(`${dir}/base`, `${dir}/target`, `${dir}/patch`);
      });
    });
  }
}

// ---------------------------------------------------------------------------
// What the v2 machinery buys, scenario by scenario

/** Writes `scenario` in `format` into `dir`, encodes it as v2, applies it, and lists its ops. */
async function encoded(
  dir: string,
  format: ContainerFormat,
  scenario: Scenario,
): Promise<{ v2: EncodeSummary; ops: ListedOp[]; base: string; target: string }> {
  const { base, target } = await writeScenario(dir, format, scenario, SIZE, SEED);
  const patch = `${dir}/${scenario}.v2`;
  const v2 = await encodeAndApply(base, target, patch, 2);
  return { v2, ops: (await listOps(patch)).ops, base, target };
}

for (const format of FORMATS) {
  Deno.test(`${format}: fine-tunes (finetune-fp32, finetune-bf16) are carried by DELTA ops whose combine is sub, over 90% of the tensor bytes`, async () => {
    await withTempDir(async (dir) => {
      for (const scenario of ["finetune-fp32", "finetune-bf16"] as const) {
        const { ops, target } = await encoded(dir, format, scenario);
        const tensors = (await layoutOfFile(target, modelLayout))!.reduce(
          (sum, t) => sum + t.end - t.start,
          0,
        );
        const sub = bytesOf(ops, (op) => op.kind === "delta" && op.filter?.combine === "sub");
        assert.ok(
          sub >= 0.9 * tensors,
          `${scenario}: ${sub} bytes by DELTA/sub for ${tensors} tensor bytes; ops ${
            describe(ops)
          }`,
        );
      }
    });
  });

  Deno.test(`${format}: front-bytes (a description added at the front) is a patch under 1 KiB`, async () => {
    await withTempDir(async (dir) => {
      const { v2, ops } = await encoded(dir, format, "front-bytes");
      assert.ok(v2.targetSize > 150 * KiB, `target ${v2.targetSize}`);
      assert.ok(v2.patchSize < KiB, `patch ${v2.patchSize} bytes; ops ${describe(ops)}`);
    });
  });

  Deno.test(`${format}: requant-fp16 (the F32 weights stored as F16) uses ZLITERAL ops with width-2 byte planes`, async () => {
    await withTempDir(async (dir) => {
      const { ops } = await encoded(dir, format, "requant-fp16");
      assert.ok(
        ops.some((op) =>
          op.kind === "zliteral" && op.filter?.width === 2 && op.filter.shuffle === "bytes" &&
          op.filter.combine === "xor"
        ),
        `ops ${describe(ops)}`,
      );
    });
  });

  Deno.test(`${format}: v2 is strictly smaller than v1 on finetune-fp32, finetune-bf16 and lora`, async () => {
    await withTempDir(async (dir) => {
      for (const scenario of ["finetune-fp32", "finetune-bf16", "lora"] as const) {
        const { v2, base, target } = await encoded(dir, format, scenario);
        const v1 = await encodeAndApply(base, target, `${dir}/${scenario}.v1`, 1);
        assert.ok(
          v2.patchSize < v1.patchSize,
          `${scenario}: v2 ${v2.patchSize} bytes, v1 ${v1.patchSize}`,
        );
      }
    });
  });

  Deno.test(`${format}: finetune-bf16 with no layout (one byte prepended) is still far smaller than the target, by DELTA ops`, async () => {
    await withTempDir(async (dir) => {
      const paths = await writeScenario(dir, format, "finetune-bf16", SIZE, SEED);
      const prefix = new Uint8Array([0]);
      await prepend(paths.base, `${dir}/base`, prefix);
      await prepend(paths.target, `${dir}/target`, prefix);
      assert.equal(await layoutOfFile(`${dir}/target`, modelLayout), null);
      const v2 = await encodeAndApply(`${dir}/base`, `${dir}/target`, `${dir}/patch`);
      const { ops } = await listOps(`${dir}/patch`);
      assert.ok(v2.deltaOps > 0, `DELTA ops: ${describe(ops)}`);
      assert.ok(
        v2.patchSize < v2.targetSize / 5,
        `patch ${v2.patchSize} bytes for a ${v2.targetSize}-byte target; ops ${describe(ops)}`,
      );
    });
  });
}

// ---------------------------------------------------------------------------
// Hand-made patches with every filter

const WIDTHS = [1, 2, 4] as const;
const SHUFFLES = ["none", "bytes", "bits"] as const;
const COMBINES = ["xor", "sub"] as const;

/** An odd length: every width leaves a tail, and bit planes leave whole elements over. */
const RAW = 4099;
/** Bytes copied before the compressed op, so that its output starts at an odd target offset. */
const LEAD = 13;
/** An odd base offset for DELTA ops, so that the base range is not element-aligned. */
const BASE_OFFSET = 1001;
const TAIL = new Uint8Array([0xab, 0xcd, 0xef]);

/** Compresses `data` after `shuffle`, asserting it got smaller (the format requires it). */
function compressed(data: Uint8Array, filter: Filter): Uint8Array {
  const planes = new Uint8Array(data.length);
  shuffle(data, filter, planes);
  const z = zstd(planes);
  assert.ok(z.length < data.length, `${filterName(filter)}: ${z.length} of ${data.length} bytes`);
  return z;
}

/**
 * Applies `patch` to `base` and asserts the output is exactly `target` and the
 * patch's ops are COPY, `kind` with `filter`, LITERAL.
 */
async function assertApplies(
  base: Uint8Array,
  target: Uint8Array,
  patch: Uint8Array,
  kind: "zliteral" | "delta",
  filter: Filter,
): Promise<void> {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, patch);
    const { ops } = await listOps(`${dir}/patch`);
    assert.deepEqual(ops, [
      { kind: "copy", length: LEAD },
      { kind, length: RAW, filter },
      { kind: "literal", length: TAIL.length },
    ]);
    await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
    const out = await Deno.readFile(`${dir}/out`);
    assert.equal(out.length, target.length);
    assert.ok(bytesEqual(out, target), `${kind} ${filterName(filter)}: the output is the target`);
  });
}

for (const width of WIDTHS) {
  for (const shuffleKind of SHUFFLES) {
    for (const combineKind of COMBINES) {
      const filter: Filter = { width, shuffle: shuffleKind, combine: combineKind };
      Deno.test(`a hand-made DELTA with filter ${filterName(filter)} over ${RAW} bytes at an odd base offset applies to exactly the target`, async () => {
        const base = randomBytes(8 * KiB, 40 + width);
        // A nudged copy of a base range: every 7th byte's lowest bit flipped (every lane of
        // every width gets some), so the residue is mostly zeros whatever the filter.
        const from = base.subarray(BASE_OFFSET, BASE_OFFSET + RAW);
        const nudged = from.map((b, j) => (j % 7 === 3 ? b ^ 1 : b));
        const residue = new Uint8Array(RAW);
        combine(nudged, from, filter, residue);
        const z = compressed(residue, filter);
        const target = concat(base.subarray(0, LEAD), nudged, TAIL);
        const patch = v2Patch(
          base,
          target,
          encodeCopy(0, LEAD),
          encodeDeltaHead(BASE_OFFSET, RAW, z.length, filter),
          z,
          encodeLiteralHead(TAIL.length),
          TAIL,
        );
        await assertApplies(base, target, patch, "delta", filter);
      });
    }
  }
}

for (const width of WIDTHS) {
  for (const shuffleKind of SHUFFLES) {
    const filter: Filter = { width, shuffle: shuffleKind, combine: "xor" };
    Deno.test(`a hand-made ZLITERAL with filter ${filterName(filter)} over ${RAW} bytes applies to exactly the target`, async () => {
      const base = randomBytes(8 * KiB, 50 + width);
      // Small values (3 bits in every byte): compressible with or without planes.
      const data = randomBytes(RAW, 60 + width).map((b) => b & 7);
      const z = compressed(data, filter);
      const target = concat(base.subarray(0, LEAD), data, TAIL);
      const patch = v2Patch(
        base,
        target,
        encodeCopy(0, LEAD),
        encodeZLiteralHead(RAW, z.length, filter),
        z,
        encodeLiteralHead(TAIL.length),
        TAIL,
      );
      await assertApplies(base, target, patch, "zliteral", filter);
    });
  }
}
