/**
 * From the control plane's records to the API's JSON (api_types.ts): each
 * storage record's view, an election's report, and the whole status report.
 * Pure: the control plane gathers the inputs.
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import type {
  DeviceInfo,
  ElectionReport,
  HistoryEntry,
  PatchInfo,
  RolloutAgentInfo,
  RolloutInfo,
  StatusReport,
  TickStats,
  VersionInfo,
} from "./api_types.ts";
import type { ElectionEntry } from "./election_book.ts";
import { isOnline } from "./rollout_policy.ts";
import type {
  AgentRecord,
  HistoryRecord,
  PatchRecord,
  ReleaseRecord,
  RolloutAgentRecord,
  RolloutRecord,
  VersionRecord,
} from "./state_store.ts";

/** A version's view; `release` is its current signed manifest, if any. */
export function versionInfo(v: VersionRecord, release: ReleaseRecord | undefined): VersionInfo {
  return {
    model: v.model,
    version: v.version,
    digest: v.digest,
    size: v.size,
    created: v.created,
    signed: release !== undefined,
    counter: release?.counter ?? null,
  };
}

export function patchInfo(p: PatchRecord): PatchInfo {
  return { base: p.base, target: p.target, digest: p.digest, size: p.size };
}

export function rolloutInfo(r: RolloutRecord): RolloutInfo {
  return {
    strategy: r.strategy,
    canary: r.canary,
    canaryPercent: r.canaryPercent,
    batch: r.batch,
    maxFailures: r.maxFailures,
    rollback: r.rollback,
    reason: r.reason,
    id: r.id,
    model: r.model,
    version: r.version,
    digest: r.digest,
    region: r.region,
    state: r.state,
    created: r.created,
    finished: r.finished,
  };
}

export function rolloutAgentInfo(a: RolloutAgentRecord): RolloutAgentInfo {
  return {
    rolloutId: a.rolloutId,
    nodeId: a.nodeId,
    state: a.state,
    detail: a.detail,
    updated: a.updated,
  };
}

export function historyEntry(h: HistoryRecord): HistoryEntry {
  return {
    nodeId: h.nodeId,
    model: h.model,
    at: h.at,
    event: h.event,
    digest: h.digest,
    detail: h.detail,
  };
}

export function deviceInfo(a: AgentRecord, now: number, agentTimeoutMs: number): DeviceInfo {
  return {
    nodeId: a.nodeId,
    region: a.region,
    host: a.host,
    online: isOnline(a, now, agentTimeoutMs),
    lastSeenMsAgo: now - a.lastSeen,
    active: { ...a.active },
    served: a.served,
  };
}

/** One election's report; `served` is the control plane's bytes served per blob digest. */
export function electionReport(
  entry: ElectionEntry,
  served: Readonly<Record<string, number>>,
): ElectionReport {
  const { election } = entry;
  const blob = toHex(election.announce.blobDigest);
  return {
    manifestId: election.manifestId,
    rolloutId: entry.rolloutId,
    region: election.region,
    base: election.announce.baseDigest ? toHex(election.announce.baseDigest) : null,
    blob,
    blobSize: election.announce.blobSize,
    state: election.state,
    failure: election.failure ?? null,
    leader: election.leader ?? null,
    members: election.members,
    pending: election.pending,
    timeline: { ...election.timeline },
    controlPlaneServedForBlob: served[blob] ?? 0,
  };
}

/** What the status report is made of. */
export interface StatusInput {
  readonly boot: number;
  readonly now: number;
  readonly agentTimeoutMs: number;
  readonly versions: readonly VersionRecord[];
  /** A version's current release manifest, if any. */
  readonly releaseOf: (model: string, version: string) => ReleaseRecord | undefined;
  readonly patches: readonly PatchRecord[];
  readonly agents: Iterable<AgentRecord>;
  /** Every rollout with its agents' progress. */
  readonly rollouts: readonly { rollout: RolloutRecord; agents: RolloutAgentRecord[] }[];
  /** Past elections, then live ones. */
  readonly elections: readonly ElectionEntry[];
  readonly served: Readonly<Record<string, number>>;
  readonly drops: Readonly<Record<string, number>>;
  readonly patchErrors: Readonly<Record<string, string>>;
  readonly tick: TickStats;
  readonly datagramBacklog: number;
}

/** The whole status report. */
export function buildStatusReport(input: StatusInput): StatusReport {
  const elections = input.elections.map((e) => electionReport(e, input.served));
  return {
    boot: input.boot,
    versions: input.versions.map((v) => versionInfo(v, input.releaseOf(v.model, v.version))),
    patches: input.patches.map(patchInfo),
    agents: [...input.agents].map((a) => deviceInfo(a, input.now, input.agentTimeoutMs)),
    rollouts: input.rollouts.map(({ rollout, agents }) => ({
      ...rolloutInfo(rollout),
      agents: agents.map(rolloutAgentInfo),
      elections: elections.filter((e) => e.rolloutId === rollout.id),
    })),
    controlPlane: {
      served: Object.values(input.served).reduce((a, b) => a + b, 0),
      servedByDigest: { ...input.served },
      tick: { ...input.tick },
      datagramBacklog: input.datagramBacklog,
    },
    drops: { ...input.drops },
    patchErrors: { ...input.patchErrors },
  };
}
