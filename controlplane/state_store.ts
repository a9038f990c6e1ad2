/**
 * The control plane's durable state, behind one asynchronous interface: what
 * must survive a restart — model versions, cached patches, the agent
 * registry, rollouts and each agent's progress in them, device history, the
 * bytes served, the boot counter, operators' tokens (hashes only) and the
 * audit log. Elections are not stored: after a restart
 * they are run again from the rollouts (agents that finished say so in their
 * heartbeats).
 *
 * `sqlite_store.ts` implements it with `node:sqlite`; another database
 * (e.g. PostgreSQL) would implement the same methods, and nothing of the
 * rollout or election logic would change. Every method returns a Promise;
 * the control plane keeps in memory what its hot path reads (the agent
 * registry, versions, patches, rollouts) and writes through.
 *
 * The store never reads the clock: times (created, finished, updated) come in
 * the records. Digests are lowercase hex.
 *
 * @module
 */

import { ConflictError } from "../kernel/errors.ts";
import type { AgentProgressKind } from "./agent_progress.ts";

/** A stored model version. */
export interface VersionRecord {
  readonly model: string;
  readonly version: string;
  readonly digest: string;
  readonly size: number;
  readonly created: number;
}

/** A cached patch from one stored file to another. */
export interface PatchRecord {
  readonly base: string;
  readonly target: string;
  readonly digest: string;
  readonly size: number;
}

/** An agent as last heard from. */
export interface AgentRecord {
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  readonly udpPort: number;
  readonly p2pPort: number;
  /** Active model digests by model name. */
  readonly active: Readonly<Record<string, string>>;
  readonly held: readonly string[];
  /**
   * Bytes its blob server sent, in all: the control plane adds each reported
   * increase of the agent's counter, and the whole counter after a restart
   * (`servedTotal`), so the total survives the agent's restarts.
   */
  readonly served: number;
  /** The counter the agent last reported (absent in older records: equal to `served`). */
  readonly servedReported?: number;
  readonly startedAt: number;
  readonly lastSeen: number;
}

/**
 * An agent's running total of bytes served after a heartbeat reports
 * `reported` (its blob server's counter since it started at `startedAt`): the
 * kept total plus the counter's increase; after a restart (another
 * `startedAt`, or a counter that went down) the whole new counter is added.
 */
export function servedTotal(
  previous: Pick<AgentRecord, "served" | "servedReported" | "startedAt"> | undefined,
  reported: number,
  startedAt: number,
): { served: number; servedReported: number } {
  const counter = Number.isSafeInteger(reported) && reported >= 0 ? reported : 0;
  if (previous === undefined) return { served: counter, servedReported: counter };
  const last = previous.servedReported ?? previous.served;
  const restarted = previous.startedAt !== startedAt || counter < last;
  const added = restarted ? counter : counter - last;
  return { served: previous.served + added, servedReported: counter };
}

/** States of a rollout: only a running one admits devices and runs elections. */
export type RolloutState = "running" | "paused" | "halted" | "aborted" | "superseded" | "done";

/** How a rollout admits devices. */
export type Strategy = "all" | "canary" | "rolling";

/** How a rollout is made: its strategy and its failure threshold. */
export interface RolloutPlan {
  readonly strategy: Strategy;
  /** Canary size: a count, or a percentage of the scope when `canaryPercent`. */
  readonly canary: number;
  readonly canaryPercent: boolean;
  /** Rolling batch size. */
  readonly batch: number;
  /** Halt when more than this share (0-1) of a batch fails. */
  readonly maxFailures: number;
  /** A fleet rollback (it may switch devices to a version they hold). */
  readonly rollback: boolean;
}

/** Defaults: everyone at once, halt above 20% failures. */
export const DEFAULT_PLAN: RolloutPlan = {
  strategy: "all",
  canary: 1,
  canaryPercent: false,
  batch: 1,
  maxFailures: 0.2,
  rollback: false,
};

/** A rollout as it is created (the store gives it its id; it starts running). */
export interface NewRollout {
  readonly model: string;
  readonly version: string;
  readonly digest: string;
  readonly region: string | null;
  readonly plan: RolloutPlan;
  readonly created: number;
}

/** A rollout of one model version to a region or the whole fleet. */
export interface RolloutRecord extends RolloutPlan {
  readonly id: number;
  readonly model: string;
  readonly version: string;
  readonly digest: string;
  readonly region: string | null;
  readonly state: RolloutState;
  readonly created: number;
  /** When it reached a state other than running or paused. */
  readonly finished: number | null;
  /** Why it halted, was aborted or superseded. */
  readonly reason: string;
}

