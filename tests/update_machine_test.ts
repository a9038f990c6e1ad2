/**
 * The agent's update lifecycle (agent/update_machine.ts) as a specification:
 * for each situation, what the agent does next, in order, and where the job
 * then waits. No sockets, files or clocks: the machine is pure.
 */

import assert from "node:assert/strict";
import {
  advance,
  answerAnnounce,
  applyChange,
  blobsToKeep,
  newJob,
  recover,
  reportedVersion,
  type Role,
  type StartFacts,
  type Transition,
  type UpdateAction,
  type UpdateJob,
  type UpdateTarget,
} from "../agent/update_machine.ts";
import { initialState, type ModelState, withFailure } from "../agent/lifecycle_state.ts";
import { DiskSpaceError, ReleaseRefusedError } from "../agent/errors.ts";
import { PoolboyError, VerificationError } from "../kernel/errors.ts";
import type { Delegation, Release } from "../release/documents.ts";
import type { TrustMemory } from "../release/trust_policy.ts";

const OLD = "a".repeat(64);
const NEW = "b".repeat(64);
const PATCH = "c".repeat(64);
const OTHER = "d".repeat(64);
const POLICY = { poisonAfter: 3, keepBackups: 1 };
const UPDATE: UpdateTarget = {
  model: "m",
  version: "v2",
  manifestId: "r4.b1.e2",
  target: NEW,
  blob: PATCH,
  isPatch: true,
};
const LEADER: Role = { kind: "leader" };
const OPEN: Role = { kind: "follower", leader: null };
const CLOSED: Role = { kind: "follower", leader: "node-7" };

function idle(): ModelState {
  return initialState("m");
}

function startWith(facts: Partial<StartFacts>, update: UpdateTarget = UPDATE): Transition {
  return advance(newJob(update, POLICY), {
    type: "start",
    facts: { state: idle(), active: OLD, haveTarget: false, role: CLOSED, ...facts },
  });
}

/** Actions as short words, for readable expectations. */
function steps(actions: readonly UpdateAction[]): string[] {
  return actions.map((a) => {
    switch (a.type) {
      case "report":
        return `report ${a.state}${a.detail ? ` "${a.detail}"` : ""}`;
      case "persist":
        return a.change.kind === "step" ? `persist ${a.change.step}` : `persist ${a.change.kind}`;
      case "download":
        return `download from ${a.from}`;
      case "switchBack":
        return `switchBack to ${a.to === null ? "nothing" : a.to.slice(0, 4)}`;
      case "log":
        return "log";
      case "fail":
        return `fail ${a.error.name}`;
      default:
        return a.type;
    }
  });
}

function phaseOf(job: UpdateJob): string {
  return job.phase.name === "finished" ? `finished: ${job.phase.outcome}` : job.phase.name;
}

const SWITCH_OVER = [
  "persist applied",
  "switchToTarget",
  "persist switched",
  "runOnSwitch",
  "checkHealth",
];

Deno.test("a leader checks the disk, persists downloading, fetches from the control plane, says LeaderReady, then stages and applies", () => {
  const t = startWith({ role: LEADER });
  assert.deepEqual(steps(t.actions), [
    "checkDiskSpace",
    "persist downloading",
    "download from controlPlane",
    "announceLeaderReady",
    "persist staged",
    "report downloaded",
    "applyPatch",
  ]);
  assert.equal(phaseOf(t.job), "applying");
});

Deno.test("downloading records the target, the running version as backup, the manifest and the blob", () => {
  const t = startWith({ role: LEADER });
  const persist = t.actions[1];
  assert.ok(persist.type === "persist" && persist.change.kind === "step");
  assert.deepEqual(persist.change.fields, {
    target: NEW,
    backup: OLD,
    manifestId: "r4.b1.e2",
    blob: PATCH,
  });
});

Deno.test("a follower of an open election persists downloading, then waits for the election to close", () => {
  const t = startWith({ role: OPEN });
  assert.deepEqual(steps(t.actions), ["checkDiskSpace", "persist downloading"]);
  assert.equal(phaseOf(t.job), "finished: waitingForLeader");
});

