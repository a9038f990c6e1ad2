/**
 * The JSON the control plane's HTTP API (http_api.ts) answers with, as types
 * of their own: what operators and the CLI read. They are not the storage
 * records (state_store.ts); status_report.ts maps one to the other. Changing
 * a field here changes the API.
 *
 * @module
 */

/** `GET /health`. */
export interface HealthInfo {
  readonly ok: true;
  readonly boot: number;
}

/** Every error answer: 4xx for bad input, 500 for bugs. */
export interface ErrorBody {
  readonly error: string;
}

/** A published model version. */
export interface VersionInfo {
  readonly model: string;
  readonly version: string;
  /** BLAKE3 of the file, lowercase hex. */
  readonly digest: string;
  readonly size: number;
  /** When it was published (ms since the epoch). */
  readonly created: number;
  /** Whether a signed release manifest is stored for it. */
  readonly signed: boolean;
  /** Its current manifest's release counter; null when unsigned. */
  readonly counter: number | null;
}

/** `GET /v1/models`. */
export interface VersionList {
  readonly versions: VersionInfo[];
}

/** `PUT /v1/delegation`, `PUT /v1/models/{model}/versions/{version}/release`: what was stored. */
export interface DocumentStored {
  /** BLAKE3 of the document (hex): its blob on the control plane's blob server. */
  readonly digest: string;
  /** The delegation's version, or the manifest's counter. */
  readonly version?: number;
  readonly counter?: number;
  /** false when the same bytes were stored already. */
  readonly created: boolean;
}

/** `GET /v1/models/{model}/releases`. */
export interface ReleaseCounters {
  readonly model: string;
  /** The highest release counter of every manifest stored for the model; 0 when none. */
  readonly highestCounter: number;
}

/** A patch the control plane computed between two stored files. */
export interface PatchInfo {
  readonly base: string;
  readonly target: string;
  readonly digest: string;
  readonly size: number;
}

/** `PUT /v1/models/{model}/versions/{version}`: the version and the patches prepared for it. */
export interface PublishResult {
  readonly version: VersionInfo;
  /** From every version agents run now. */
  readonly patches: { readonly from: string; readonly digest: string; readonly size: number }[];
}

/** States of a rollout. */
export type RolloutStateName = "running" | "paused" | "halted" | "aborted" | "superseded" | "done";

/** A rollout (`POST /v1/rollouts`, the pause/resume/abort actions, `POST /v1/rollback`). */
export interface RolloutInfo {
  readonly strategy: "all" | "canary" | "rolling";
  /** Canary size: a count, or a percentage of the scope when `canaryPercent`. */
  readonly canary: number;
  readonly canaryPercent: boolean;
  readonly batch: number;
  /** The halting threshold, a share (0-1) of a batch. */
  readonly maxFailures: number;
  readonly rollback: boolean;
  /** Why it halted, was aborted or superseded. */
  readonly reason: string;
  readonly id: number;
  readonly model: string;
  readonly version: string;
  readonly digest: string;
  /** null: every region. */
  readonly region: string | null;
  readonly state: RolloutStateName;
  readonly created: number;
  readonly finished: number | null;
}

/** `GET /v1/rollouts`. */
export interface RolloutList {
  readonly rollouts: RolloutInfo[];
}

/** An agent's state in a rollout: decided by the control plane, or reported by the agent. */
export type RolloutAgentStateName =
  | "waiting"
  | "offline"
  | "pending"
  | "leader"
  | "downloading"
  | "downloaded"
  | "applied"
  | "active"
  | "failed";

/** One agent in a rollout. */
export interface RolloutAgentInfo {
  readonly rolloutId: number;
  readonly nodeId: string;
  readonly state: RolloutAgentStateName;
  /** Free text: the election's manifest id, the agent's report, why it failed. */
  readonly detail: string;
  readonly updated: number;
}