/**
 * One agent's progress in a rollout, as stored and shown: the state name and
 * its detail text (agent_progress.ts `progressDetail`). The control plane
 * keeps the typed `AgentProgress` in memory and never reads these back.
 */
export interface RolloutAgentRecord {
  readonly rolloutId: number;
  readonly nodeId: string;
  readonly state: AgentProgressKind;
  readonly detail: string;
  readonly updated: number;
}

/** What happened on a device: it reported a version running, or an update failed. */
export type HistoryEvent = "running" | "failed";

/** One entry of a device's history. */
export interface HistoryRecord {
  readonly nodeId: string;
  readonly model: string;
  readonly at: number;
  readonly event: HistoryEvent;
  readonly digest: string;
  readonly detail: string;
}

/**
 * A signed release manifest stored for a model version (the document itself
 * is a blob in the control plane's BlobStore, under `digest`). The newest one
 * stored for a version is its current manifest (a rollback re-signs).
 */
export interface ReleaseRecord {
  readonly model: string;
  readonly version: string;
  /** The manifest's release counter. */
  readonly counter: number;
  /** BLAKE3 of the manifest document (hex): its blob. */
  readonly digest: string;
  readonly created: number;
}

/** The stored delegation (the document is a blob under `digest`). */
export interface DelegationRecord {
  /** The delegation's version. */
  readonly version: number;
  /** BLAKE3 of the delegation document (hex): its blob. */
  readonly digest: string;
  readonly created: number;
}

/** Operator roles, least to most allowed (controlplane/auth.ts orders them). */
export const ROLES = ["viewer", "deployer", "admin"] as const;

/** What an operator's token lets it do: viewer reads, deployer deploys, admin does everything. */
export type Role = typeof ROLES[number];

/** An operator's API token. The token itself is never stored: only its BLAKE3 (hex). */
export interface TokenRecord {
  /** Unique among every token ever made (revoked ones keep their name). */
  readonly name: string;
  readonly role: Role;
  /** BLAKE3 of the token's UTF-8 text, lowercase hex. */
  readonly hash: string;
  readonly created: number;
  /** When it was revoked, or null while it is valid. */
  readonly revoked: number | null;
}

/** One line of the audit log: a call that changed (or tried to change) something, or a refusal. */
export interface AuditRecord {
  readonly at: number;
  /** The caller's token name, null when it sent none or an unknown one. */
  readonly token: string | null;
  readonly role: Role | null;
  /** The method and path, e.g. "POST /v1/rollouts". */
  readonly action: string;
  /** What it was about (e.g. "resnet v2", "rollout 3"), or null. */
  readonly target: string | null;
  /** The HTTP status answered. */
  readonly status: number;
  /** "ok", or why it was refused or failed. */
  readonly reason: string;
}

/** An enrolment token (issue 14): only its BLAKE3 is stored, with the uses it has left. */
export interface EnrollmentTokenRecord {
  /** BLAKE3 of the token's UTF-8 text, lowercase hex. */
  readonly hash: string;
  /** Enrolments it still allows. */
  readonly usesLeft: number;
  /** When it stops working (ms since the epoch). */
  readonly expires: number;
  readonly created: number;
}

/** An enrolled device: the key its datagrams are signed with. */
export interface DeviceKeyRecord {
  readonly nodeId: string;
  readonly region: string;
  /** Its raw Ed25519 public key, base64url. */
  readonly publicKey: string;
  readonly enrolled: number;
}

/** The audit log keeps this many of its newest entries. */
export const AUDIT_KEEP = 100_000;

/** The error of a second token with a name already taken (every store answers it). */
export function duplicateToken(name: string): ConflictError {
  return new ConflictError(
    `a token named "${name}" already exists (names are never reused, even revoked ones): pick another name`,
  );
}

/** The control plane's durable state. */
export interface StateStore {
  /** Increments and returns the boot counter (part of every election's id, so ids never repeat). */
  nextBoot(): Promise<number>;
  close(): Promise<void>;

  /** Stores a version (replacing one of the same model and version). */
  putVersion(version: VersionRecord): Promise<void>;
  version(model: string, version: string): Promise<VersionRecord | undefined>;
  /** Every version, by model, then oldest first. */
  versions(): Promise<VersionRecord[]>;

  /** Stores a patch (replacing one of the same base and target). */
  putPatch(patch: PatchRecord): Promise<void>;
  /** Every patch, in the order they were stored. */
  patches(): Promise<PatchRecord[]>;