Deno.test("a follower of a closed election downloads from its leader, the control plane as the last resort", () => {
  const t = startWith({ role: CLOSED });
  assert.deepEqual(steps(t.actions), [
    "checkDiskSpace",
    "persist downloading",
    'report downloading "from node-7"',
    "download from leaderThenControlPlane",
    "persist staged",
    "report downloaded",
    "applyPatch",
  ]);
});

Deno.test("a follower that holds the target file already downloads and applies nothing, and switches", () => {
  const t = startWith({ role: OPEN, haveTarget: true });
  assert.deepEqual(steps(t.actions), [
    "checkDiskSpace",
    "persist downloading",
    "persist staged",
    ...SWITCH_OVER,
  ]);
  assert.equal(phaseOf(t.job), "checkingHealth");
});

Deno.test("a full file (no patch) is the target itself: downloaded, then switched without applying", () => {
  const t = startWith({ role: CLOSED }, { ...UPDATE, blob: NEW, isPatch: false });
  assert.deepEqual(steps(t.actions), [
    "checkDiskSpace",
    "persist downloading",
    'report downloading "from node-7"',
    "download from leaderThenControlPlane",
    "persist staged",
    "report downloaded",
    ...SWITCH_OVER,
  ]);
});

Deno.test("a device that already runs the target persists nothing and reports it active", () => {
  const follower = startWith({ active: NEW, haveTarget: true, role: OPEN });
  assert.deepEqual(steps(follower.actions), ['report active "v2"']);
  assert.equal(phaseOf(follower.job), "finished: alreadyActive");
});

Deno.test("a leader that already runs the target still fetches the blob to seed its peers", () => {
  const leader = startWith({ active: NEW, haveTarget: true, role: LEADER });
  assert.deepEqual(steps(leader.actions), [
    "download from controlPlane",
    "announceLeaderReady",
    'report active "v2"',
  ]);
});

Deno.test("a version that failed poisonAfter times in this rollout is refused, touching nothing", () => {
  let state = idle();
  for (const why of ["health", "health", "wrong digest"]) {
    state = withFailure(state, NEW, "r4.b1.e1", why);
  }
  const t = startWith({ state, role: LEADER });
  assert.deepEqual(steps(t.actions), [
    'report failed "poisoned: failed 3 times in this rollout (last: wrong digest); roll out again to retry"',
  ]);
  assert.equal(phaseOf(t.job), "finished: poisoned");
});

Deno.test("failures of an earlier rollout do not poison the version in a new one", () => {
  let state = idle();
  for (let i = 0; i < 5; i++) state = withFailure(state, NEW, "r3.b1.e1", "health");
  const t = startWith({ state, role: LEADER });
  assert.equal(steps(t.actions)[0], "checkDiskSpace");
});

Deno.test("a patch that rebuilt the announced digest is reported applied, then switched", () => {
  const applying = startWith({ role: LEADER }).job;
  const t = advance(applying, { type: "patchApplied", rebuilt: NEW });
  assert.deepEqual(steps(t.actions), ["report applied", ...SWITCH_OVER]);
  assert.equal(phaseOf(t.job), "checkingHealth");
});

Deno.test("a patch that rebuilt another digest is discarded and fails the update with a VerificationError", () => {
  const applying = startWith({ role: LEADER }).job;
  const t = advance(applying, { type: "patchApplied", rebuilt: OTHER });
  assert.deepEqual(steps(t.actions), ["discardTarget", "fail VerificationError"]);
  const fail = t.actions[1];
  assert.ok(fail.type === "fail");
  assert.ok(fail.error instanceof VerificationError);
  assert.ok(fail.error instanceof PoolboyError);
  assert.equal(fail.error.message, `the patch rebuilt ${OTHER}, not the announced ${NEW}`);
});

const SWITCHED: ModelState = {
  ...idle(),
  step: "switched",
  target: NEW,
  backup: OLD,
  blob: PATCH,
  manifestId: "r4.b1.e2",
};

function checking(): UpdateJob {
  return startWith({ role: OPEN, haveTarget: true }).job;
}

