/**
 * The update lifecycle of one model on a device, as a pure state machine: no
 * sockets, no files, no clocks. `advance(job, event)` says what the agent does
 * next (a list of `UpdateAction`s) and in which phase the job then waits; the
 * Agent (agent/agent.ts) performs the actions and feeds back the events that
 * some of them answer with. `recover` decides what a restarted agent does with
 * an update it left half-way; `applyChange` is how each persisted step changes
 * `state.json` (agent/lifecycle_state.ts, format 1).
 *
 * The persisted steps of one update: `idle` → `downloading` (disk space was
 * checked) → `staged` (the blob is verified) → `applied` (the new file is
 * built and verified) → `switched` (`current` points at it; the version it
 * replaced is the backup) → `committed` (healthy) or `rolledBack` (`current`
 * points at the backup again). Each step is on disk before what it names is
 * done, so a restart knows where the update stood.
 *
 * Who downloads what: the leader of the region's election downloads the blob
 * from the control plane (it needs it to seed its peers, even when it already
 * runs the version) and says LeaderReady; a follower waits for the election to
 * close, then downloads from the leader, the control plane as the last resort;
 * a follower that holds the target file already downloads nothing. A device
 * that already runs the target only reports it active.
 *
 * Failures: a failure before the switch takes the model back to `idle`; one
 * after it rolls back. Each counts towards the version's poison pill (after
 * `poisonAfter` failures in one rollout the version is not tried again until
 * the next rollout), except a `DiskSpaceError`: a full disk is not the
 * version's fault.
 *
 * Signed releases (agent --trust-root, `policy.checkReleases`): the agent
 * checked the release before it bid (agent.ts); just before the switch the
 * machine has it checked again (`checkRelease`, answered by
 * `releaseChecked`: the time and the trust memory may have moved on). A
 * refusal fails the update before the switch (back to idle, counted, the
 * refusal kept in `state.json`); an acceptance first persists the grown trust
 * memory (`rememberRelease`, DATA/trust.json), then switches — so a crash
 * never leaves a switched release the memory does not know.
 *
 * @module
 */

import { VerificationError } from "../kernel/errors.ts";
import { remember, type TrustDecision, type TrustMemory } from "../release/trust_policy.ts";
import type { StatusState } from "../transfer/control_messages.ts";
import { DiskSpaceError, ReleaseRefusedError } from "./errors.ts";
import type { HealthResult } from "./health_check.ts";
import {
  isPoisoned,
  type ModelState,
  type RefusalRecord,
  type Step,
  withFailure,
} from "./lifecycle_state.ts";

/** The update a job carries out: one announced version of one model. */
export interface UpdateTarget {
  readonly model: string;
  /** The version's name, as reported back ("v2"). */
  readonly version: string;
  readonly manifestId: string;
  /** The version's BLAKE3 (hex). */
  readonly target: string;
  /** The blob downloaded (hex): a patch, or the target file itself. */
  readonly blob: string;
  /** Whether the blob is a patch to apply (else it is the target file). */
  readonly isPatch: boolean;
}

/** The agent's settings the machine decides by. */
export interface UpdatePolicy {
  /** Failures of a version in one rollout after which it is not tried again. */
  readonly poisonAfter: number;
  /** Earlier versions kept per model for rollback. */
  readonly keepBackups: number;
  /**
   * Whether releases are checked against a pinned root key again before the
   * switch (agent --trust-root); absent or false: never (agent --insecure).
   */
  readonly checkReleases?: boolean;
}

/** This agent's part in the update's election. */
export type Role =
  | { readonly kind: "leader" }
  /** `leader`: the node id of the election's leader, or null while the election is open. */
  | { readonly kind: "follower"; readonly leader: string | null };

/** What the agent saw when the job started. */
export interface StartFacts {
  /** The model's persisted state. */
  readonly state: ModelState;
  /** The version `current` points at (hex), or null. */
  readonly active: string | null;
  /** Whether the blob store holds the target file already. */
  readonly haveTarget: boolean;
  readonly role: Role;
}

/** How a finished job ended. */
export type Outcome =
  | "poisoned"
  | "waitingForLeader"
  | "alreadyActive"
  | "committed"
  | "rolledBack"
  | "failed"
  /** Found cut short before its switch after a restart: given up (the next announce retries). */
  | "interrupted";

