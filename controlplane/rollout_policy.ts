/**
 * Rollout policy, as pure functions (no I/O, no clock: times come in): which
 * agents a rollout admits now (all, canaries, rolling batches), when a batch's
 * failures halt it, when it is done, which agents of its scope it waits for
 * (not those offline longer than --offline-after), which selections are
 * refused as empty, what each agent in its scope is to do, which rollouts a
 * new one supersedes (overlapping scopes only), what an operator may do to a rollout in
 * which state, whether a failed update is offered again, and what a rollback
 * goes back to. The control plane (control_plane.ts) applies the answers.
 * tests/rollout_policy_test.ts is its specification.
 *
 * @module
 */

import { ConflictError, NotFoundError } from "../kernel/errors.ts";
import { type AgentProgress, progressDetail, sameProgress } from "./agent_progress.ts";
import type { AgentRecord, RolloutRecord, RolloutState } from "./state_store.ts";

/** Whether `agent` runs the rollout's target. */
export function runsTarget(rollout: RolloutRecord, agent: AgentRecord): boolean {
  return agent.active[rollout.model] === rollout.digest;
}

/** Whether `agent` is in the rollout's scope (its region, or every region). */
export function inScope(rollout: RolloutRecord, agent: AgentRecord): boolean {
  return rollout.region === null || agent.region === rollout.region;
}

/** Whether two rollouts' scopes share devices: the same region, or either is fleet-wide. */
export function scopesOverlap(
  a: Pick<RolloutRecord, "region">,
  b: Pick<RolloutRecord, "region">,
): boolean {
  return a.region === null || b.region === null || a.region === b.region;
}

/**
 * Why a rollout to `region` (null: every region) is refused, or undefined:
 * it is refused when no registered device is in its selection (offline ones
 * count: they are offered it when they return).
 */
export function emptySelection(
  region: string | null,
  agents: Iterable<AgentRecord>,
): string | undefined {
  const regions = new Set([...agents].map((a) => a.region));
  if (region === null) {
    return regions.size === 0
      ? "no device is registered: a rollout to every region would reach none; nothing was created"
      : undefined;
  }
  if (regions.has(region)) return undefined;
  const known = [...regions].sort().join(", ");
  return `no device in region "${region}" (${
    known ? `devices are in: ${known}` : "no device is registered"
  }); nothing was created`;
}

/** Whether an agent last seen at `lastSeen` counts as online at `now`. */
export function isOnline(agent: AgentRecord, now: number, agentTimeoutMs: number): boolean {
  return now - agent.lastSeen <= agentTimeoutMs;
}

/**
 * A rollout's scope at some moment: the agents it waits for (`live`), and
 * those silent for longer than the offline limit (`gone`), which no longer
 * hold it: they are left out of admission, batches, halting and "done", and
 * are back in `live` (offered the rollout again) once they are heard from.
 */
export interface RolloutScope {
  readonly live: AgentRecord[];
  readonly gone: AgentRecord[];
}

/**
 * The agents in `rollout`'s scope at `now`, split by whether they were heard
 * from within `offlineAfterMs` (the control plane's --offline-after).
 */
export function scopeOf(
  rollout: RolloutRecord,
  agents: Iterable<AgentRecord>,
  now: number,
  offlineAfterMs: number,
): RolloutScope {
  const live: AgentRecord[] = [];
  const gone: AgentRecord[] = [];
  for (const agent of agents) {
    if (!inScope(rollout, agent)) continue;
    (isOnline(agent, now, offlineAfterMs) ? live : gone).push(agent);
  }
  return { live, gone };
}

/** Which agents of a scope a rollout lets update now, and the batch whose failures count. */
export interface Admission {
  /** Admitted, in a stable order (by node id). */
  readonly admitted: AgentRecord[];
  /** The current batch: the one the halting rule looks at. */
  readonly batch: AgentRecord[];
}

/**
 * The agents a rollout lets update now, in a stable order (by node id):
 * everyone (`all`), the canaries until every one of them runs the target
 * (`canary`: a count, or a percentage of the scope rounded up, at least one),
 * or batch after batch, each admitted once every earlier one runs the target
 * (`rolling`).
 */