Deno.test("a healthy switch is committed, cleaned up and reported active, then heartbeated", () => {
  const t = advance(checking(), {
    type: "healthChecked",
    result: { healthy: true },
    state: SWITCHED,
  });
  assert.deepEqual(steps(t.actions), [
    "persist commit",
    "log",
    "cleanUp",
    'report active "v2"',
    "heartbeat",
  ]);
  assert.equal(phaseOf(t.job), "finished: committed");
});

Deno.test("an unhealthy switch rolls back to the backup, counts a failure and reports why", () => {
  const t = advance(checking(), {
    type: "healthChecked",
    result: { healthy: false, reason: "tensor nan" },
    state: SWITCHED,
  });
  assert.deepEqual(steps(t.actions), [
    "switchBack to aaaa",
    "persist rollBack",
    "log",
    "runOnSwitch",
    'report failed "health check failed: tensor nan"',
    "heartbeat",
  ]);
  assert.equal(phaseOf(t.job), "finished: rolledBack");
  const after = applyChange(SWITCHED, { kind: "rollBack", reason: "tensor nan" }, 5);
  assert.equal(after.step, "rolledBack");
  assert.deepEqual(after.failures[NEW], { count: 1, last: "tensor nan", rollout: "r4" });
});

Deno.test("rolling back the first version ever installed removes current and runs no on-switch", () => {
  const t = advance(checking(), {
    type: "healthChecked",
    result: { healthy: false, reason: "bad" },
    state: { ...SWITCHED, backup: null },
  });
  assert.deepEqual(steps(t.actions).slice(0, 3), [
    "switchBack to nothing",
    "persist rollBack",
    "log",
  ]);
  assert.ok(!steps(t.actions).includes("runOnSwitch"));
});

Deno.test("a failure before the switch goes back to idle, counts towards the poison pill, and is reported", () => {
  const downloading = { ...SWITCHED, step: "downloading" as const };
  const t = advance(newJob(UPDATE, POLICY), {
    type: "failed",
    error: new Error("cannot download blob: every source failed"),
    state: downloading,
  });
  assert.deepEqual(steps(t.actions), ["log", "persist abandon"]);
  assert.deepEqual(steps(t.always ?? []), [
    'report failed "cannot download blob: every source failed"',
  ]);
  assert.equal(phaseOf(t.job), "finished: failed");
  const persist = t.actions[1];
  assert.ok(persist.type === "persist");
  const after = applyChange(downloading, persist.change, 9);
  assert.equal(after.step, "idle");
  assert.equal(after.failures[NEW].count, 1);
});

Deno.test("a disk space failure goes back to idle but does not count: the type decides, not the text", () => {
  const state = { ...SWITCHED, step: "downloading" as const };
  const message =
    "not enough disk space for m v2: needs 1 MiB plus 64 MiB kept free, 2 MiB available";
  const full = advance(newJob(UPDATE, POLICY), {
    type: "failed",
    error: new DiskSpaceError(message),
    state,
  });
  const persist = full.actions[1];
  assert.ok(persist.type === "persist" && persist.change.kind === "abandon");
  assert.equal(persist.change.failure, null);
  assert.deepEqual(applyChange(state, persist.change, 9).failures, {});
  assert.deepEqual(steps(full.always ?? []), [`report failed "${message}"`]);

  const sameText = advance(newJob(UPDATE, POLICY), {
    type: "failed",
    error: new Error(message),
    state,
  });
  const counted = sameText.actions[1];
  assert.ok(counted.type === "persist" && counted.change.kind === "abandon");
  assert.deepEqual(counted.change.failure, {
    target: NEW,
    manifestId: "r4.b1.e2",
    reason: message,
  });
});

Deno.test("a failure after the switch (e.g. the health check could not run) rolls back", () => {
  const t = advance(checking(), {
    type: "failed",
    error: new Error("no such file"),
    state: SWITCHED,
  });
  assert.deepEqual(steps(t.actions), [
    "log",
    "switchBack to aaaa",
    "persist rollBack",
    "log",
    "runOnSwitch",
  ]);
  assert.deepEqual(steps(t.always ?? []), ['report failed "no such file"']);
});

