/**
 * Specification of controlplane/status_cache.ts: when the API's status report
 * is built anew and when a recent one is served again. A fake clock stands in
 * for time; builds take as long as the test says.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  reuseWindowMs,
  STATUS_CACHE_POLICY,
  StatusCache,
  type StatusCachePolicy,
} from "../controlplane/status_cache.ts";

const POLICY: StatusCachePolicy = { minBuildMs: 20, factor: 5, maxAgeMs: 1000 };

/** A cache over a counter whose builds take `buildMs` of the fake clock. */
function counting(buildMs: () => number) {
  let now = 0;
  let builds = 0;
  const cache = new StatusCache<number>(
    () => {
      now += buildMs();
      return Promise.resolve(++builds);
    },
    () => now,
    POLICY,
  );
  return {
    cache,
    advance: (ms: number) => {
      now += ms;
    },
    builds: () => builds,
  };
}

Deno.test("a report cheaper than the threshold to build is never reused: every call builds anew", async () => {
  const c = counting(() => 19);
  assert.equal(await c.cache.get(), 1);
  assert.equal(await c.cache.get(), 2);
  assert.equal(await c.cache.get(), 3);
});

Deno.test("an expensive report is served again for five times its build time, then built anew", async () => {
  const c = counting(() => 40);
  assert.equal(await c.cache.get(), 1);
  c.advance(199);
  assert.equal(await c.cache.get(), 1, "within 5 × 40 ms");
  c.advance(1);
  assert.equal(await c.cache.get(), 2, "200 ms after it was built");
});

Deno.test("no report is reused for longer than the maximum age, however long it took", async () => {
  assert.equal(reuseWindowMs(600, POLICY), 1000);
  assert.equal(reuseWindowMs(100, POLICY), 500);
  assert.equal(reuseWindowMs(19.9, POLICY), 0);
  const c = counting(() => 600);
  await c.cache.get();
  c.advance(999);
  assert.equal(await c.cache.get(), 1);
  c.advance(1);
  assert.equal(await c.cache.get(), 2);
});

Deno.test("invalidating (an operator changed something) makes the next call build anew", async () => {
  const c = counting(() => 100);
  assert.equal(await c.cache.get(), 1);
  c.cache.invalidate();
  assert.equal(await c.cache.get(), 2);
  assert.equal(await c.cache.get(), 2);
});

Deno.test("callers that come while an expensive report is being built share that build; cheap builds are never shared", async () => {
  let now = 0;
  let builds = 0;
  let cost = 100;
  const gates: (() => void)[] = [];
  const cache = new StatusCache<number>(
    () =>
      new Promise((resolve) => {
        const n = ++builds;
        gates.push(() => {
          now += cost;
          resolve(n);
        });
      }),
    () => now,
    POLICY,
  );
  // The first build is expensive: from then on, concurrent callers share one.
  const first = cache.get();
  gates.shift()!();
  assert.equal(await first, 1);
  now += 1000; // its reuse window is over
  const a = cache.get();
  const b = cache.get();
  assert.equal(gates.length, 1, "one build for both callers");
  gates.shift()!();
  assert.deepEqual(await Promise.all([a, b]), [2, 2]);
  // Once builds are cheap again, each caller gets its own.
  now += 1000;
  cost = 1;
  const c = cache.get();
  gates.shift()!();
  assert.equal(await c, 3);
  const d = cache.get();
  const e = cache.get();
  assert.equal(gates.length, 2, "a build each");
  gates.splice(0).forEach((open) => open());
  assert.deepEqual(await Promise.all([d, e]), [4, 5]);
});

Deno.test("the API's policy reuses a report only past 20 ms of building, for ten times that, at most one second", () => {
  assert.deepEqual(STATUS_CACHE_POLICY, { minBuildMs: 20, factor: 10, maxAgeMs: 1000 });
});
