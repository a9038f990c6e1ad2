/**
 * The rollout policy (controlplane/rollout_policy.ts), as a specification:
 * which agents each strategy admits, when a batch's failures halt a rollout,
 * when it is done, what each agent is to do, which rollouts a new one
 * supersedes, what pause/resume/abort may do in which state, whether a failed
 * update is offered again, what a rollback goes back to, and which progress
 * is news. No sockets, no clock.
 */

import assert from "node:assert/strict";
import { ConflictError, NotFoundError } from "../kernel/errors.ts";
import type { AgentProgress } from "../controlplane/agent_progress.ts";
import {
  admit,
  emptySelection,
  haltReason,
  isDone,
  isFinished,
  isNews,
  retryDelay,
  rollbackVersion,
  scopeOf,
  scopesOverlap,
  stepFor,
  superseded,
  transition,
  TRANSITIONS,
} from "../controlplane/rollout_policy.ts";
import {
  type AgentRecord,
  DEFAULT_PLAN,
  type RolloutPlan,
  type RolloutRecord,
  type RolloutState,
} from "../controlplane/state_store.ts";

const OLD = "a".repeat(64);
const NEW = "b".repeat(64);
const TIMEOUT = 10_000;
const OFFLINE_AFTER = 120_000;

function rollout(
  plan: Partial<RolloutPlan> = {},
  extra: Partial<RolloutRecord> = {},
): RolloutRecord {
  return {
    ...DEFAULT_PLAN,
    ...plan,
    id: 1,
    model: "resnet",
    version: "v2",
    digest: NEW,
    region: null,
    state: "running",
    created: 0,
    finished: null,
    reason: "",
    ...extra,
  };
}

function agent(nodeId: string, runs: string | null = OLD, extra: Partial<AgentRecord> = {}) {
  return {
    nodeId,
    region: "eu",
    host: "127.0.0.2",
    udpPort: 7400,
    p2pPort: 7401,
    active: runs === null ? {} : { resnet: runs },
    held: [],
    served: 0,
    startedAt: 0,
    lastSeen: 1000,
    ...extra,
  } satisfies AgentRecord;
}

/** Agents d0..d(n-1); those listed in `updated` run the target. */
function fleet(n: number, updated: number[] = []): AgentRecord[] {
  return Array.from({ length: n }, (_, i) => agent(`d${i}`, updated.includes(i) ? NEW : OLD));
}

const ids = (agents: readonly AgentRecord[]) => agents.map((a) => a.nodeId);
const failed = (reason = "health check failed", poisoned = false): AgentProgress => ({
  kind: "failed",
  reason,
  poisoned,
});

// --- admission ---

Deno.test("strategy all admits the whole scope at once, as one batch, ordered by node id", () => {
  const scope = [agent("c"), agent("a"), agent("b")];
  const { admitted, batch } = admit(rollout(), scope);
  assert.deepEqual(ids(admitted), ["a", "b", "c"]);
  assert.deepEqual(ids(batch), ["a", "b", "c"]);
});

Deno.test("a canary count admits that many agents first, and everyone once they all run the target", () => {
  const plan = { strategy: "canary", canary: 2 } as const;
  const first = admit(rollout(plan), fleet(5));
  assert.deepEqual(ids(first.admitted), ["d0", "d1"]);
  assert.deepEqual(ids(first.batch), ["d0", "d1"]);
  const oneDone = admit(rollout(plan), fleet(5, [0]));
  assert.deepEqual(ids(oneDone.admitted), ["d0", "d1"], "one canary done is not enough");
  const canariesDone = admit(rollout(plan), fleet(5, [0, 1]));
  assert.deepEqual(ids(canariesDone.admitted), ["d0", "d1", "d2", "d3", "d4"]);
  assert.deepEqual(ids(canariesDone.batch), ["d2", "d3", "d4"], "the rest is the next batch");
});