/** Where a job stands. */
export type Phase =
  | { readonly name: "starting" }
  /** The patch is being applied: waits for `patchApplied`. */
  | { readonly name: "applying" }
  /** The release is checked again before the switch: waits for `releaseChecked`. */
  | { readonly name: "checkingRelease" }
  /** The model is switched: waits for `healthChecked`. */
  | { readonly name: "checkingHealth" }
  | { readonly name: "finished"; readonly outcome: Outcome };

/** One update in progress. */
export interface UpdateJob {
  readonly update: UpdateTarget;
  readonly policy: UpdatePolicy;
  readonly phase: Phase;
}

/** What happened, as the agent observed it. */
export type UpdateEvent =
  | { readonly type: "start"; readonly facts: StartFacts }
  /** `rebuilt`: the BLAKE3 (hex) of the file the patch rebuilt. */
  | { readonly type: "patchApplied"; readonly rebuilt: string }
  /** `state`: the model's persisted state after the check. */
  | { readonly type: "healthChecked"; readonly result: HealthResult; readonly state: ModelState }
  /** The release checked again now; `memory`: the trust memory it was checked against. */
  | {
    readonly type: "releaseChecked";
    readonly decision: TrustDecision;
    readonly memory: TrustMemory;
  }
  /** An action threw `error`; `state`: the model's persisted state now (null: unreadable). */
  | { readonly type: "failed"; readonly error: unknown; readonly state: ModelState | null };

/** A failure to count against a version (the poison pill). */
export interface FailureNote {
  readonly target: string;
  readonly manifestId: string;
  readonly reason: string;
}

/** A refusal to record (its time is the write's). */
export type RefusalNote = Omit<RefusalRecord, "at">;

/** How one write of `state.json` changes the state read just before it. */
export type StateChange =
  /** Enter `step`, setting `fields` (entering `downloading` forgets the last refusal). */
  | {
    readonly kind: "step";
    readonly step: Step;
    readonly fields?: Partial<Pick<ModelState, "target" | "backup" | "manifestId" | "blob">>;
  }
  /** Healthy: committed, keeping `keepBackups` earlier versions other than `target`. */
  | { readonly kind: "commit"; readonly target: string; readonly keepBackups: number }
  /** Back on the backup: `rolledBack`, the failure counted against the state's target. */
  | { readonly kind: "rollBack"; readonly reason: string }
  /**
   * Given up before the switch: `idle`, the failure counted unless `failure`
   * is null; `refusal`: the release was refused at the last check.
   */
  | {
    readonly kind: "abandon";
    readonly failure: FailureNote | null;
    readonly refusal?: RefusalNote;
  }
  /** A release refused before any download: recorded, the step unchanged. */
  | { readonly kind: "refused"; readonly refusal: RefusalNote };

/** What the agent does, in order. */
export type UpdateAction =
  /** Send a Status for the update's manifest. */
  | { readonly type: "report"; readonly state: StatusState; readonly detail: string }
  /** Throw `DiskSpaceError` if the filesystem has no room for the update. */
  | { readonly type: "checkDiskSpace" }
  /** Read-change-write `state.json`, then call the `afterStepPersisted` hook. */
  | { readonly type: "persist"; readonly change: StateChange }
  /** Download the blob (a no-op if it is in the store already). */
  | { readonly type: "download"; readonly from: "controlPlane" | "leaderThenControlPlane" }
  /** Tell the control plane the leader holds the blob (unless the election is closed). */
  | { readonly type: "announceLeaderReady" }
  /** Apply the patch to the base; answers with `patchApplied`. */
  | { readonly type: "applyPatch" }
  /** Check the release again (now, current trust memory); answers with `releaseChecked`. */
  | { readonly type: "checkRelease" }
  /** Write `memory` to DATA/trust.json, durably (counters only grow). */
  | { readonly type: "rememberRelease"; readonly memory: TrustMemory }
  /** Remove the target file from the blob store (it did not verify). */
  | { readonly type: "discardTarget" }
  /** Throw `error`: the update failed (the failure path takes over). */
  | { readonly type: "fail"; readonly error: Error }
  /** Point `current` at the target. */
  | { readonly type: "switchToTarget" }
  /** Point `current` back at `to`, or remove it if null. */
  | { readonly type: "switchBack"; readonly to: string | null }
  /** Run `--on-switch` for the model's current file. */
  | { readonly type: "runOnSwitch" }
  /** Health-check the current file; answers with `healthChecked`. */
  | { readonly type: "checkHealth" }
  /** Remove blobs no model needs any more. */
  | { readonly type: "cleanUp" }
  | { readonly type: "heartbeat" }
  | { readonly type: "log"; readonly line: string };

