/**
 * The control plane's durable state: an embedded SQLite database
 * (`node:sqlite`) at `DATA/controlplane.sqlite`, holding what must survive a
 * restart — model versions, cached patches, the agent registry, rollouts and
 * each agent's progress in them, and the bytes served. Elections are not
 * stored: after a restart they are run again from the rollouts (agents that
 * finished say so in their heartbeats).
 *
 * Digests are stored as lowercase hex.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

/** A stored model version. */
export interface VersionRow {
  readonly model: string;
  readonly version: string;
  readonly digest: string;
  readonly size: number;
  readonly created: number;
}

/** An agent as last heard from. */
export interface AgentRow {
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  readonly udpPort: number;
  readonly p2pPort: number;
  /** Active model digests by model name. */
  readonly active: Record<string, string>;
  readonly held: string[];
  /** Bytes its blob server reports having sent. */
  readonly served: number;
  readonly startedAt: number;
  readonly lastSeen: number;
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

/** A rollout of one model version to a region or the whole fleet. */
export interface RolloutRow extends RolloutPlan {
  readonly id: number;
  readonly model: string;
  readonly version: string;
  readonly digest: string;
  readonly region: string | null;
  readonly state: RolloutState;
  readonly created: number;
  readonly finished: number | null;
  /** Why it halted, was aborted or superseded. */
  readonly reason: string;
}

/** One agent's progress in a rollout. */
export interface RolloutAgentRow {
  readonly rolloutId: number;
  readonly nodeId: string;
  readonly state: string;
  readonly detail: string;
  readonly updated: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
  model TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  created INTEGER NOT NULL, PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS patches (
  base TEXT NOT NULL, target TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (base, target));
CREATE TABLE IF NOT EXISTS agents (
  node_id TEXT PRIMARY KEY, region TEXT NOT NULL, host TEXT NOT NULL, udp_port INTEGER NOT NULL,
  p2p_port INTEGER NOT NULL, active TEXT NOT NULL, held TEXT NOT NULL, served INTEGER NOT NULL,
  started_at INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
  digest TEXT NOT NULL, region TEXT, state TEXT NOT NULL, created INTEGER NOT NULL,
  finished INTEGER);
CREATE TABLE IF NOT EXISTS rollout_agents (
  rollout_id INTEGER NOT NULL, node_id TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL,
  updated INTEGER NOT NULL, PRIMARY KEY (rollout_id, node_id));
CREATE TABLE IF NOT EXISTS served (digest TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history (
  node_id TEXT NOT NULL, model TEXT NOT NULL, at INTEGER NOT NULL, event TEXT NOT NULL,
  digest TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_node ON history (node_id, at);
`;

/** Columns added to rollouts after its first version (added to older databases at open). */
const ROLLOUT_COLUMNS = [
  "strategy TEXT NOT NULL DEFAULT 'all'",
  "canary INTEGER NOT NULL DEFAULT 1",
  "canary_percent INTEGER NOT NULL DEFAULT 0",
  "batch INTEGER NOT NULL DEFAULT 1",
  "max_failures REAL NOT NULL DEFAULT 0.2",
  "rollback INTEGER NOT NULL DEFAULT 0",
  "reason TEXT NOT NULL DEFAULT ''",
];

/** One entry of a device's history. */
export interface HistoryRow {
  readonly nodeId: string;
  readonly model: string;
  readonly at: number;
  /** "running" (it reported this version active) or "failed". */
  readonly event: string;
  readonly digest: string;
  readonly detail: string;
}

type Row = Record<string, unknown>;

/** The control plane's database. */
export class StateDb {
  readonly #db: DatabaseSync;

  /** Opens (creating if needed) the database at `path`. */
  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    this.#db.exec(SCHEMA);
    const have = new Set(
      (this.#db.prepare("PRAGMA table_info(rollouts)").all() as Row[]).map((r) => String(r.name)),
    );
    for (const column of ROLLOUT_COLUMNS) {
      if (!have.has(column.split(" ")[0])) {
        this.#db.exec(`ALTER TABLE rollouts ADD COLUMN ${column}`);
      }
    }
  }

  close(): void {
    this.#db.close();
  }

  /** Increments and returns the boot counter (part of every election's id, so ids never repeat). */
  nextBoot(): number {
    const row = this.#db.prepare("SELECT value FROM meta WHERE key = 'boot'").get() as
      | Row
      | undefined;
    const boot = row ? Number(row.value) + 1 : 1;
    this.#db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot', ?)").run(
      String(boot),
    );
    return boot;
  }

  // --- versions ---

  putVersion(v: VersionRow): void {
    this.#db.prepare(
      "INSERT OR REPLACE INTO versions (model, version, digest, size, created) VALUES (?, ?, ?, ?, ?)",
    ).run(v.model, v.version, v.digest, v.size, v.created);
  }

  version(model: string, version: string): VersionRow | undefined {
    const row = this.#db.prepare("SELECT * FROM versions WHERE model = ? AND version = ?").get(
      model,
      version,
    ) as Row | undefined;
    return row ? versionOf(row) : undefined;
  }

  versions(): VersionRow[] {
    return (this.#db.prepare("SELECT * FROM versions ORDER BY model, created").all() as Row[]).map(
      versionOf,
    );
  }

  /** The version of `model` whose file has `digest`, if any. */
  versionByDigest(model: string, digest: string): VersionRow | undefined {
    const row = this.#db.prepare("SELECT * FROM versions WHERE model = ? AND digest = ?").get(
      model,
      digest,
    ) as Row | undefined;
    return row ? versionOf(row) : undefined;
  }

  // --- patches ---

  putPatch(base: string, target: string, digest: string, size: number): void {
    this.#db.prepare(
      "INSERT OR REPLACE INTO patches (base, target, digest, size) VALUES (?, ?, ?, ?)",
    ).run(base, target, digest, size);
  }

  patch(base: string, target: string): { digest: string; size: number } | undefined {
    const row = this.#db.prepare("SELECT digest, size FROM patches WHERE base = ? AND target = ?")
      .get(base, target) as Row | undefined;
    return row ? { digest: String(row.digest), size: Number(row.size) } : undefined;
  }

  patches(): { base: string; target: string; digest: string; size: number }[] {
    return (this.#db.prepare("SELECT * FROM patches").all() as Row[]).map((r) => ({
      base: String(r.base),
      target: String(r.target),
      digest: String(r.digest),
      size: Number(r.size),
    }));
  }

  // --- agents ---

  putAgent(a: AgentRow): void {
    this.#db.prepare(
      `INSERT OR REPLACE INTO agents (node_id, region, host, udp_port, p2p_port, active, held, served,
       started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      a.nodeId,
      a.region,
      a.host,
      a.udpPort,
      a.p2pPort,
      JSON.stringify(a.active),
      JSON.stringify(a.held),
      a.served,
      a.startedAt,
      a.lastSeen,
    );
  }

  agents(): AgentRow[] {
    return (this.#db.prepare("SELECT * FROM agents ORDER BY node_id").all() as Row[]).map((r) => ({
      nodeId: String(r.node_id),
      region: String(r.region),
      host: String(r.host),
      udpPort: Number(r.udp_port),
      p2pPort: Number(r.p2p_port),
      active: JSON.parse(String(r.active)),
      held: JSON.parse(String(r.held)),
      served: Number(r.served),
      startedAt: Number(r.started_at),
      lastSeen: Number(r.last_seen),
    }));
  }

