/**
 * Runs of target bytes equal to the base (codec/equal_runs.ts): `RunScanner`
 * finds the same maximal runs however a block is cut into windows,
 * `chooseRuns` picks non-overlapping runs to copy (and drops scattered short
 * ones), and `shiftCandidates` finds how far moved bytes went.
 */

import assert from "node:assert/strict";
import {
  chooseRuns,
  MAX_SHIFTS,
  type Run,
  RunScanner,
  shiftCandidates,
} from "../codec/equal_runs.ts";
import { concat, randomBytes } from "./helpers.ts";

function run(start: number, end: number, delta: number): Run {
  return { start, end, delta };
}

// ---------------------------------------------------------------------------
// RunScanner

/** Maximal runs where target[i] === base[i] (i < base.length), at least `minRun` long. */
function referenceRuns(target: Uint8Array, base: Uint8Array, delta: number, minRun: number): Run[] {
  const runs: Run[] = [];
  let open = -1;
  for (let i = 0; i <= target.length; i++) {
    const equal = i < target.length && i < base.length && target[i] === base[i];
    if (equal && open < 0) open = i;
    if (!equal && open >= 0) {
      if (i - open >= minRun) runs.push({ start: open, end: i, delta });
      open = -1;
    }
  }
  return runs;
}

/** Scans `target` against `base` in windows cut at `cuts` (sorted positions). */
function scanInWindows(
  target: Uint8Array,
  base: Uint8Array,
  cuts: number[],
  delta: number,
  minRun: number,
): Run[] {
  const scanner = new RunScanner(delta, minRun);
  const edges = [0, ...cuts, target.length];
  for (let w = 0; w + 1 < edges.length; w++) {
    const from = edges[w];
    const to = edges[w + 1];
    scanner.scan(target.subarray(from, to), base.subarray(Math.min(from, base.length), to));
  }
  return scanner.finish();
}

/** A target and a base equal but for bytes changed at gaps of every length from 1 to 80. */
function mostlyEqual(): { target: Uint8Array; base: Uint8Array } {
  const target = randomBytes(6000, 11);
  const base = target.slice();
  let at = 0;
  for (let gap = 1; at < base.length; gap = gap % 80 + 1) {
    base[at] ^= 0x5a;
    at += gap + 1;
  }
  return { target, base };
}

function everyCutsOf(step: number, length: number): number[] {
  const cuts = [];
  for (let at = step; at < length; at += step) cuts.push(at);
  return cuts;
}

Deno.test("RunScanner finds the same runs whatever the window split, as one scan of the whole block", () => {
  const { target, base } = mostlyEqual();
  const minRun = 24;
  const expected = referenceRuns(target, base, 5, minRun);
  assert.ok(expected.length > 20, "the data holds runs to find");
  assert.deepEqual(scanInWindows(target, base, [], 5, minRun), expected);
  const noise = randomBytes(64, 12);
  const randomCuts = [...new Set([...noise].map((b, i) => i * 90 + b))].sort((a, b) => a - b);
  const splits = [everyCutsOf(1, 6000), everyCutsOf(7, 6000), everyCutsOf(64, 6000), [3000]];
  for (const cuts of [...splits, randomCuts]) {
    assert.deepEqual(scanInWindows(target, base, cuts, 5, minRun), expected, `${cuts.length} cuts`);
  }
});

Deno.test("RunScanner: a run spanning windows is one run, positions counted from the block's start", () => {
  const target = new Uint8Array(100).fill(7);
  const base = target.slice();
  base[10] = 0;
  const scanner = new RunScanner(-3, 8);
  scanner.scan(target.subarray(0, 30), base.subarray(0, 30));
  scanner.scan(target.subarray(30, 31), base.subarray(30, 31));
  scanner.scan(target.subarray(31, 100), base.subarray(31, 100));
  assert.deepEqual(scanner.finish(), [
    { start: 0, end: 10, delta: -3 },
    { start: 11, end: 100, delta: -3 },
  ]);
});

Deno.test("RunScanner counts target bytes past the end of the base as unequal", () => {
  const target = randomBytes(100, 21);
  // One call: the base ends at 60.
  const one = new RunScanner(0, 8);
  one.scan(target, target.subarray(0, 60));
  assert.deepEqual(one.finish(), [{ start: 0, end: 60, delta: 0 }]);
  // The base window of the first call is short: the run ends there and a new one starts later.
  const two = new RunScanner(0, 8);
  two.scan(target.subarray(0, 50), target.subarray(0, 40));
  two.scan(target.subarray(50, 100), target.subarray(50, 100));
  assert.deepEqual(two.finish(), [{ start: 0, end: 40, delta: 0 }, {
    start: 50,
    end: 100,
    delta: 0,
  }]);
  // No base at all: nothing is equal, but positions still advance.
  const three = new RunScanner(0, 8);
  three.scan(target.subarray(0, 30), new Uint8Array(0));
  three.scan(target.subarray(30, 100), target.subarray(30, 100));
  assert.deepEqual(three.finish(), [{ start: 30, end: 100, delta: 0 }]);
});