/** The next phase of a job and what to do to get there. */
export interface Transition {
  readonly job: UpdateJob;
  /** Done in order; the first that throws ends the list. */
  readonly actions: readonly UpdateAction[];
  /** Done after `actions` even if one of them threw (a failure's report). */
  readonly always?: readonly UpdateAction[];
}

/** A job about to start. */
export function newJob(update: UpdateTarget, policy: UpdatePolicy): UpdateJob {
  return { update, policy, phase: { name: "starting" } };
}

/** The next transition of `job` on `event`. Throws on an event its phase does not expect (a bug). */
export function advance(job: UpdateJob, event: UpdateEvent): Transition {
  if (event.type === "failed") return fail(job, event.error, event.state);
  const expected = {
    start: "starting",
    patchApplied: "applying",
    releaseChecked: "checkingRelease",
    healthChecked: "checkingHealth",
  }[event.type];
  if (job.phase.name !== expected) {
    throw new Error(`update machine: ${event.type} while ${job.phase.name}`);
  }
  switch (event.type) {
    case "start":
      return start(job, event.facts);
    case "patchApplied":
      return patchApplied(job, event.rebuilt);
    case "releaseChecked":
      return releaseChecked(job, event.decision, event.memory);
    case "healthChecked":
      return healthChecked(job, event.result, event.state);
  }
}

function start(job: UpdateJob, facts: StartFacts): Transition {
  const u = job.update;
  const { state, active, haveTarget, role } = facts;
  if (isPoisoned(state, u.target, u.manifestId, job.policy.poisonAfter)) {
    const record = state.failures[u.target];
    return finish(job, "poisoned", [
      report(
        "failed",
        `poisoned: failed ${record.count} times in this rollout (last: ${record.last}); roll out again to retry`,
      ),
    ]);
  }
  const already = active === u.target; // e.g. it got there before a restart
  const actions: UpdateAction[] = [];
  if (!already) {
    actions.push(
      { type: "checkDiskSpace" },
      persistStep("downloading", {
        target: u.target,
        backup: active,
        manifestId: u.manifestId,
        blob: u.blob,
      }),
    );
  }
  if (role.kind === "leader") {
    // A leader needs the blob to seed, even if it has the target already.
    actions.push({ type: "download", from: "controlPlane" }, { type: "announceLeaderReady" });
  } else if (!haveTarget) {
    if (role.leader === null) return finish(job, "waitingForLeader", actions);
    actions.push(
      report("downloading", `from ${role.leader}`),
      { type: "download", from: "leaderThenControlPlane" },
    );
  }
  if (already) return finish(job, "alreadyActive", [...actions, report("active", u.version)]);
  actions.push(persistStep("staged"));
  if (!haveTarget) {
    actions.push(report("downloaded", ""));
    if (u.isPatch) {
      actions.push({ type: "applyPatch" });
      return { job: { ...job, phase: { name: "applying" } }, actions };
    }
  }
  return switchOver(job, actions);
}

function patchApplied(job: UpdateJob, rebuilt: string): Transition {
  const { target } = job.update;
  if (rebuilt !== target) {
    return {
      job,
      actions: [
        { type: "discardTarget" },
        {
          type: "fail",
          error: new VerificationError(`the patch rebuilt ${rebuilt}, not the announced ${target}`),
        },
      ],
    };
  }
  return switchOver(job, [report("applied", "")]);
}

/**
 * `before`, then applied → switch → switched → on-switch → health check; with
 * `checkReleases`, the release is checked again between applied and the switch.
 */
function switchOver(job: UpdateJob, before: UpdateAction[]): Transition {
  if (job.policy.checkReleases) {
    return {
      job: { ...job, phase: { name: "checkingRelease" } },
      actions: [...before, persistStep("applied"), { type: "checkRelease" }],
    };
  }
  return switchNow(job, [...before, persistStep("applied")]);
}

/** `before`, then switch → switched → on-switch → health check. */
function switchNow(job: UpdateJob, before: UpdateAction[]): Transition {
  return {
    job: { ...job, phase: { name: "checkingHealth" } },
    actions: [
      ...before,
      { type: "switchToTarget" },
      persistStep("switched"),
      { type: "runOnSwitch" },
      { type: "checkHealth" },
    ],
  };
}