Deno.test("a canary count larger than the scope admits the whole scope", () => {
  const { admitted } = admit(rollout({ strategy: "canary", canary: 9 }), fleet(3));
  assert.deepEqual(ids(admitted), ["d0", "d1", "d2"]);
});

Deno.test("a canary percentage is of the scope, rounded up, and at least one agent", () => {
  const tenPercent = { strategy: "canary", canary: 10, canaryPercent: true } as const;
  assert.equal(admit(rollout(tenPercent), fleet(25)).admitted.length, 3, "2.5 rounds up to 3");
  assert.equal(admit(rollout(tenPercent), fleet(20)).admitted.length, 2);
  const onePercent = { strategy: "canary", canary: 1, canaryPercent: true } as const;
  assert.equal(admit(rollout(onePercent), fleet(5)).admitted.length, 1, "never zero");
});

Deno.test("rolling admits one batch at a time; the next once every agent of the current one runs the target", () => {
  const plan = { strategy: "rolling", batch: 2 } as const;
  const first = admit(rollout(plan), fleet(5));
  assert.deepEqual(ids(first.admitted), ["d0", "d1"]);
  assert.deepEqual(ids(first.batch), ["d0", "d1"]);
  const half = admit(rollout(plan), fleet(5, [0]));
  assert.deepEqual(ids(half.admitted), ["d0", "d1"], "a batch half done holds the next");
  const second = admit(rollout(plan), fleet(5, [0, 1]));
  assert.deepEqual(ids(second.admitted), ["d0", "d1", "d2", "d3"]);
  assert.deepEqual(ids(second.batch), ["d2", "d3"]);
  const last = admit(rollout(plan), fleet(5, [0, 1, 2, 3]));
  assert.deepEqual(ids(last.admitted), ["d0", "d1", "d2", "d3", "d4"]);
  assert.deepEqual(ids(last.batch), ["d4"], "the last batch may be short");
});

Deno.test("an empty scope admits no one", () => {
  for (const strategy of ["all", "canary", "rolling"] as const) {
    const { admitted, batch } = admit(rollout({ strategy }), []);
    assert.deepEqual([admitted, batch], [[], []], strategy);
  }
});

// --- halting ---

Deno.test("a rollout halts when more than maxFailures of the current batch failed, naming them", () => {
  const batch = fleet(5);
  const progress = new Map<string, AgentProgress>([["d1", failed()], ["d3", failed()]]);
  const reason = haltReason(rollout({ maxFailures: 0.2 }), batch, (id) => progress.get(id));
  assert.equal(
    reason,
    "2 of 5 in the current batch failed (d1, d3); over the 20% limit",
  );
});

Deno.test("failures at exactly the threshold do not halt a rollout", () => {
  const progress = new Map<string, AgentProgress>([["d1", failed()]]);
  assert.equal(
    haltReason(rollout({ maxFailures: 0.2 }), fleet(5), (id) => progress.get(id)),
    undefined,
  );
  assert.equal(
    haltReason(rollout({ maxFailures: 1 }), fleet(1), () => failed()),
    undefined,
    "100% never halts",
  );
});

Deno.test("an agent that runs the target does not count as failed, whatever it reported before", () => {
  const progress = (): AgentProgress => failed();
  assert.equal(haltReason(rollout({ maxFailures: 0 }), fleet(2, [0, 1]), progress), undefined);
  assert.match(haltReason(rollout({ maxFailures: 0 }), fleet(2, [0]), progress)!, /1 of 2/);
});

Deno.test("progress other than failed never halts a rollout, and an empty batch never does", () => {
  const offline: AgentProgress = { kind: "offline", excluded: false };
  assert.equal(haltReason(rollout({ maxFailures: 0 }), fleet(3), () => offline), undefined);
  assert.equal(haltReason(rollout({ maxFailures: 0 }), [], () => failed()), undefined);
});

// --- done ---

Deno.test("a rollout is done when every agent in its scope runs the target, and never with an empty scope", () => {
  assert.equal(isDone(rollout(), fleet(3, [0, 1, 2])), true);
  assert.equal(isDone(rollout(), fleet(3, [0, 1])), false);
  assert.equal(isDone(rollout(), []), false);
});

