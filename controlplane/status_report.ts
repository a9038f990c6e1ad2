/**
 * From the control plane's records to the API's JSON (api_types.ts): each
 * storage record's view, an election's report, and the whole status report.
 * The summary (`GET /v1/status?view=summary`) is the same report with every
 * per-device list replaced by counts. Pure: the control plane gathers the inputs.
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import type {
  DeviceCounts,
  DeviceInfo,
  ElectionReport,
  ElectionSummary,
  ElectionTransfer,
  HistoryEntry,
  PatchInfo,
  RolloutAgentInfo,
  RolloutAgentStateName,
  RolloutInfo,
  StatusReport,
  StatusSummary,
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
    lastSeen: a.lastSeen,
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
  return {
    ...electionFacts(entry, served),
    members: election.members,
    pending: election.pending,
  };
}

/** What an election's report and its summary share: all but the members. */
function electionFacts(entry: ElectionEntry, served: Readonly<Record<string, number>>) {
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
    timeline: { ...election.timeline },
    controlPlaneServedForBlob: served[blob] ?? 0,
    transfer: electionTransfer(entry),
    started: election.timeline.announced ?? null,
    finished: election.state === "closed"
      ? election.timeline.leaderReady ?? null
      : election.state === "failed"
      ? election.timeline.failed ?? null
      : null,
  };
}

/**
 * What an election moves: its key says `region|held` when every member holds
 * the target and switches to it locally (nothing is downloaded, although the
 * announce names the whole file as its blob); else a patch when it has a base.
 */
export function electionTransfer(entry: ElectionEntry): ElectionTransfer {
  if (entry.key.endsWith("|held")) return "localSwitch";
  return entry.election.announce.baseDigest ? "patch" : "wholeFile";
}

/** Devices in the order the status shows them: by region, then node id. */
export function byRegionThenNode(a: AgentRecord, b: AgentRecord): number {
  return a.region < b.region
    ? -1
    : a.region > b.region
    ? 1
    : a.nodeId < b.nodeId
    ? -1
    : a.nodeId > b.nodeId
    ? 1
    : 0;
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
    now: input.now,
    versions: input.versions.map((v) => versionInfo(v, input.releaseOf(v.model, v.version))),
    patches: input.patches.map(patchInfo),
    agents: [...input.agents].sort(byRegionThenNode).map((a) =>
      deviceInfo(a, input.now, input.agentTimeoutMs)
    ),
    rollouts: input.rollouts.map(({ rollout, agents }) => ({
      ...rolloutInfo(rollout),
      agents: agents.map(rolloutAgentInfo),
      elections: elections.filter((e) => e.rolloutId === rollout.id),
    })),
    ...controlPlaneParts(input),
  };
}

/** One election's summary: its report without the member lists (counted, not copied). */
export function electionSummary(
  entry: ElectionEntry,
  served: Readonly<Record<string, number>>,
): ElectionSummary {
  const { election } = entry;
  return {
    ...electionFacts(entry, served),
    members: election.memberCount,
    pending: election.pendingCount,
  };
}

/** A mutable count of devices. */
interface Counting {
  total: number;
  online: number;
  offline: number;
}

/**
 * Counts devices, online or not, in all and by region: one pass over the
 * registry that allocates one record per region, nothing per device.
 */
export function countDevices(
  agents: Iterable<AgentRecord>,
  now: number,
  agentTimeoutMs: number,
): DeviceCounts & { byRegion: Record<string, DeviceCounts> } {
  const all: Counting = { total: 0, online: 0, offline: 0 };
  const byRegion = new Map<string, Counting>();
  for (const a of agents) {
    let region = byRegion.get(a.region);
    if (region === undefined) byRegion.set(a.region, region = { total: 0, online: 0, offline: 0 });
    const online = isOnline(a, now, agentTimeoutMs);
    all.total++;
    region.total++;
    if (online) {
      all.online++;
      region.online++;
    } else {
      all.offline++;
      region.offline++;
    }
  }
  const regions = [...byRegion.keys()].sort();
  return { ...all, byRegion: Object.fromEntries(regions.map((r) => [r, byRegion.get(r)!])) };
}

/** What the summary is made of: the status report's inputs, with rollouts' agents counted. */
export interface SummaryInput extends Omit<StatusInput, "rollouts"> {
  /** Every rollout with how many of its agents are in each state. */
  readonly rollouts: readonly {
    rollout: RolloutRecord;
    agentStates: Partial<Record<RolloutAgentStateName, number>>;
  }[];
}

/** The summary (`GET /v1/status?view=summary`). */
export function buildStatusSummary(input: SummaryInput): StatusSummary {
  const elections = input.elections.map((e) => electionSummary(e, input.served));
  return {
    view: "summary",
    boot: input.boot,
    now: input.now,
    versions: input.versions.map((v) => versionInfo(v, input.releaseOf(v.model, v.version))),
    patches: input.patches.map(patchInfo),
    devices: countDevices(input.agents, input.now, input.agentTimeoutMs),
    rollouts: input.rollouts.map(({ rollout, agentStates }) => ({
      ...rolloutInfo(rollout),
      agents: Object.values(agentStates).reduce((a, b) => a + (b ?? 0), 0),
      agentStates: { ...agentStates },
      elections: elections.filter((e) => e.rolloutId === rollout.id),
    })),
    ...controlPlaneParts(input),
  };
}

/** The control plane's own part of a report and of its summary: served bytes, tick, drops. */
function controlPlaneParts(input: {
  readonly served: Readonly<Record<string, number>>;
  readonly tick: StatusReport["controlPlane"]["tick"];
  readonly datagramBacklog: number;
  readonly drops: StatusReport["drops"];
  readonly patchErrors: StatusReport["patchErrors"];
}): Pick<StatusReport, "controlPlane" | "drops" | "patchErrors"> {
  return {
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