Deno.test("an event the job's phase does not expect is a bug, not a silent transition", () => {
  assert.throws(
    () => advance(newJob(UPDATE, POLICY), { type: "patchApplied", rebuilt: NEW }),
    /patchApplied while starting/,
  );
});

Deno.test("after a restart, a model at rest needs nothing", () => {
  for (const step of ["idle", "committed", "rolledBack"] as const) {
    assert.equal(recover({ ...SWITCHED, step }, NEW, POLICY).kind, "none");
  }
});

Deno.test("after a restart, an update cut short before its switch goes back to idle without counting a failure", () => {
  for (const step of ["downloading", "staged", "applied"] as const) {
    const state = { ...SWITCHED, step };
    const r = recover(state, OLD, POLICY);
    assert.equal(r.kind, "backToIdle", step);
    assert.ok(r.kind === "backToIdle");
    assert.deepEqual(steps(r.transition.actions), ["log", "persist idle"]);
    const persist = r.transition.actions[1];
    assert.ok(persist.type === "persist");
    const after = applyChange(state, persist.change, 3);
    assert.equal(after.step, "idle");
    assert.deepEqual(after.failures, {});
    assert.equal(after.target, NEW, "the target stays recorded");
  }
});

Deno.test("after a restart, a switched update (or one whose switch happened but was not recorded) is checked again", () => {
  for (const [step, active] of [["switched", OLD], ["switched", NEW], ["applied", NEW]] as const) {
    const r = recover({ ...SWITCHED, step }, active, POLICY);
    assert.ok(r.kind === "recheck", `${step} with current ${active.slice(0, 4)}`);
    assert.deepEqual(steps(r.transition.actions), ["log", "persist switched", "checkHealth"]);
    assert.equal(phaseOf(r.transition.job), "checkingHealth");
    assert.equal(r.transition.job.update.target, NEW);
    assert.equal(r.transition.job.update.manifestId, "r4.b1.e2");
  }
  const healthy = recover(SWITCHED, NEW, POLICY);
  assert.ok(healthy.kind === "recheck");
  const commit = advance(healthy.transition.job, {
    type: "healthChecked",
    result: { healthy: true },
    state: SWITCHED,
  });
  assert.deepEqual(steps(commit.actions).at(-2), 'report active "recovered"');
});

Deno.test("a commit keeps keepBackups earlier versions, most recent first, never the target itself", () => {
  const state: ModelState = { ...SWITCHED, kept: [OTHER, NEW] };
  const one = applyChange(state, { kind: "commit", target: NEW, keepBackups: 1 }, 7);
  assert.deepEqual(one.kept, [OLD]);
  assert.equal(one.step, "committed");
  assert.equal(one.updated, 7);
  const two = applyChange(state, { kind: "commit", target: NEW, keepBackups: 2 }, 7);
  assert.deepEqual(two.kept, [OLD, OTHER]);
});

Deno.test("entering a step keeps every other field of state.json (format 1) as it was", () => {
  const state = withFailure({ ...SWITCHED, step: "staged" }, OTHER, "r1.b1.e1", "x");
  const next = applyChange(state, { kind: "step", step: "applied" }, 11);
  assert.deepEqual(next, { ...state, step: "applied", updated: 11 });
  assert.deepEqual(Object.keys(next), Object.keys(state), "same keys, same order");
});

Deno.test("an announce is answered: up to date, wrong base (with both digests), or a bid", () => {
  assert.deepEqual(answerAnnounce(NEW, NEW, OLD), { kind: "upToDate" });
  assert.deepEqual(answerAnnounce(OTHER, NEW, OLD), {
    kind: "wrongBase",
    detail: `runs ${OTHER.slice(0, 16)}, the patch needs base ${OLD.slice(0, 16)}`,
  });
  assert.deepEqual(answerAnnounce(null, NEW, OLD), {
    kind: "wrongBase",
    detail: `runs nothing, the patch needs base ${OLD.slice(0, 16)}`,
  });
  assert.deepEqual(answerAnnounce(OLD, NEW, OLD), { kind: "bid" });
  assert.deepEqual(answerAnnounce(OTHER, NEW, null), { kind: "bid" }, "a full file fits any base");
});