Deno.test("an agent offline longer than --offline-after does not hold a rollout: it can be done without it", () => {
  const [a, b, c] = fleet(3, [0, 1]);
  const gone = { ...c, lastSeen: 0 };
  const scope = scopeOf(rollout(), [a, b, gone], OFFLINE_AFTER + 1, OFFLINE_AFTER);
  assert.deepEqual(ids(scope.live), ["d0", "d1"]);
  assert.deepEqual(ids(scope.gone), ["d2"]);
  assert.equal(isDone(rollout(), scope.live, scope.gone), true);
  // At the limit it still holds the rollout.
  const held = scopeOf(rollout(), [a, b, gone], OFFLINE_AFTER, OFFLINE_AFTER);
  assert.deepEqual(ids(held.live), ["d0", "d1", "d2"]);
  assert.equal(isDone(rollout(), held.live, held.gone), false);
});

Deno.test("an agent that returns is back in the scope and is offered the rollout again", () => {
  const [a, c] = fleet(2, [0]);
  const away = scopeOf(rollout(), [a, { ...c, lastSeen: 0 }], OFFLINE_AFTER + 1, OFFLINE_AFTER);
  assert.deepEqual(ids(away.gone), ["d1"]);
  const back = { ...c, lastSeen: OFFLINE_AFTER + 5 };
  const returned = scopeOf(rollout(), [a, back], OFFLINE_AFTER + 5, OFFLINE_AFTER);
  assert.deepEqual([ids(returned.live), ids(returned.gone)], [["d0", "d1"], []]);
  assert.equal(isDone(rollout(), returned.live, returned.gone), false);
  assert.equal(stepFor(rollout(), back, true, OFFLINE_AFTER + 5, TIMEOUT).kind, "join");
});

Deno.test("agents offline too long leave admission and batches: a rolling rollout goes on to the next batch", () => {
  const [a, b, c] = fleet(3, [0]);
  const r = rollout({ strategy: "rolling", batch: 2 });
  // d1 is gone: the first batch is d0 and d2.
  const scope = scopeOf(r, [a, { ...b, lastSeen: 0 }, c], OFFLINE_AFTER + 1, OFFLINE_AFTER);
  assert.deepEqual(ids(admit(r, scope.live).batch), ["d0", "d2"]);
});

Deno.test("a rollout is not done when every agent of its scope is gone and none runs the target", () => {
  const gone = fleet(2).map((a) => ({ ...a, lastSeen: 0 }));
  const scope = scopeOf(rollout(), gone, OFFLINE_AFTER + 1, OFFLINE_AFTER);
  assert.deepEqual([scope.live, ids(scope.gone)], [[], ["d0", "d1"]]);
  assert.equal(isDone(rollout(), scope.live, scope.gone), false);
  const oneRan = [{ ...gone[0], active: { resnet: NEW } }, gone[1]];
  assert.equal(isDone(rollout(), [], oneRan), true, "one ran it before it went away");
});

Deno.test("the scope leaves out agents of other regions, offline or not", () => {
  const us = agent("u0", OLD, { region: "us" });
  const scope = scopeOf(rollout({}, { region: "eu" }), [agent("e0"), us], 1000, OFFLINE_AFTER);
  assert.deepEqual([ids(scope.live), scope.gone], [["e0"], []]);
});

// --- empty selections ---

Deno.test("a rollout to a region with no device, or to an empty fleet, is refused, naming the region", () => {
  const agents = [agent("e0"), agent("u0", OLD, { region: "us" })];
  assert.equal(emptySelection("eu", agents), undefined);
  assert.equal(emptySelection(null, agents), undefined);
  assert.equal(
    emptySelection("asia", agents),
    'no device in region "asia" (devices are in: eu, us); nothing was created',
  );
  assert.match(
    emptySelection("asia", [])!,
    /no device in region "asia" \(no device is registered\)/,
  );
  assert.match(emptySelection(null, [])!, /no device is registered/);
  const offline = agent("e1", OLD, { lastSeen: 0 });
  assert.equal(emptySelection("eu", [offline]), undefined, "an offline device counts");
});