Deno.test("RunScanner drops runs shorter than minRun and keeps those of exactly minRun", () => {
  // Equal runs of 7, 8 and 9 bytes separated by one unequal byte.
  const target = new Uint8Array(7 + 1 + 8 + 1 + 9);
  const base = target.slice();
  base[7] = 1;
  base[16] = 1;
  const scanner = new RunScanner(0, 8);
  scanner.scan(target, base);
  assert.deepEqual(scanner.finish(), [run(8, 16, 0), run(17, 26, 0)]);
});

Deno.test("RunScanner leaves a run open at the end of the last window until finish closes it", () => {
  const target = randomBytes(50, 31);
  const base = target.slice();
  base[0] ^= 1;
  const scanner = new RunScanner(4, 8);
  scanner.scan(target.subarray(0, 25), base.subarray(0, 25));
  scanner.scan(target.subarray(25), base.subarray(25));
  assert.deepEqual(scanner.runs, [], "still open");
  assert.deepEqual(scanner.finish(), [{ start: 1, end: 50, delta: 4 }]);
  assert.deepEqual(scanner.finish(), [{ start: 1, end: 50, delta: 4 }], "finish twice: same runs");
});

// ---------------------------------------------------------------------------
// chooseRuns

const OPTIONS = { minRun: 24, longRun: 256, maxShort: 8 };

Deno.test("chooseRuns returns non-overlapping runs sorted by start, unchanged", () => {
  const runs = [run(500, 600, 3), run(0, 100, 1), run(200, 300, 2)];
  assert.deepEqual(chooseRuns(runs, OPTIONS), [run(0, 100, 1), run(200, 300, 2), run(500, 600, 3)]);
  assert.deepEqual(chooseRuns([], OPTIONS), []);
});

Deno.test("chooseRuns trims a run overlapping the previous one to start at its end", () => {
  assert.deepEqual(chooseRuns([run(0, 100, 1), run(50, 200, 2)], OPTIONS), [
    run(0, 100, 1),
    run(100, 200, 2),
  ]);
  // Runs found at several deltas over the same bytes: the longer is taken first.
  assert.deepEqual(chooseRuns([run(0, 60, 1), run(0, 100, 2)], OPTIONS), [run(0, 100, 2)]);
});

Deno.test("chooseRuns drops a run that trimming leaves shorter than minRun", () => {
  assert.deepEqual(chooseRuns([run(0, 100, 1), run(90, 110, 2), run(80, 120, 3)], OPTIONS), [
    run(0, 100, 1),
  ]);
  // One contained in another.
  assert.deepEqual(chooseRuns([run(0, 100, 1), run(10, 90, 2)], OPTIONS), [run(0, 100, 1)]);
});

Deno.test("chooseRuns: a much longer run starting inside a shorter one wins the overlap", () => {
  // 350 bytes against 100: the earlier run is cut where the longer one starts.
  assert.deepEqual(chooseRuns([run(0, 100, 1), run(50, 400, 2)], OPTIONS), [
    run(0, 50, 1),
    run(50, 400, 2),
  ]);
  // If that leaves the earlier run shorter than minRun, it is dropped.
  assert.deepEqual(chooseRuns([run(0, 100, 1), run(10, 400, 2)], OPTIONS), [run(10, 400, 2)]);
});

Deno.test("chooseRuns keeps only runs of at least longRun when there are more than maxShort short ones", () => {
  // Nine scattered 30-byte runs (a fine-tune's leftovers) and one long run.
  const short = Array.from({ length: 9 }, (_, i) => run(i * 100, i * 100 + 30, 0));
  const long = run(2000, 2000 + 256, 0);
  assert.deepEqual(chooseRuns([...short, long], OPTIONS), [long]);
  assert.deepEqual(chooseRuns(short, OPTIONS), []);
});

Deno.test("chooseRuns keeps short runs (at least minRun) when there are at most maxShort of them", () => {
  const short = Array.from({ length: 8 }, (_, i) => run(i * 100, i * 100 + 30, 0));
  const long = run(2000, 2000 + 256, 0);
  assert.deepEqual(chooseRuns([long, ...short], OPTIONS), [...short, long]);
  // Shorter than minRun: never kept.
  const tooShort = run(5000, 5000 + 23, 0);
  assert.deepEqual(chooseRuns([tooShort, long, short[0]], OPTIONS), [short[0], long]);
});

