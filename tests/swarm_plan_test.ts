/**
 * The swarm plan (controlplane/swarm_plan.ts): who downloads from whom inside an election — two
 * interleaved binary trees, one per stripe of pieces.
 */

import assert from "node:assert/strict";
import {
  extendPlan,
  MAX_LOOKBACK,
  parentPosition,
  planSwarm,
  sourcePositions,
  SOURCES_PER_MEMBER,
  sourcesOf,
  swarmOrder,
} from "../controlplane/swarm_plan.ts";
import { SWARM_STRIPES } from "../transfer/control_messages.ts";

const SIZES = [1, 2, 3, 7, 8, 63, 64, 500, 2001];

/** Steps from tree position `k` up `stripe`'s tree to the leader. */
function depthOf(k: number, m: number, stripe: number): number {
  let steps = 0;
  for (let p = k; p !== 0; p = parentPosition(p, m, stripe)) {
    steps++;
    assert.ok(steps <= m, `a cycle above ${k} in stripe ${stripe}'s tree of ${m}`);
  }
  return steps;
}

Deno.test("the leader downloads from no member; its list is itself", () => {
  assert.deepEqual(sourcePositions(0, 1), [0]);
  assert.deepEqual(sourcePositions(0, 500), [0]);
});

Deno.test("stripe 0's tree is a heap over the join order, stripe 1's the same heap over the reversed order", () => {
  // m = 6: stripe 0: 1 ← leader, 2 and 3 ← 1, 4 and 5 ← 2, 6 ← 3.
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((k) => parentPosition(k, 6, 0)), [0, 1, 1, 2, 2, 3]);
  // Stripe 1 numbers the members backwards (j = 7 − k): 6 ← leader, 5 and 4 ← 6, 3 and 2 ← 5, 1 ← 4.
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((k) => parentPosition(k, 6, 1)), [4, 5, 5, 6, 6, 0]);
});

Deno.test("a member's sources: its parent in each tree, then the leader", () => {
  // Positions 0 (the leader), 1 and 2.
  assert.deepEqual(sourcePositions(1, 3), [0, 2], "even pieces from the leader, odd from 2");
  assert.deepEqual(sourcePositions(2, 3), [1, 0]);
  assert.deepEqual(sourcePositions(4, 7), [2, 6, 0]);
  assert.deepEqual(sourcePositions(1, 2), [0], "one member: the leader serves both stripes");
});

Deno.test("every member has 1 to 3 distinct sources: its parents in the two trees, and the leader", () => {
  for (const m of SIZES) {
    for (let k = 1; k <= m; k++) {
      const sources = sourcePositions(k, m + 1);
      assert.ok(sources.length >= 1 && sources.length <= SOURCES_PER_MEMBER, `${k}/${m}`);
      assert.ok(sources.includes(0), "the leader among them");
      assert.equal(new Set(sources).size, sources.length, "no source twice");
      assert.ok(!sources.includes(k), "never itself");
      const parents = [0, 1].map((s) => parentPosition(k, m, s));
      if (parents[0] !== parents[1]) assert.deepEqual(sources.slice(0, 2), parents);
      else assert.equal(sources[0], parents[0]);
    }
  }
});

Deno.test("a member passes pieces on in one tree only, to at most two children: it uploads about one blob", () => {
  for (const m of SIZES) {
    const children = [new Array<number>(m + 1).fill(0), new Array<number>(m + 1).fill(0)];
    for (let k = 1; k <= m; k++) {
      for (let s = 0; s < SWARM_STRIPES; s++) children[s][parentPosition(k, m, s)]++;
    }
    for (let k = 1; k <= m; k++) {
      assert.ok(children[0][k] <= 2 && children[1][k] <= 2, `${k}/${m}`);
      assert.ok(children[0][k] === 0 || children[1][k] === 0, `${k}/${m} inner in both trees`);
    }
    // The leader: half the blob to position 1 and half to position m.
    assert.equal(children[0][0], 1);
    assert.equal(children[1][0], 1);
  }
});

Deno.test("both trees are about log2 of the region deep: 14 steps at 10,000 members, where a line needs 10,000", () => {
  for (const m of [...SIZES, 10_000]) {
    const bound = Math.ceil(Math.log2(m + 1));
    let deepest = 0;
    for (let k = 1; k <= m; k++) {
      for (let s = 0; s < SWARM_STRIPES; s++) deepest = Math.max(deepest, depthOf(k, m, s));
    }
    assert.ok(deepest <= bound, `${m}: ${deepest} > ${bound}`);
  }
  assert.equal(Math.ceil(Math.log2(10_001)), 14);
});

/** The order in which a member asks its sources for stripe `s`'s pieces (transfer/control_messages.ts `SWARM_STRIPES`). */
function stripeOrder(sources: readonly number[], s: number): number[] {
  if (sources.length < SWARM_STRIPES) return [...sources];
  return [sources[s], ...sources.slice(SWARM_STRIPES)];
}