export function admit(rollout: RolloutRecord, scope: readonly AgentRecord[]): Admission {
  const sorted = [...scope].sort((a, b) => a.nodeId < b.nodeId ? -1 : 1);
  const done = (a: AgentRecord) => runsTarget(rollout, a);
  if (rollout.strategy === "canary") {
    const n = rollout.canaryPercent
      ? Math.max(1, Math.ceil(sorted.length * rollout.canary / 100))
      : Math.min(rollout.canary, sorted.length);
    const canaries = sorted.slice(0, n);
    return canaries.every(done)
      ? { admitted: sorted, batch: sorted.slice(n) }
      : { admitted: canaries, batch: canaries };
  }
  if (rollout.strategy === "rolling") {
    const k = Math.max(1, rollout.batch);
    for (let end = k;; end += k) {
      const batch = sorted.slice(end - k, end);
      if (end >= sorted.length || !batch.every(done)) {
        return { admitted: sorted.slice(0, end), batch };
      }
    }
  }
  return { admitted: sorted, batch: sorted };
}

/**
 * Why the rollout halts, or undefined if it goes on: it halts when more than
 * `maxFailures` of the current batch failed (agents that run the target do
 * not count as failed, whatever they reported before).
 */
export function haltReason(
  rollout: RolloutRecord,
  batch: readonly AgentRecord[],
  progressOf: (nodeId: string) => AgentProgress | undefined,
): string | undefined {
  if (batch.length === 0) return undefined;
  const failed = batch.filter((a) =>
    !runsTarget(rollout, a) && progressOf(a.nodeId)?.kind === "failed"
  );
  if (failed.length / batch.length <= rollout.maxFailures) return undefined;
  return `${failed.length} of ${batch.length} in the current batch failed (${
    failed.map((a) => a.nodeId).join(", ")
  }); over the ${Math.round(rollout.maxFailures * 100)}% limit`;
}

/**
 * A rollout is done when every agent of its scope that it waits for runs the
 * target, and at least one agent of the scope does: agents gone offline
 * (`gone`, see `scopeOf`) do not hold it, but a rollout no agent took is not
 * done.
 */
export function isDone(
  rollout: RolloutRecord,
  scope: readonly AgentRecord[],
  gone: readonly AgentRecord[] = [],
): boolean {
  return scope.every((a) => runsTarget(rollout, a)) &&
    [...scope, ...gone].some((a) => runsTarget(rollout, a));
}

/** What one agent in a running rollout's scope is to do now. */
export type AgentStep =
  /** It runs the target. */
  | { readonly kind: "active" }
  /** Not admitted yet. */
  | { readonly kind: "waiting" }
  /** Admitted but silent: it leaves its election. */
  | { readonly kind: "offline" }
  /**
   * It joins the election of `key` (one per region and base): the patch from
   * `base`, or the whole file when `base` is null (nothing installed, or it
   * still holds the target and switches to it locally).
   */
  | { readonly kind: "join"; readonly key: string; readonly base: string | null };

/** What `agent` is to do in `rollout` at `now`. */
export function stepFor(
  rollout: RolloutRecord,
  agent: AgentRecord,
  admitted: boolean,
  now: number,
  agentTimeoutMs: number,
): AgentStep {
  if (runsTarget(rollout, agent)) return { kind: "active" };
  if (!admitted) return { kind: "waiting" };
  if (!isOnline(agent, now, agentTimeoutMs)) return { kind: "offline" };
  // A device that still holds the target switches to it locally: its election's blob is
  // the target itself, which every member already has.
  if (agent.held.includes(rollout.digest)) {
    return { kind: "join", key: `${agent.region}|held`, base: null };
  }
  const base = agent.active[rollout.model] ?? null;
  return { kind: "join", key: `${agent.region}|${base ?? "none"}`, base };
}

/** Whether a state is over for good or for now: it gets a finish time. */
export function isFinished(state: RolloutState): boolean {
  return state !== "running" && state !== "paused";
}

