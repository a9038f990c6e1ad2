/**
 * One agent's progress in one rollout, as a typed record: what the control
 * plane decided for it (waiting for its batch, offline, pending in an
 * election, leading one) or what the agent last reported (downloading,
 * downloaded, applied, active, failed). The status report and the store show
 * it as a state name and a detail text (`progressState`, `progressDetail`);
 * nothing reads those texts back.
 *
 * @module
 */

/** The stages an agent reports while it updates (transfer/control_messages.ts `StatusState`). */
export type UpdateStage = "downloading" | "downloaded" | "applied";

/** One agent's progress in a rollout. */
export type AgentProgress =
  /** In scope, but its batch (or the canaries before it) has not been admitted yet. */
  | { readonly kind: "waiting" }
  /**
   * Silent for longer than the agent timeout (admitted: it left its election).
   * `excluded`: silent for longer than --offline-after too, so the rollout no
   * longer waits for it (rollout_policy.ts `scopeOf`).
   */
  | { readonly kind: "offline"; readonly excluded: boolean }
  /** A member of an election, waiting for it. */
  | { readonly kind: "pending"; readonly manifestId: string }
  /** Won the election: it fetches the blob from the control plane and re-seeds it. */
  | { readonly kind: "leader"; readonly manifestId: string }
  /** Updating, as it reported. */
  | { readonly kind: UpdateStage; readonly detail: string }
  /** Runs the target (it reported so, or its heartbeat says so: then `detail` is empty). */
  | { readonly kind: "active"; readonly detail: string }
  /**
   * Its update failed. A poisoned failure is one the agent will not try again
   * in this rollout (it failed its poison limit of times): no retry is offered.
   */
  | { readonly kind: "failed"; readonly reason: string; readonly poisoned: boolean };

/** The state names of `AgentProgress`, as the store and the API show them. */
export type AgentProgressKind = AgentProgress["kind"];

/** The detail of an agent the rollout no longer waits for. */
export const OFFLINE_EXCLUDED =
  "silent longer than --offline-after: the rollout goes on without it";

/** The detail shown beside the state name. */
export function progressDetail(progress: AgentProgress): string {
  switch (progress.kind) {
    case "waiting":
      return "not in a batch yet";
    case "offline":
      return progress.excluded ? OFFLINE_EXCLUDED : "";
    case "pending":
    case "leader":
      return progress.manifestId;
    case "failed":
      return progress.reason;
    default:
      return progress.detail;
  }
}

/** Whether two progress records say the same. */
export function sameProgress(a: AgentProgress, b: AgentProgress): boolean {
  if (a.kind !== b.kind || progressDetail(a) !== progressDetail(b)) return false;
  return a.kind !== "failed" || b.kind !== "failed" || a.poisoned === b.poisoned;
}