  // --- rollouts ---

  createRollout(
    model: string,
    version: string,
    digest: string,
    region: string | null,
    plan: RolloutPlan = DEFAULT_PLAN,
  ): number {
    const result = this.#db.prepare(
      `INSERT INTO rollouts (model, version, digest, region, state, created, strategy, canary,
       canary_percent, batch, max_failures, rollback) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      model,
      version,
      digest,
      region,
      Date.now(),
      plan.strategy,
      plan.canary,
      plan.canaryPercent ? 1 : 0,
      plan.batch,
      plan.maxFailures,
      plan.rollback ? 1 : 0,
    );
    return Number(result.lastInsertRowid);
  }

  finishRollout(id: number): void {
    this.setRolloutState(id, "done", "");
  }

  /** Sets a rollout's state (and why); terminal states get a finish time. */
  setRolloutState(id: number, state: RolloutState, reason: string): void {
    const finished = state === "running" || state === "paused" ? null : Date.now();
    this.#db.prepare("UPDATE rollouts SET state = ?, reason = ?, finished = ? WHERE id = ?").run(
      state,
      reason,
      finished,
      id,
    );
  }

  /** Marks every unfinished rollout of `model` other than `keep` superseded by it. */
  supersedeRollouts(model: string, keep: number): void {
    this.#db.prepare(
      `UPDATE rollouts SET state = 'superseded', reason = ?, finished = ?
       WHERE model = ? AND id != ? AND state IN ('running', 'paused', 'halted')`,
    ).run(`superseded by rollout ${keep}`, Date.now(), model, keep);
  }

  rollouts(): RolloutRow[] {
    return (this.#db.prepare("SELECT * FROM rollouts ORDER BY id").all() as Row[]).map(rolloutOf);
  }

  rollout(id: number): RolloutRow | undefined {
    const row = this.#db.prepare("SELECT * FROM rollouts WHERE id = ?").get(id) as Row | undefined;
    return row ? rolloutOf(row) : undefined;
  }

  setRolloutAgent(rolloutId: number, nodeId: string, state: string, detail: string): void {
    this.#db.prepare(
      "INSERT OR REPLACE INTO rollout_agents (rollout_id, node_id, state, detail, updated) VALUES (?, ?, ?, ?, ?)",
    ).run(rolloutId, nodeId, state, detail, Date.now());
  }

  rolloutAgents(rolloutId: number): RolloutAgentRow[] {
    return (this.#db.prepare("SELECT * FROM rollout_agents WHERE rollout_id = ? ORDER BY node_id")
      .all(rolloutId) as Row[]).map((r) => ({
        rolloutId: Number(r.rollout_id),
        nodeId: String(r.node_id),
        state: String(r.state),
        detail: String(r.detail),
        updated: Number(r.updated),
      }));
  }

  // --- device history ---

  addHistory(h: HistoryRow): void {
    this.#db.prepare(
      "INSERT INTO history (node_id, model, at, event, digest, detail) VALUES (?, ?, ?, ?, ?, ?)",
    ).run(h.nodeId, h.model, h.at, h.event, h.digest, h.detail);
  }

  /** A device's history, oldest first (all devices when `nodeId` is undefined). */
  history(nodeId?: string): HistoryRow[] {
    const rows =
      (nodeId === undefined
        ? this.#db.prepare("SELECT * FROM history ORDER BY at").all()
        : this.#db.prepare("SELECT * FROM history WHERE node_id = ? ORDER BY at").all(
          nodeId,
        )) as Row[];
    return rows.map((r) => ({
      nodeId: String(r.node_id),
      model: String(r.model),
      at: Number(r.at),
      event: String(r.event),
      digest: String(r.digest),
      detail: String(r.detail),
    }));
  }

  // --- bytes served by the control plane ---

  addServed(digest: string, bytes: number): void {
    this.#db.prepare(
      "INSERT INTO served (digest, bytes) VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET bytes = bytes + excluded.bytes",
    ).run(digest, bytes);
  }

  served(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.#db.prepare("SELECT * FROM served").all() as Row[]) {
      out[String(r.digest)] = Number(r.bytes);
    }
    return out;
  }
}

function versionOf(r: Row): VersionRow {
  return {
    model: String(r.model),
    version: String(r.version),
    digest: String(r.digest),
    size: Number(r.size),
    created: Number(r.created),
  };
}

function rolloutOf(r: Row): RolloutRow {
  return {
    strategy: String(r.strategy) as Strategy,
    canary: Number(r.canary),
    canaryPercent: Number(r.canary_percent) === 1,
    batch: Number(r.batch),
    maxFailures: Number(r.max_failures),
    rollback: Number(r.rollback) === 1,
    reason: String(r.reason),
    id: Number(r.id),
    model: String(r.model),
    version: String(r.version),
    digest: String(r.digest),
    region: r.region === null ? null : String(r.region),
    state: String(r.state) as RolloutState,
    created: Number(r.created),
    finished: r.finished === null ? null : Number(r.finished),
  };
}