/** One election in the status report. */
export interface ElectionReport {
  readonly manifestId: string;
  readonly rolloutId: number;
  readonly region: string;
  readonly base: string | null;
  readonly blob: string;
  readonly blobSize: number;
  readonly state: "announcing" | "leading" | "closed" | "failed";
  readonly failure: string | null;
  readonly leader: string | null;
  readonly members: string[];
  readonly pending: string[];
  /**
   * Milestones (ms since the epoch): first announce sent, first bid (the
   * leader), LeaderReady (closed), settled (ElectionClosed sent), failed.
   */
  readonly timeline: {
    announced?: number;
    firstBid?: number;
    leaderReady?: number;
    settled?: number;
    failed?: number;
  };
  /** Bytes of this election's blob the control plane has served (all elections that share it). */
  readonly controlPlaneServedForBlob: number;
  /**
   * What moves: a patch from `base`, the whole file, or nothing (`localSwitch`:
   * every member still holds the target and switches to it, as in a rollback).
   * Absent from control planes before issue 16.
   */
  readonly transfer?: ElectionTransfer;
  /** When it started (its first announce), or null before that. */
  readonly started?: number | null;
  /** When it ended: closed (LeaderReady) or failed; null while it runs. */
  readonly finished?: number | null;
}

/** What an election moves to its members. */
export type ElectionTransfer = "patch" | "wholeFile" | "localSwitch";

/** A rollout with its agents and elections (`GET /v1/rollouts/{id}`, and in the status report). */
export interface RolloutReport extends RolloutInfo {
  readonly agents: RolloutAgentInfo[];
  readonly elections: ElectionReport[];
}

/** An agent (device) as the control plane sees it. */
export interface DeviceInfo {
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  readonly online: boolean;
  readonly lastSeenMsAgo: number;
  /** When it was last heard from (ms since the epoch; absent before issue 16). */
  readonly lastSeen?: number;
  /** Active model digests by model name. */
  readonly active: Record<string, string>;
  /**
   * Bytes its blob server sent to peers, in all: kept by the control plane
   * across the agent's restarts (each restart's counter is added on).
   */
  readonly served: number;
}

/** `GET /v1/agents`, `GET /v1/devices`. */
export interface DeviceList {
  readonly agents: DeviceInfo[];
  /** Devices that asked to enrol without a token, waiting for `device accept` (GET /v1/devices). */
  readonly pending?: PendingDeviceInfo[];
}

/**
 * `GET /v1/devices?offset=N&limit=M`: one page of the devices, ordered by
 * node id (offset 0 and up, limit 1 to 1000, default 100).
 */
export interface DevicePage {
  readonly agents: DeviceInfo[];
  /** Devices in all (the page is `agents`, from `offset` on). */
  readonly total: number;
  readonly offset: number;
  readonly limit: number;
}

/** `GET /v1/rollouts/{id}/devices?offset=N&limit=M`: one page of a rollout's agents, by node id. */
export interface RolloutAgentPage {
  readonly rolloutId: number;
  readonly agents: RolloutAgentInfo[];
  /** The rollout's agents in all. */
  readonly total: number;
  readonly offset: number;
  readonly limit: number;
}

/** A device waiting for an admin's `device accept`. */
export interface PendingDeviceInfo {
  readonly nodeId: string;
  readonly region: string;
  /** Hex BLAKE3 of its public key: `device accept --key-id` names at least its first 16 digits. */
  readonly keyId: string;
  readonly requested: number;
}

/** `POST /v1/enrollment-tokens`: the token, shown once. */
export interface EnrollmentTokenInfo {
  readonly token: string;
  readonly uses: number;
  /** When it stops working (ms since the epoch). */
  readonly expires: number;
}

/** `POST /v1/devices/{id}/accept`: the pending device is enrolled. */
export interface DeviceAccepted {
  readonly nodeId: string;
  readonly accepted: true;
}

/** `DELETE /v1/devices/{id}`: the device was forgotten (a heartbeat brings it back). */
export interface DeviceRemoved {
  readonly nodeId: string;
  readonly removed: true;
}

