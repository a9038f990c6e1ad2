/**
 * The swarm plan (controlplane/swarm_plan.ts): who downloads from whom inside an election.
 */

import assert from "node:assert/strict";
import {
  MAX_LOOKBACK,
  sourcePositions,
  SOURCES_PER_MEMBER,
  sourcesOf,
  swarmOrder,
} from "../controlplane/swarm_plan.ts";

Deno.test("the leader downloads from no member; its list is itself", () => {
  assert.deepEqual(sourcePositions(0, 1), [0]);
  assert.deepEqual(sourcePositions(0, 500), [0]);
});

Deno.test("a member downloads from its three predecessors, the nearest first", () => {
  assert.deepEqual(sourcePositions(1, 10), [0], "the first follower: the leader only");
  assert.deepEqual(sourcePositions(2, 10), [1, 0]);
  assert.deepEqual(sourcePositions(3, 10), [2, 1, 0]);
  assert.deepEqual(sourcePositions(9, 10), [8, 7, 6]);
});

Deno.test("every member but the leader gets 1 to 3 sources, all ahead of it in the line", () => {
  for (const count of [1, 2, 3, 8, 64, 500]) {
    for (let k = 1; k < count; k++) {
      const sources = sourcePositions(k, count);
      assert.ok(sources.length >= 1 && sources.length <= SOURCES_PER_MEMBER, `${k}/${count}`);
      assert.ok(sources.every((s) => s < k), `${k}'s sources are its predecessors`);
      assert.equal(new Set(sources).size, sources.length, "no source twice");
    }
  }
});

Deno.test("no member is named as a source by more than 3 others, the leader by members 1-3 only", () => {
  for (const count of [8, 64, 500, 2000]) {
    const namedBy = new Array<number>(count).fill(0);
    for (let k = 1; k < count; k++) for (const s of sourcePositions(k, count)) namedBy[s]++;
    assert.ok(Math.max(...namedBy) <= 3, `max ${Math.max(...namedBy)} of ${count}`);
    assert.equal(namedBy[0], Math.min(3, count - 1));
  }
});

Deno.test("positions outside the election are refused", () => {
  assert.throws(() => sourcePositions(3, 3), RangeError);
  assert.throws(() => sourcePositions(-1, 3), RangeError);
  assert.throws(() => sourcePositions(0, 0), RangeError);
});

Deno.test("the swarm order puts the leader first and keeps the others' join order", () => {
  assert.deepEqual(swarmOrder("c", ["a", "b", "c", "d"]), ["c", "a", "b", "d"]);
  assert.deepEqual(swarmOrder("a", ["a"]), ["a"]);
});

Deno.test("unusable predecessors are passed over for the next ones back, and the leader fills the room left", () => {
  const order = ["L", "a", "b", "c", "d", "e", "f"];
  assert.deepEqual(sourcesOf("f", order, () => true), ["e", "d", "c"]);
  assert.deepEqual(sourcesOf("f", order, (id) => id !== "e"), ["d", "c", "b"]);
  assert.deepEqual(sourcesOf("b", order, () => true), ["a", "L"]);
  assert.deepEqual(sourcesOf("f", order, () => false), ["L"]);
  assert.deepEqual(sourcesOf("L", order, () => true), ["L"]);
  assert.equal(sourcesOf("zz", order, () => true), undefined, "not a member");
});

Deno.test("the look back for usable predecessors is bounded", () => {
  const order = Array.from({ length: 1000 }, (_, i) => `n${i}`);
  let asked = 0;
  const sources = sourcesOf("n999", order, () => {
    asked++;
    return false;
  });
  assert.deepEqual(sources, ["n0"]);
  assert.ok(asked <= MAX_LOOKBACK, `asked ${asked}`);
});