/** The states a new rollout of the same model supersedes. */
const SUPERSEDABLE: readonly RolloutState[] = ["running", "paused", "halted"];

/**
 * The rollouts `newer` supersedes: every unfinished other rollout of its
 * model whose scope overlaps its own (`scopesOverlap`). Rollouts of one model
 * in different regions run side by side.
 */
export function superseded(
  newer: RolloutRecord,
  rollouts: Iterable<RolloutRecord>,
): RolloutRecord[] {
  return [...rollouts].filter((r) =>
    r.id !== newer.id && r.model === newer.model && SUPERSEDABLE.includes(r.state) &&
    scopesOverlap(r, newer)
  );
}

/** Why a rollout was superseded. */
export function supersededReason(newer: RolloutRecord): string {
  return `superseded by rollout ${newer.id}`;
}

/** What an operator can do to a rollout. */
export type RolloutAction = "pause" | "resume" | "abort";

/**
 * The pause/resume/abort transition table: from which states, to which, and
 * the reason the rollout then shows.
 */
export const TRANSITIONS: Readonly<
  Record<RolloutAction, {
    readonly from: readonly RolloutState[];
    readonly to: RolloutState;
    readonly reason: string;
  }>
> = {
  pause: { from: ["running"], to: "paused", reason: "paused by the operator" },
  resume: { from: ["paused", "halted"], to: "running", reason: "" },
  abort: {
    from: ["running", "paused", "halted"],
    to: "aborted",
    reason: "aborted by the operator",
  },
};

/** The outcome of an operator's action. */
export interface Transition {
  readonly state: RolloutState;
  readonly reason: string;
  /**
   * Resuming forgets the failures seen so far (they were seen: they count
   * again only if they happen again), so a halted rollout can go on.
   */
  readonly forgetFailures: boolean;
  /** Aborting ends the rollout's elections. */
  readonly endElections: boolean;
}

/** What `action` does to a rollout in `state`; ConflictError if it cannot. */
export function transition(
  rolloutId: number,
  state: RolloutState,
  action: RolloutAction,
): Transition {
  const { from, to, reason } = TRANSITIONS[action];
  if (!from.includes(state)) {
    throw new ConflictError(`rollout ${rolloutId} is ${state}: it cannot ${action}`);
  }
  return {
    state: to,
    reason,
    forgetFailures: action === "resume",
    endElections: to === "aborted",
  };
}

/**
 * After an agent's update failed: the delay after which its election offers
 * the update again (the agent counts its failures and stops at its poison
 * limit), or undefined for a poisoned failure, which is not offered again in
 * this rollout.
 */
export function retryDelay(
  failure: Extract<AgentProgress, { kind: "failed" }>,
  retryMs: number,
): number | undefined {
  return failure.poisoned ? undefined : 4 * retryMs;
}

/**
 * Whether `next` is news after `previous` (and so is recorded): not when it
 * says the same, nor when it only repeats the state without detail —
 * reconciling knows less than the agent's own report.
 */
export function isNews(previous: AgentProgress | undefined, next: AgentProgress): boolean {
  if (previous === undefined) return true;
  if (sameProgress(previous, next)) return false;
  return !(progressDetail(next) === "" && previous.kind === next.kind);
}

/**
 * The version a rollback of `model` goes to: `to` if given, else the version
 * of the last rollout before the newest one whose target differs from it.
 * `rollouts` are the model's rollouts, oldest first. NotFoundError when there
 * is nothing to go back to.
 */
export function rollbackVersion(
  model: string,
  rollouts: readonly RolloutRecord[],
  to: string | undefined,
): string {
  if (to !== undefined) return to;
  const newest = rollouts.at(-1);
  if (newest === undefined) {
    throw new NotFoundError(`nothing to roll back: ${model} was never rolled out`);
  }
  const before = rollouts.slice(0, -1).reverse().find((r) => r.digest !== newest.digest);
  if (!before) {
    throw new NotFoundError(
      `nothing to roll back to: ${model} was only rolled out as ${newest.version}`,
    );
  }
  return before.version;
}
