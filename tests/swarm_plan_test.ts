/**
 * The swarm plan (controlplane/swarm_plan.ts): who downloads from whom inside an election.
 */

import assert from "node:assert/strict";
import {
  DEFAULT_FANOUT,
  sourcePositions,
  SOURCES_PER_MEMBER,
  sourcesOf,
  swarmOrder,
} from "../controlplane/swarm_plan.ts";

Deno.test("the leader downloads from no member; its list is itself", () => {
  assert.deepEqual(sourcePositions(0, 1), [0]);
  assert.deepEqual(sourcePositions(0, 500), [0]);
});

Deno.test("a member's first source is its parent in the tree, then its two neighbours", () => {
  assert.deepEqual(sourcePositions(1, 10, 4), [0, 2], "the first follower: the leader, then 2");
  assert.deepEqual(sourcePositions(2, 10, 4), [0, 1, 3]);
  assert.deepEqual(sourcePositions(5, 10, 4), [1, 4, 6], "5's parent is 1");
  assert.deepEqual(sourcePositions(9, 10, 4), [2, 8], "the last member has no right neighbour");
  assert.deepEqual(sourcePositions(1, 2, 4), [0], "two members: the follower has only the leader");
});

Deno.test("every member but the leader gets 1 to 3 sources, none of them itself", () => {
  for (const count of [1, 2, 3, 8, 64, 500]) {
    for (let k = 1; k < count; k++) {
      const sources = sourcePositions(k, count);
      assert.ok(sources.length >= 1 && sources.length <= SOURCES_PER_MEMBER, `${k}/${count}`);
      assert.ok(!sources.includes(k), `${k} is not its own source`);
      assert.ok(sources.every((s) => s >= 0 && s < count));
      assert.equal(new Set(sources).size, sources.length, "no source twice");
    }
  }
});

Deno.test("no member is named as a source by more than fanout + 2 others, the leader by fanout + 1", () => {
  for (const count of [8, 64, 500, 2000]) {
    const namedBy = new Array<number>(count).fill(0);
    for (let k = 1; k < count; k++) for (const s of sourcePositions(k, count)) namedBy[s]++;
    assert.ok(namedBy[0] <= DEFAULT_FANOUT + 1, `leader named by ${namedBy[0]}`);
    assert.ok(
      Math.max(...namedBy) <= DEFAULT_FANOUT + 2,
      `max ${Math.max(...namedBy)} of ${count}`,
    );
  }
});

Deno.test("every member reaches the leader by first sources in about log(N) steps", () => {
  for (const count of [8, 64, 500, 10_000]) {
    let deepest = 0;
    for (let k = 1; k < count; k++) {
      let steps = 0;
      for (let at = k; at !== 0; at = sourcePositions(at, count)[0]) steps++;
      deepest = Math.max(deepest, steps);
    }
    assert.ok(deepest <= Math.ceil(Math.log(count) / Math.log(DEFAULT_FANOUT)) + 1, `${deepest}`);
  }
});

Deno.test("positions outside the election are refused", () => {
  assert.throws(() => sourcePositions(3, 3), RangeError);
  assert.throws(() => sourcePositions(-1, 3), RangeError);
  assert.throws(() => sourcePositions(0, 0), RangeError);
  assert.throws(() => sourcePositions(1, 3, 0), RangeError);
});

Deno.test("the swarm order puts the leader first and keeps the others' join order", () => {
  assert.deepEqual(swarmOrder("c", ["a", "b", "c", "d"]), ["c", "a", "b", "d"]);
  assert.deepEqual(swarmOrder("a", ["a"]), ["a"]);
});

Deno.test("sources that cannot serve are left out, and the leader stands in when none is left", () => {
  const order = ["L", "a", "b", "c", "d", "e", "f"];
  assert.deepEqual(
    sourcesOf("f", order, () => true),
    ["a", "e"],
    "f is 6: parent ⌊5/4⌋ = 1, then 5",
  );
  assert.deepEqual(sourcesOf("f", order, (id) => id !== "a"), ["e"]);
  assert.deepEqual(sourcesOf("f", order, () => false), ["L"]);
  assert.equal(sourcesOf("zz", order, () => true), undefined, "not a member");
});