// --- each agent's step ---

Deno.test("an agent is active when it runs the target, waiting when not admitted, offline when silent", () => {
  const r = rollout();
  assert.deepEqual(stepFor(r, agent("a", NEW), false, 1000, TIMEOUT), { kind: "active" });
  assert.deepEqual(stepFor(r, agent("a"), false, 1000, TIMEOUT), { kind: "waiting" });
  assert.deepEqual(stepFor(r, agent("a"), true, 1000 + TIMEOUT + 1, TIMEOUT), {
    kind: "offline",
  });
});

Deno.test("an admitted online agent joins the election of its region and base: the patch from what it runs", () => {
  const r = rollout();
  assert.deepEqual(stepFor(r, agent("a"), true, 1000 + TIMEOUT, TIMEOUT), {
    kind: "join",
    key: `eu|${OLD}`,
    base: OLD,
  });
  assert.deepEqual(stepFor(r, agent("a", null), true, 1000, TIMEOUT), {
    kind: "join",
    key: "eu|none",
    base: null,
  }, "nothing installed: the whole file");
  assert.deepEqual(stepFor(r, agent("a", OLD, { held: [NEW] }), true, 1000, TIMEOUT), {
    kind: "join",
    key: "eu|held",
    base: null,
  }, "it still holds the target: it switches locally");
});

// --- superseding ---

Deno.test("a new rollout supersedes every running, paused or halted rollout of the same model", () => {
  const newer = rollout({}, { id: 9 });
  const others = (["running", "paused", "halted", "aborted", "superseded", "done"] as const).map((
    state,
    i,
  ) => rollout({}, { id: i + 1, state }));
  const otherModel = rollout({}, { id: 7, model: "bert" });
  assert.deepEqual(
    superseded(newer, [...others, otherModel, newer]).map((r) => r.state),
    ["running", "paused", "halted"],
  );
});

Deno.test("rollouts of one model in different regions run side by side; a fleet-wide one overlaps every region", () => {
  const eu = rollout({}, { id: 1, region: "eu" });
  const us = rollout({}, { id: 2, region: "us" });
  const everywhere = rollout({}, { id: 3, region: null });
  assert.deepEqual(superseded(rollout({}, { id: 9, region: "us" }), [eu, us]).map((r) => r.id), [
    2,
  ]);
  assert.deepEqual(superseded(rollout({}, { id: 9, region: "asia" }), [eu, us]), []);
  assert.deepEqual(superseded(rollout({}, { id: 9, region: null }), [eu, us]).map((r) => r.id), [
    1,
    2,
  ]);
  assert.deepEqual(
    superseded(rollout({}, { id: 9, region: "eu" }), [everywhere, us]).map((r) => r.id),
    [3],
    "a region's rollout supersedes a fleet-wide one",
  );
  assert.equal(scopesOverlap(eu, us), false);
  assert.equal(scopesOverlap(eu, eu), true);
  assert.equal(scopesOverlap(everywhere, us), true);
});

// --- operator transitions ---

Deno.test("pause, resume and abort follow the transition table; anything else is a conflict", () => {
  const states: RolloutState[] = ["running", "paused", "halted", "aborted", "superseded", "done"];
  const table: Record<string, (RolloutState | "conflict")[]> = {
    pause: ["paused", "conflict", "conflict", "conflict", "conflict", "conflict"],
    resume: ["conflict", "running", "running", "conflict", "conflict", "conflict"],
    abort: ["aborted", "aborted", "aborted", "conflict", "conflict", "conflict"],
  };
  for (const action of ["pause", "resume", "abort"] as const) {
    const got = states.map((s) => {
      try {
        return transition(1, s, action).state;
      } catch (err) {
        assert.ok(err instanceof ConflictError);
        assert.equal(err.httpStatus, 409);
        return "conflict";
      }
    });
    assert.deepEqual(got, table[action], action);
    assert.deepEqual(
      TRANSITIONS[action].from,
      states.filter((_, i) => table[action][i] !== "conflict"),
    );
  }
  assert.throws(() => transition(4, "done", "resume"), /rollout 4 is done: it cannot resume/);
});