Deno.test("a heartbeat reports a switched but unchecked version as its backup (or nothing)", () => {
  assert.equal(reportedVersion(undefined, NEW), NEW);
  assert.equal(reportedVersion({ ...SWITCHED, step: "committed" }, NEW), NEW);
  assert.equal(reportedVersion(SWITCHED, NEW), OLD);
  assert.equal(reportedVersion({ ...SWITCHED, backup: null }, NEW), null);
});

Deno.test("clean-up keeps each model's active version, kept versions, latest blob and target, and an uncommitted backup", () => {
  const committed: ModelState = {
    ...SWITCHED,
    step: "committed",
    kept: [OLD],
  };
  assert.deepEqual(
    [...blobsToKeep([{ state: committed, active: NEW }])].sort(),
    [OLD, NEW, PATCH].sort(),
  );
  const inFlight: ModelState = { ...SWITCHED, step: "staged", kept: [] };
  assert.ok(blobsToKeep([{ state: inFlight, active: OTHER }]).has(OLD), "the backup stays");
  const noKept: ModelState = { ...committed, kept: [] };
  assert.ok(!blobsToKeep([{ state: noKept, active: NEW }]).has(OLD), "a committed backup goes");
});

Deno.test("a failure when the state file cannot be read keeps no books but is still logged and reported", () => {
  const t = advance(newJob(UPDATE, POLICY), {
    type: "failed",
    error: new Error("boom"),
    state: null,
  });
  assert.deepEqual(steps(t.actions), ["log"]);
  assert.deepEqual(steps(t.always ?? []), ['report failed "boom"']);
});

// Signed releases (agent --trust-root): the check again before the switch.

const SIGNED_POLICY = { ...POLICY, checkReleases: true };
const DELEGATION: Delegation = {
  type: "poolboy.delegation",
  spec: 1,
  version: 3,
  expires: Date.UTC(2100, 0, 1),
  rootKeyId: "e".repeat(64),
  releaseKeys: [],
};
const RELEASE: Release = {
  type: "poolboy.release",
  spec: 1,
  model: "m",
  version: "v2",
  target: { blake3: NEW, size: 10 },
  counter: 7,
  expires: Date.UTC(2100, 0, 1),
  deviceClass: null,
};
const MEMORY: TrustMemory = {
  delegationVersion: 2,
  counters: { m: { counter: 5, target: OLD }, other: { counter: 9, target: OTHER } },
};

function applied(): ModelState {
  return {
    ...initialState("m"),
    step: "applied",
    target: NEW,
    backup: OLD,
    manifestId: "r4.b1.e2",
  };
}

Deno.test("with signed releases, the release is checked again after applied and before the switch", () => {
  const t = advance(newJob({ ...UPDATE, isPatch: false }, SIGNED_POLICY), {
    type: "start",
    facts: { state: idle(), active: OLD, haveTarget: false, role: LEADER },
  });
  assert.deepEqual(steps(t.actions), [
    "checkDiskSpace",
    "persist downloading",
    "download from controlPlane",
    "announceLeaderReady",
    "persist staged",
    "report downloaded",
    "persist applied",
    "checkRelease",
  ]);
  assert.equal(phaseOf(t.job), "checkingRelease");
  assert.ok(!steps(t.actions).includes("switchToTarget"), "no switch before the check");
});

Deno.test("with signed releases, a rebuilt patch is reported applied, then the release is checked again", () => {
  const started = advance(newJob(UPDATE, SIGNED_POLICY), {
    type: "start",
    facts: { state: idle(), active: OLD, haveTarget: false, role: CLOSED },
  });
  assert.equal(phaseOf(started.job), "applying");
  const t = advance(started.job, { type: "patchApplied", rebuilt: NEW });
  assert.deepEqual(steps(t.actions), ["report applied", "persist applied", "checkRelease"]);
  assert.equal(phaseOf(t.job), "checkingRelease");
});