  /** Stores an agent (replacing one of the same node id). */
  putAgent(agent: AgentRecord): Promise<void>;
  /** Inserts or replaces several agents at once (one transaction where the store has them). */
  putAgents(agents: readonly AgentRecord[]): Promise<void>;
  /** Every agent, by node id. */
  agents(): Promise<AgentRecord[]>;
  /**
   * Forgets an agent: its registry row, its progress in every rollout and its
   * history. False if no agent has that node id (nothing changes then).
   */
  removeAgent(nodeId: string): Promise<boolean>;

  /** Stores a new running rollout and returns it with its id (ids only grow). */
  createRollout(rollout: NewRollout): Promise<RolloutRecord>;
  /** Sets a rollout's state, why, and when it finished (null while running or paused). */
  setRolloutState(
    id: number,
    state: RolloutState,
    reason: string,
    finished: number | null,
  ): Promise<void>;
  rollout(id: number): Promise<RolloutRecord | undefined>;
  /** Every rollout, by id. */
  rollouts(): Promise<RolloutRecord[]>;

  /** Stores an agent's progress in a rollout (replacing the previous one). */
  setRolloutAgent(progress: RolloutAgentRecord): Promise<void>;
  /** `setRolloutAgent` for several records at once, in order (one transaction where the store has them). */
  setRolloutAgents(progress: readonly RolloutAgentRecord[]): Promise<void>;
  /** A rollout's agents, by node id. */
  rolloutAgents(rolloutId: number): Promise<RolloutAgentRecord[]>;
  /** `rolloutAgents` from `offset` on, at most `limit` of them, and how many there are in all. */
  rolloutAgentPage(
    rolloutId: number,
    offset: number,
    limit: number,
  ): Promise<{ total: number; agents: RolloutAgentRecord[] }>;
  /** How many of a rollout's agents are in each state (states with none absent). */
  rolloutAgentStates(rolloutId: number): Promise<Partial<Record<AgentProgressKind, number>>>;

  addHistory(entry: HistoryRecord): Promise<void>;
  /** A device's history, oldest first (all devices when `nodeId` is undefined). */
  history(nodeId?: string): Promise<HistoryRecord[]>;

  /** Stores a release manifest; it becomes its version's current one. */
  putRelease(release: ReleaseRecord): Promise<void>;
  /** Every release manifest stored, oldest first (the last of a version is its current one). */
  releases(): Promise<ReleaseRecord[]>;
  /** Stores the delegation (replacing the one stored before). */
  putDelegation(delegation: DelegationRecord): Promise<void>;
  /** The stored delegation, if any. */
  delegation(): Promise<DelegationRecord | undefined>;

  /** Stores a new token; a `ConflictError` if one of that name exists (revoked or not). */
  addToken(token: TokenRecord): Promise<void>;
  /** The token whose hash is `hash` (revoked or not). */
  tokenByHash(hash: string): Promise<TokenRecord | undefined>;
  /** Every token, oldest first. */
  tokens(): Promise<TokenRecord[]>;
  /** Marks a valid token revoked at `at`; false if no valid token has that name. */
  revokeToken(name: string, at: number): Promise<boolean>;

  /** Stores an enrolment token, or replaces the one of the same hash (its uses left). */
  putEnrollmentToken(token: EnrollmentTokenRecord): Promise<void>;
  /** The enrolment token whose hash is `hash`. */
  enrollmentToken(hash: string): Promise<EnrollmentTokenRecord | undefined>;
  /**
   * Takes one use of the enrolment token `hash` if it has one left and has not
   * expired at `now`, atomically (concurrent callers never take the same
   * use); whether a use was taken.
   */
  consumeEnrollmentToken(hash: string, now: number): Promise<boolean>;
  /** Stores an enrolled device's key (replacing its earlier one). */
  putDeviceKey(device: DeviceKeyRecord): Promise<void>;
  /** Every enrolled device's key. */
  deviceKeys(): Promise<DeviceKeyRecord[]>;
  /** Forgets an enrolled device's key; false if there was none. */
  removeDeviceKey(nodeId: string): Promise<boolean>;

  /** Appends to the audit log, dropping the oldest entries beyond its bound (`AUDIT_KEEP`). */
  addAudit(entry: AuditRecord): Promise<void>;
  /** The newest `limit` audit entries, newest first. */
  audit(limit: number): Promise<AuditRecord[]>;

  /** Adds bytes the control plane served of the blob `digest`. */
  addServed(digest: string, bytes: number): Promise<void>;
  /** Bytes served per blob digest. */
  served(): Promise<Record<string, number>>;
}