/** One entry of a device's history. */
export interface HistoryEntry {
  readonly nodeId: string;
  readonly model: string;
  readonly at: number;
  /** It reported a version running, or an update failed. */
  readonly event: "running" | "failed";
  readonly digest: string;
  readonly detail: string;
}

/** `GET /v1/devices/{id}/history`. */
export interface HistoryList {
  readonly history: HistoryEntry[];
}

/** How long the control loop's ticks took (ms). */
export interface TickStats {
  readonly count: number;
  readonly totalMs: number;
  readonly maxMs: number;
  readonly lastMs: number;
}

/** The status report (`GET /v1/status`). */
export interface StatusReport {
  readonly boot: number;
  /** When the report was made (ms since the epoch; absent before issue 16). */
  readonly now?: number;
  readonly versions: VersionInfo[];
  readonly patches: PatchInfo[];
  readonly agents: DeviceInfo[];
  readonly rollouts: RolloutReport[];
  readonly controlPlane: {
    served: number;
    servedByDigest: Record<string, number>;
    /** The reconcile loop's ticks since start: how many, and how long they took. */
    tick: TickStats;
    /** Datagrams received and waiting to be verified and handled, now. */
    datagramBacklog: number;
  };
  /** Datagrams refused or lost, by reason, and the socket's counters. */
  readonly drops: Record<string, number>;
  /** Patches that could not be computed ("base>target" → why). */
  readonly patchErrors: Record<string, string>;
}

/** One entry of the audit log: a call that changed or tried to change something, or a refusal. */
export interface AuditEntry {
  /** When (ms since the epoch). */
  readonly at: number;
  /** The caller's token name; null when it sent none, or a malformed or unknown one. */
  readonly token: string | null;
  readonly role: "viewer" | "deployer" | "admin" | null;
  /** Method and path, e.g. "POST /v1/rollouts". */
  readonly action: string;
  /** What it was about, e.g. "rollout 3: resnet v2"; null when nothing in particular. */
  readonly target: string | null;
  /** The HTTP status answered. */
  readonly status: number;
  /** "ok", or why it was refused or failed. */
  readonly reason: string;
}

/** `GET /v1/audit`: newest first. */
export interface AuditList {
  readonly entries: AuditEntry[];
}

/** Devices counted: in all, heard from within the agent timeout, and not. */
export interface DeviceCounts {
  readonly total: number;
  readonly online: number;
  readonly offline: number;
}

/** An election in the summary: the report's fields, its members and pending ones counted. */
export interface ElectionSummary extends Omit<ElectionReport, "members" | "pending"> {
  readonly members: number;
  readonly pending: number;
}

/** A rollout in the summary: its agents counted by state, its elections without member lists. */
export interface RolloutSummary extends RolloutInfo {
  /** The rollout's agents in all (`GET /v1/rollouts/{id}/devices` lists them). */
  readonly agents: number;
  /** How many of its agents are in each state (states with none are absent). */
  readonly agentStates: Partial<Record<RolloutAgentStateName, number>>;
  readonly elections: ElectionSummary[];
}

/**
 * `GET /v1/status?view=summary`: the status report without per-device lists,
 * cheap to build and small whatever the fleet's size. Every count equals the
 * one made from the whole report at the same moment.
 */
export interface StatusSummary {
  readonly view: "summary";
  readonly boot: number;
  /** When the summary was made (ms since the epoch; absent before issue 16). */
  readonly now?: number;
  readonly versions: VersionInfo[];
  readonly patches: PatchInfo[];
  /** Every device, and by region. */
  readonly devices: DeviceCounts & { readonly byRegion: Record<string, DeviceCounts> };
  readonly rollouts: RolloutSummary[];
  readonly controlPlane: StatusReport["controlPlane"];
  readonly drops: Record<string, number>;
  readonly patchErrors: Record<string, string>;
}