Deno.test("an accepted release first persists the grown trust memory, then switches and checks health", () => {
  const job = { ...newJob(UPDATE, SIGNED_POLICY), phase: { name: "checkingRelease" as const } };
  const t = advance(job, {
    type: "releaseChecked",
    decision: { ok: true, release: RELEASE, delegation: DELEGATION },
    memory: MEMORY,
  });
  assert.deepEqual(steps(t.actions), [
    "rememberRelease",
    "switchToTarget",
    "persist switched",
    "runOnSwitch",
    "checkHealth",
  ]);
  assert.equal(phaseOf(t.job), "checkingHealth");
  const remembered = t.actions[0];
  assert.ok(remembered.type === "rememberRelease");
  assert.deepEqual(remembered.memory, {
    delegationVersion: 3,
    counters: { m: { counter: 7, target: NEW }, other: { counter: 9, target: OTHER } },
  });
});

Deno.test("a release refused at the check before the switch fails the update with a ReleaseRefusedError, switching nothing", () => {
  const job = { ...newJob(UPDATE, SIGNED_POLICY), phase: { name: "checkingRelease" as const } };
  const reason = "refused: release m v2 expired at 2026-01-01T00:00:00Z";
  const t = advance(job, {
    type: "releaseChecked",
    decision: { ok: false, kind: "expired", reason },
    memory: MEMORY,
  });
  assert.deepEqual(steps(t.actions), ["fail ReleaseRefusedError"]);
  const fail = t.actions[0];
  assert.ok(fail.type === "fail" && fail.error instanceof ReleaseRefusedError);
  assert.equal(fail.error.kind, "expired");
  assert.equal(fail.error.message, reason);
});

Deno.test("the failure of a refused release goes back to idle, counts, records the refusal and reports it", () => {
  const reason = "refused: release counter 4 of m is not above 5, already installed";
  const t = advance(newJob(UPDATE, SIGNED_POLICY), {
    type: "failed",
    error: new ReleaseRefusedError("rollback", reason),
    state: applied(),
  });
  assert.deepEqual(steps(t.actions), ["log", "persist abandon"]);
  assert.deepEqual(steps(t.always ?? []), [`report failed "${reason}"`]);
  assert.ok(!steps(t.actions).some((s) => s.startsWith("switch")), "the model is untouched");
  const persist = t.actions[1];
  assert.ok(persist.type === "persist");
  const after = applyChange(applied(), persist.change, 9);
  assert.equal(after.step, "idle");
  assert.equal(after.failures[NEW].count, 1);
  assert.deepEqual(after.refusal, { kind: "rollback", reason, manifestId: "r4.b1.e2", at: 9 });
});

Deno.test("a releaseChecked event outside the check is a bug", () => {
  assert.throws(
    () =>
      advance(newJob(UPDATE, SIGNED_POLICY), {
        type: "releaseChecked",
        decision: { ok: false, kind: "unsigned", reason: "refused: unsigned" },
        memory: MEMORY,
      }),
    /releaseChecked while starting/,
  );
});

Deno.test("a refusal before any download is recorded in state.json without changing its step; the next update's start forgets it", () => {
  const refusal = {
    kind: "unknownKey" as const,
    reason: "refused: release not signed by a key of delegation version 3",
    manifestId: "r5.b1.e1",
  };
  const before = { ...initialState("m"), step: "committed" as const, target: OLD };
  const refused = applyChange(before, { kind: "refused", refusal }, 42);
  assert.equal(refused.step, "committed");
  assert.equal(refused.target, OLD);
  assert.deepEqual(refused.refusal, { ...refusal, at: 42 });
  const staged = applyChange(refused, { kind: "step", step: "staged" }, 43);
  assert.deepEqual(staged.refusal, refused.refusal, "only a new update's start forgets it");
  const next = applyChange(
    refused,
    { kind: "step", step: "downloading", fields: { target: NEW } },
    44,
  );
  assert.equal("refusal" in next, false);
  assert.equal(next.step, "downloading");
});