Deno.test("a stripe is asked of its ancestors in its tree only: no member waits for pieces that come through itself", () => {
  for (const m of SIZES) {
    for (let k = 1; k <= m; k++) {
      const sources = sourcePositions(k, m + 1);
      for (let s = 0; s < SWARM_STRIPES; s++) {
        const ancestors = new Set<number>();
        for (let p = k; p !== 0;) ancestors.add(p = parentPosition(p, m, s));
        const order = stripeOrder(sources, s);
        assert.ok(order.every((p) => ancestors.has(p)), `${k}/${m} stripe ${s}: ${order}`);
      }
    }
  }
});

Deno.test("the swarm order puts the leader first and keeps the others' join order", () => {
  assert.deepEqual(swarmOrder("c", ["a", "b", "c", "d"]), ["c", "a", "b", "d"]);
  assert.deepEqual(swarmOrder("a", ["a"]), ["a"]);
});

Deno.test("an unusable parent is replaced by its nearest usable ancestor; the leader is always usable", () => {
  const plan = planSwarm("L", ["a", "b", "c", "d", "e", "f"]); // positions 1-6
  assert.deepEqual(sourcesOf("d", plan, () => true), ["b", "f", "L"]);
  // b (d's parent in stripe 0) is offline: its parent a takes its place.
  assert.deepEqual(sourcesOf("d", plan, (id) => id !== "b"), ["a", "f", "L"]);
  // f (d's parent in stripe 1) is offline: f's parent is the leader, which then serves both.
  assert.deepEqual(sourcesOf("d", plan, (id) => id !== "f"), ["b", "L"]);
  assert.deepEqual(sourcesOf("d", plan, () => false), ["L"]);
  assert.deepEqual(sourcesOf("L", plan, () => true), ["L"]);
  assert.equal(sourcesOf("zz", plan, () => true), undefined, "not a member");
});

Deno.test("members heard from later get the next positions; no earlier member's position changes", () => {
  const plan = planSwarm("L", ["a", "b", "c"]);
  const later = extendPlan(plan, ["L", "a", "b", "c", "d", "e"]);
  assert.ok(later !== undefined);
  assert.deepEqual(later.ids, ["L", "a", "b", "c", "d", "e"]);
  assert.deepEqual(
    sourcesOf("e", later, () => true),
    ["b", "L"],
    "m = 5: e (5) ← b (2), and the leader",
  );
  assert.equal(extendPlan(later, ["L", "a", "b", "c", "d", "e"]), later, "nothing new");
  assert.equal(extendPlan(later, ["a", "c", "d", "e"]), undefined, "b left: a new plan");
});

Deno.test("sources computed while the region grew never form a cycle: stripe 0 flows to higher positions, stripe 1 to lower, whatever m", () => {
  for (const m of [1, 2, 5, 64, 1000]) {
    for (let k = 1; k <= m; k++) {
      assert.ok(parentPosition(k, m, 0) < k, `stripe 0, ${k}/${m}`);
      const p = parentPosition(k, m, 1);
      assert.ok(p === 0 || p > k, `stripe 1, ${k}/${m}`);
    }
  }
});

Deno.test("members sent their sources at every size from 1 to 300 still pass each piece on to at most four others", () => {
  // The worst case: each member computed with the m at its own arrival.
  const children = [new Map<number, number>(), new Map<number, number>()];
  for (let k = 1; k <= 300; k++) {
    for (let s = 0; s < SWARM_STRIPES; s++) {
      const p = parentPosition(k, k, s);
      children[s].set(p, (children[s].get(p) ?? 0) + 1);
    }
  }
  for (let k = 1; k <= 300; k++) {
    const total = (children[0].get(k) ?? 0) + (children[1].get(k) ?? 0);
    assert.ok(total <= 4, `${k} passes on ${total} halves`);
  }
});

Deno.test("the search for usable sources up a tree is bounded", () => {
  const ids = Array.from({ length: 100_000 }, (_, i) => `n${i}`);
  const plan = planSwarm("n0", ids);
  for (const id of ["n499", "n99999"]) {
    let asked = 0;
    const sources = sourcesOf(id, plan, () => {
      asked++;
      return false;
    });
    assert.deepEqual(sources, ["n0"]);
    assert.ok(asked <= 2 * MAX_LOOKBACK, `${id}: asked ${asked}`);
  }
});

Deno.test("positions outside the election or the trees are refused", () => {
  assert.throws(() => sourcePositions(3, 3), RangeError);
  assert.throws(() => sourcePositions(-1, 3), RangeError);
  assert.throws(() => sourcePositions(0, 0), RangeError);
  assert.throws(() => parentPosition(0, 5, 0), RangeError);
  assert.throws(() => parentPosition(6, 5, 1), RangeError);
  assert.throws(() => parentPosition(1, 5, 2), RangeError);
});