/**
 * The check before the switch: refused → the update fails (before the
 * switch); accepted → the grown memory is persisted, then the switch.
 */
function releaseChecked(job: UpdateJob, decision: TrustDecision, memory: TrustMemory): Transition {
  if (!decision.ok) {
    return {
      job,
      actions: [{ type: "fail", error: new ReleaseRefusedError(decision.kind, decision.reason) }],
    };
  }
  return switchNow(job, [
    { type: "rememberRelease", memory: remember(memory, decision.release, decision.delegation) },
  ]);
}

function healthChecked(job: UpdateJob, result: HealthResult, state: ModelState): Transition {
  const u = job.update;
  if (result.healthy) {
    return finish(job, "committed", [
      {
        type: "persist",
        change: { kind: "commit", target: u.target, keepBackups: job.policy.keepBackups },
      },
      {
        type: "log",
        line: `active ${u.model} ${u.version} ${short(u.target)} (healthy, committed)`,
      },
      { type: "cleanUp" },
      report("active", u.version),
      { type: "heartbeat" },
    ]);
  }
  return finish(job, "rolledBack", [
    ...rollBack(state, result.reason),
    report("failed", `health check failed: ${result.reason}`),
    { type: "heartbeat" },
  ]);
}

/** Points current back at the state's backup (or removes it), recording the failure. */
function rollBack(state: ModelState, reason: string): UpdateAction[] {
  return [
    { type: "switchBack", to: state.backup },
    { type: "persist", change: { kind: "rollBack", reason } },
    {
      type: "log",
      line: `rolled ${state.model} back to ${
        state.backup === null ? "nothing" : short(state.backup)
      }: ${reason}`,
    },
    ...(state.backup === null ? [] : [{ type: "runOnSwitch" } as const]),
  ];
}

/**
 * The failure path: after the switch, roll back; before it, back to idle. The
 * failure counts towards the poison pill unless it is a `DiskSpaceError`. The
 * failure is reported whatever happens to the bookkeeping (and without
 * bookkeeping when the state file could not be read).
 */
function fail(job: UpdateJob, error: unknown, state: ModelState | null): Transition {
  const u = job.update;
  const reason = error instanceof Error ? error.message : String(error);
  let bookkeeping: UpdateAction[] = [];
  if (state?.step === "switched") {
    bookkeeping = rollBack(state, reason);
  } else if (state !== null) {
    // A full disk is not the version's fault: it does not count towards the poison pill.
    const failure = error instanceof DiskSpaceError
      ? null
      : { target: u.target, manifestId: u.manifestId, reason };
    const refusal = error instanceof ReleaseRefusedError
      ? { kind: error.kind, reason: reason.slice(0, 256), manifestId: u.manifestId }
      : undefined;
    bookkeeping = [{
      type: "persist",
      change: refusal ? { kind: "abandon", failure, refusal } : { kind: "abandon", failure },
    }];
  }
  return {
    ...finish(job, "failed", [
      { type: "log", line: `update to ${short(u.target)} failed: ${reason}` },
      ...bookkeeping,
    ]),
    always: [report("failed", reason)],
  };
}

/** What a restarted agent does with a model's update. */
export type Recovery =
  /** Nothing was in progress. */
  | { readonly kind: "none" }
  /** Cut short before the switch: back to idle (verified blobs stay; a partial download resumes later). */
  | { readonly kind: "backToIdle"; readonly transition: Transition }
  /** Cut short after the switch: check the version again, then commit or roll back. */
  | { readonly kind: "recheck"; readonly transition: Transition };

/** The recovery of a model whose persisted state is `state` and whose `current` is `active`. */
export function recover(state: ModelState, active: string | null, policy: UpdatePolicy): Recovery {
  if (state.step === "idle" || state.step === "committed" || state.step === "rolledBack") {
    return { kind: "none" };
  }
  const job: UpdateJob = {
    update: {
      model: state.model,
      version: "recovered",
      manifestId: state.manifestId ?? "r0",
      target: state.target ?? "",
      blob: state.blob ?? state.target ?? "",
      isPatch: false,
    },
    policy,
    phase: { name: "checkingHealth" },
  };
  if ((state.step !== "switched" && active !== state.target) || state.target === null) {
    return {
      kind: "backToIdle",
      transition: finish(job, "interrupted", [
        {
          type: "log",
          line: `recovery: ${state.model}'s update to ${
            state.target?.slice(0, 16)
          } stopped at ${state.step}; idle`,
        },
        persistStep("idle"),
      ]),
    };
  }
  return {
    kind: "recheck",
    transition: {
      job,
      actions: [
        {
          type: "log",
          line: `recovery: ${state.model} was switched to ${
            short(state.target)
          }; checking it again`,
        },
        persistStep("switched"),
        { type: "checkHealth" },
      ],
    },
  };
}