Deno.test("resuming forgets the failures seen and clears the reason; pausing and aborting say the operator did it", () => {
  assert.deepEqual(transition(1, "halted", "resume"), {
    state: "running",
    reason: "",
    forgetFailures: true,
    endElections: false,
  });
  assert.deepEqual(transition(1, "running", "pause"), {
    state: "paused",
    reason: "paused by the operator",
    forgetFailures: false,
    endElections: false,
  });
  assert.deepEqual(transition(1, "paused", "abort"), {
    state: "aborted",
    reason: "aborted by the operator",
    forgetFailures: false,
    endElections: true,
  });
});

Deno.test("every state but running and paused is finished", () => {
  const states: RolloutState[] = ["running", "paused", "halted", "aborted", "superseded", "done"];
  assert.deepEqual(states.filter(isFinished), ["halted", "aborted", "superseded", "done"]);
});

// --- retry and poison ---

Deno.test("a failed update is offered again after four retry periods; a poisoned one is not", () => {
  assert.equal(retryDelay({ kind: "failed", reason: "x", poisoned: false }, 500), 2000);
  assert.equal(
    retryDelay({ kind: "failed", reason: "poisoned: failed 3 times", poisoned: true }, 500),
    undefined,
  );
});

// --- rollback ---

Deno.test("a rollback goes to the last rollout before the newest with another target, or to the version named", () => {
  const v1 = rollout({}, { id: 1, version: "v1", digest: OLD });
  const v2 = rollout({}, { id: 2, version: "v2", digest: NEW });
  const v2again = rollout({}, { id: 3, version: "v2", digest: NEW });
  assert.equal(rollbackVersion("resnet", [v1, v2, v2again], undefined), "v1");
  assert.equal(rollbackVersion("resnet", [v1, v2], "v7"), "v7");
  assert.equal(rollbackVersion("resnet", [], "v7"), "v7", "a named version needs no history");
});

Deno.test("a rollback with nothing to go back to is refused as not found", () => {
  assert.throws(
    () => rollbackVersion("resnet", [], undefined),
    (err) => err instanceof NotFoundError && /resnet was never rolled out/.test(err.message),
  );
  const v2 = rollout({}, { id: 2, version: "v2", digest: NEW });
  assert.throws(
    () => rollbackVersion("resnet", [v2, { ...v2, id: 3 }], undefined),
    (err) => err instanceof NotFoundError && /was only rolled out as v2/.test(err.message),
  );
});

// --- what is news ---

Deno.test("progress is news unless it says the same, or repeats the state without the agent's detail", () => {
  const active = (detail: string): AgentProgress => ({ kind: "active", detail });
  assert.equal(isNews(undefined, active("")), true);
  assert.equal(isNews(active("switched"), active("switched")), false);
  assert.equal(isNews(active("switched to v2"), active("")), false, "reconcile knows less");
  assert.equal(isNews(active(""), active("switched to v2")), true);
  assert.equal(
    isNews({ kind: "pending", manifestId: "r1.b1.e1" }, {
      kind: "pending",
      manifestId: "r1.b1.e2",
    }),
    true,
  );
  assert.equal(
    isNews({ kind: "offline", excluded: false }, { kind: "offline", excluded: false }),
    false,
  );
  assert.equal(
    isNews({ kind: "offline", excluded: false }, { kind: "offline", excluded: true }),
    true,
    "no longer holding the rollout is news",
  );
  assert.equal(isNews(failed("x", false), failed("x", true)), true, "poisoned is news");
  assert.equal(isNews({ kind: "waiting" }, active("")), true);
});