Deno.test({
  name:
    "chooseRuns never returns overlapping runs, even when a much longer run starts inside two earlier ones",
  fn() {
    const chosen = chooseRuns([run(0, 100, 1), run(40, 130, 2), run(50, 300, 3)], OPTIONS);
    for (let i = 1; i < chosen.length; i++) {
      assert.ok(chosen[i - 1].end <= chosen[i].start, JSON.stringify(chosen));
    }
  },
});

// ---------------------------------------------------------------------------
// shiftCandidates

const BASE = randomBytes(4096, 41);

Deno.test("shiftCandidates finds a block moved by +7 (7 bytes cut out before it)", () => {
  // target[i] = base[i] before 1000, base[i + 7] after.
  const target = concat(BASE.subarray(0, 1000), BASE.subarray(1007));
  assert.deepEqual(shiftCandidates(target, BASE, 16, 4), [7, 0]);
});

Deno.test("shiftCandidates finds a block moved by −100 (100 bytes inserted before it)", () => {
  const target = concat(BASE.subarray(0, 500), randomBytes(100, 42), BASE.subarray(500, 3000));
  assert.deepEqual(shiftCandidates(target, BASE, 16, 4), [-100, 0]);
  // Everything moved: one shift.
  assert.deepEqual(shiftCandidates(concat(randomBytes(100, 43), BASE), BASE, 24, 4), [-100]);
});

Deno.test("shiftCandidates puts the most frequent shift first", () => {
  // 3000 bytes at shift 0 after 1000 at shift +7: now 0 is the more frequent.
  const target = concat(BASE.subarray(7, 1007), BASE.subarray(1000, 4000));
  assert.deepEqual(shiftCandidates(target, BASE, 16, 4), [0, 7]);
});

Deno.test("shiftCandidates returns [] when the target or the base is shorter than k", () => {
  assert.deepEqual(shiftCandidates(BASE.subarray(0, 15), BASE, 16, 4), []);
  assert.deepEqual(shiftCandidates(BASE, BASE.subarray(0, 15), 16, 4), []);
  assert.deepEqual(shiftCandidates(new Uint8Array(0), new Uint8Array(0), 16, 4), []);
  // Exactly k is enough.
  assert.deepEqual(shiftCandidates(BASE.subarray(100, 116), BASE.subarray(100, 116), 16, 4), [0]);
});

Deno.test("shiftCandidates returns at most max shifts, the most frequent ones", () => {
  // Pieces at four shifts, 1600, 1200, 800 and 400 bytes of each.
  const target = concat(
    BASE.subarray(10, 1610), // shift +10
    BASE.subarray(1600 - 300, 2800 - 300), // shift −300
    BASE.subarray(2800 + 5, 3600 + 5), // shift +5
    BASE.subarray(3600 - 3600, 4000 - 3600), // shift −3600
  );
  assert.deepEqual(shiftCandidates(target, BASE, 16, 4), [10, -300, 5, -3600]);
  assert.deepEqual(shiftCandidates(target, BASE, 16, 2), [10, -300]);
  assert.deepEqual(shiftCandidates(target, BASE, 16, 1), [10]);
  assert.deepEqual(shiftCandidates(target, BASE, 16, 0), []);
});

Deno.test("shiftCandidates finds nothing between unrelated random bytes", () => {
  assert.deepEqual(shiftCandidates(randomBytes(2000, 44), BASE, 16, 4), []);
});

Deno.test("shiftCandidates looks a piece that repeats in the target up once, at its first place", () => {
  // 4 equal zero pieces of 16 against 64 zero bytes: the first piece (at 0) is looked up, found at 0..48.
  const shifts = shiftCandidates(new Uint8Array(64), new Uint8Array(64), 16, 100);
  assert.equal(shifts[0], 0);
  assert.deepEqual(shifts.toSorted((a, b) => a - b), Array.from({ length: 49 }, (_, i) => i));
});

Deno.test("shiftCandidates on a MiB of zeros against a MiB of zeros looks up one piece, not 65,536 (was quadratic: 17 s and 254 MB on a real .tflite)", () => {
  const zeros = new Uint8Array(1 << 20);
  const shifts = shiftCandidates(zeros, zeros, 16, 4);
  assert.deepEqual(shifts, [0, 1, 2, 3], "each shift found once; the smallest first");
});

Deno.test("shiftCandidates counts at most MAX_SHIFTS distinct shifts", () => {
  // One 16-byte piece of zeros, found at every position of a base of zeros
  // longer than MAX_SHIFTS: shifts past the bound are not counted.
  const shifts = shiftCandidates(
    new Uint8Array(16),
    new Uint8Array(MAX_SHIFTS + 1000),
    16,
    1 << 20,
  );
  assert.equal(shifts.length, MAX_SHIFTS);
});