/** `state` after `change`, written at time `now` (ms). */
export function applyChange(state: ModelState, change: StateChange, now: number): ModelState {
  switch (change.kind) {
    case "step": {
      const next = { ...state, ...change.fields, step: change.step, updated: now };
      return change.step === "downloading" ? withoutRefusal(next) : next;
    }
    case "commit": {
      const kept = [...new Set([state.backup, ...(state.kept ?? [])])]
        .filter((d): d is string => d !== null && d !== change.target)
        .slice(0, change.keepBackups);
      return { ...state, kept, step: "committed", updated: now };
    }
    case "rollBack": {
      const failed = state.target && state.manifestId
        ? withFailure(state, state.target, state.manifestId, change.reason)
        : state;
      return { ...failed, step: "rolledBack", updated: now };
    }
    case "abandon": {
      const f = change.failure;
      const failed = f ? withFailure(state, f.target, f.manifestId, f.reason) : state;
      const refused = change.refusal
        ? { ...failed, refusal: { ...change.refusal, at: now } }
        : failed;
      return { ...refused, step: "idle", updated: now };
    }
    case "refused":
      return { ...state, refusal: { ...change.refusal, at: now }, updated: now };
  }
}

/** How an agent answers an Announce. */
export type AnnounceAnswer =
  | { readonly kind: "upToDate" }
  /** It runs another version than the patch's base: `detail` says which. */
  | { readonly kind: "wrongBase"; readonly detail: string }
  | { readonly kind: "bid" };

/** The answer to an Announce of `target` (patching `base`, or a full file if null) when running `active`. */
export function answerAnnounce(
  active: string | null,
  target: string,
  base: string | null,
): AnnounceAnswer {
  if (active === target) return { kind: "upToDate" };
  if (base !== null && active !== base) {
    return {
      kind: "wrongBase",
      detail: `runs ${active?.slice(0, 16) ?? "nothing"}, the patch needs base ${
        base.slice(0, 16)
      }`,
    };
  }
  return { kind: "bid" };
}

/**
 * The version a heartbeat reports for a model whose `current` is `active`: a
 * version switched to but not yet healthy is not reported as running (its
 * backup is, or nothing). Null: report none.
 */
export function reportedVersion(state: ModelState | undefined, active: string): string | null {
  if (state?.step === "switched") return state.backup;
  return active;
}

/**
 * The blobs (hex) to keep after a commit: each model's active version, its
 * kept earlier versions, its latest update's blob and target (kept to seed
 * peers), and the backup of an update not committed yet.
 */
export function blobsToKeep(
  models: readonly { readonly state: ModelState; readonly active: string | null }[],
): Set<string> {
  const keep = new Set<string>();
  for (const { state, active } of models) {
    for (const d of [active, state.blob, state.target, ...(state.kept ?? [])]) if (d) keep.add(d);
    if (state.step !== "committed" && state.backup) keep.add(state.backup);
  }
  return keep;
}

/** `state` without its `refusal` field. */
function withoutRefusal(state: ModelState): ModelState {
  const copy: { -readonly [K in keyof ModelState]: ModelState[K] } = { ...state };
  delete copy.refusal;
  return copy;
}

function finish(job: UpdateJob, outcome: Outcome, actions: UpdateAction[]): Transition {
  return { job: { ...job, phase: { name: "finished", outcome } }, actions };
}

function report(state: StatusState, detail: string): UpdateAction {
  return { type: "report", state, detail };
}

function persistStep(
  step: Step,
  fields?: Partial<Pick<ModelState, "target" | "backup" | "manifestId" | "blob">>,
): UpdateAction {
  return {
    type: "persist",
    change: fields ? { kind: "step", step, fields } : { kind: "step", step },
  };
}

function short(digest: string): string {
  return digest.slice(0, 16);
}
