/**
 * The control plane's state in an embedded SQLite database (`node:sqlite`) at
 * `DATA/controlplane.sqlite`: the `StateStore` (state_store.ts) the control
 * plane runs on. The only SQL of the control plane is here. Databases made by
 * earlier versions open as they are: rollout columns added since the first
 * version are added at open.
 *
 * node:sqlite is synchronous; the methods return settled Promises so the
 * control plane is written against the asynchronous interface. Statements are
 * prepared once and kept (one per SQL text, a fixed set); `putAgents` writes
 * a batch of agents in one transaction.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { AgentProgressKind } from "./agent_progress.ts";
import {
  AUDIT_KEEP,
  type AuditRecord,
  type DeviceKeyRecord,
  duplicateToken,
  type EnrollmentTokenRecord,
  type Role,
  type TokenRecord,
} from "./state_store.ts";
import type {
  AgentRecord,
  DelegationRecord,
  HistoryEvent,
  HistoryRecord,
  NewRollout,
  PatchRecord,
  ReleaseRecord,
  RolloutAgentRecord,
  RolloutRecord,
  RolloutState,
  StateStore,
  Strategy,
  VersionRecord,
} from "./state_store.ts";

/** How long a write waits for another connection's write to finish. */
const BUSY_TIMEOUT_MS = 5000;

/** The database's file name under the data directory. */
export const DATABASE_FILE = "controlplane.sqlite";

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
CREATE TABLE IF NOT EXISTS releases (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
  counter INTEGER NOT NULL, digest TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS delegation (
  id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, digest TEXT NOT NULL,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
  name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created INTEGER NOT NULL,
  revoked INTEGER);
CREATE TABLE IF NOT EXISTS enrollment_tokens (
  hash TEXT PRIMARY KEY, uses_left INTEGER NOT NULL, expires INTEGER NOT NULL,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_keys (
  node_id TEXT PRIMARY KEY, region TEXT NOT NULL, public_key TEXT NOT NULL,
  enrolled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, token TEXT, role TEXT,
  action TEXT NOT NULL, target TEXT, status INTEGER NOT NULL, reason TEXT NOT NULL);
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

type Row = Record<string, unknown>;

/** The control plane's state in SQLite. */
export class SqliteStore implements StateStore {
  readonly #db: DatabaseSync;
  readonly #auditKeep: number;
  /** Prepared statements by SQL text (the SQL texts are this file's constants: a bounded set). */
  readonly #statements = new Map<string, StatementSync>();

  private constructor(db: DatabaseSync, auditKeep: number) {
    this.#db = db;
    this.#auditKeep = auditKeep;
  }

  /**
   * Opens (creating or migrating if needed) the database at `path`. Another
   * process may have it open too (`poolboy token` beside a running control
   * plane): WAL lets readers and one writer share it, and a writer waits up
   * to `BUSY_TIMEOUT_MS` for the other's write to finish. `auditKeep`: how
   * many audit entries are kept (default `AUDIT_KEEP`; tests use fewer).
   */
  static open(path: string, options: { auditKeep?: number } = {}): Promise<SqliteStore> {
    const db = new DatabaseSync(path);
    db.exec(
      `PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;`,
    );
    db.exec(SCHEMA);
    const have = new Set(
      (db.prepare("PRAGMA table_info(rollouts)").all() as Row[]).map((r) => String(r.name)),
    );
    for (const column of ROLLOUT_COLUMNS) {
      if (!have.has(column.split(" ")[0])) db.exec(`ALTER TABLE rollouts ADD COLUMN ${column}`);
    }
    const agentColumns = new Set(
      (db.prepare("PRAGMA table_info(agents)").all() as Row[]).map((r) => String(r.name)),
    );
    // Issue 16: the agent's last reported counter, beside the running total in `served`.
    if (!agentColumns.has("served_reported")) {
      db.exec("ALTER TABLE agents ADD COLUMN served_reported INTEGER");
    }
    return Promise.resolve(new SqliteStore(db, options.auditKeep ?? AUDIT_KEEP));
  }

  /** The statement for `sql`, prepared at its first use. */
  #prepared(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  close(): Promise<void> {
    this.#statements.clear();
    this.#db.close();
    return Promise.resolve();
  }

  nextBoot(): Promise<number> {
    const row = this.#prepared("SELECT value FROM meta WHERE key = 'boot'").get() as
      | Row
      | undefined;
    const boot = row ? Number(row.value) + 1 : 1;
    this.#prepared("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot', ?)").run(
      String(boot),
    );
    return Promise.resolve(boot);
  }

  // --- versions ---

  putVersion(v: VersionRecord): Promise<void> {
    this.#prepared(
      "INSERT OR REPLACE INTO versions (model, version, digest, size, created) VALUES (?, ?, ?, ?, ?)",
    ).run(v.model, v.version, v.digest, v.size, v.created);
    return Promise.resolve();
  }

  version(model: string, version: string): Promise<VersionRecord | undefined> {
    const row = this.#prepared("SELECT * FROM versions WHERE model = ? AND version = ?").get(
      model,
      version,
    ) as Row | undefined;
    return Promise.resolve(row ? versionOf(row) : undefined);
  }

  versions(): Promise<VersionRecord[]> {
    const rows = this.#prepared("SELECT * FROM versions ORDER BY model, created").all() as Row[];
    return Promise.resolve(rows.map(versionOf));
  }

  // --- patches ---

  putPatch(p: PatchRecord): Promise<void> {
    this.#prepared(
      "INSERT OR REPLACE INTO patches (base, target, digest, size) VALUES (?, ?, ?, ?)",
    ).run(p.base, p.target, p.digest, p.size);
    return Promise.resolve();
  }

  patches(): Promise<PatchRecord[]> {
    const rows = this.#prepared("SELECT * FROM patches").all() as Row[];
    return Promise.resolve(rows.map((r) => ({
      base: String(r.base),
      target: String(r.target),
      digest: String(r.digest),
      size: Number(r.size),
    })));
  }

  // --- agents ---

  putAgent(a: AgentRecord): Promise<void> {
    this.#prepared(
      `INSERT OR REPLACE INTO agents (node_id, region, host, udp_port, p2p_port, active, held, served,
       served_reported, started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      a.nodeId,
      a.region,
      a.host,
      a.udpPort,
      a.p2pPort,
      JSON.stringify(a.active),
      JSON.stringify(a.held),
      a.served,
      a.servedReported ?? null,
      a.startedAt,
      a.lastSeen,
    );
    return Promise.resolve();
  }

  putAgents(agents: readonly AgentRecord[]): Promise<void> {
    return this.#transaction(() => {
      for (const a of agents) void this.putAgent(a);
    });
  }

  /** Runs `writes` (synchronous statements) in one transaction. */
  #transaction(writes: () => void): Promise<void> {
    this.#db.exec("BEGIN");
    try {
      writes();
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      return Promise.reject(err);
    }
    return Promise.resolve();
  }

  agents(): Promise<AgentRecord[]> {
    const rows = this.#prepared("SELECT * FROM agents ORDER BY node_id").all() as Row[];
    return Promise.resolve(rows.map((r) => ({
      nodeId: String(r.node_id),
      region: String(r.region),
      host: String(r.host),
      udpPort: Number(r.udp_port),
      p2pPort: Number(r.p2p_port),
      active: JSON.parse(String(r.active)) as Record<string, string>,
      held: JSON.parse(String(r.held)) as string[],
      served: Number(r.served),
      // Absent as written (records from before issue 16, and those without it).
      ...(r.served_reported === null || r.served_reported === undefined
        ? {}
        : { servedReported: Number(r.served_reported) }),
      startedAt: Number(r.started_at),
      lastSeen: Number(r.last_seen),
    })));
  }

  removeAgent(nodeId: string): Promise<boolean> {
    const result = this.#prepared("DELETE FROM agents WHERE node_id = ?").run(nodeId);
    if (Number(result.changes) === 0) return Promise.resolve(false);
    this.#prepared("DELETE FROM rollout_agents WHERE node_id = ?").run(nodeId);
    this.#prepared("DELETE FROM history WHERE node_id = ?").run(nodeId);
    return Promise.resolve(true);
  }

  // --- rollouts ---

  async createRollout(r: NewRollout): Promise<RolloutRecord> {
    const { plan } = r;
    const result = this.#prepared(
      `INSERT INTO rollouts (model, version, digest, region, state, created, strategy, canary,
       canary_percent, batch, max_failures, rollback) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      r.model,
      r.version,
      r.digest,
      r.region,
      r.created,
      plan.strategy,
      plan.canary,
      plan.canaryPercent ? 1 : 0,
      plan.batch,
      plan.maxFailures,
      plan.rollback ? 1 : 0,
    );
    return (await this.rollout(Number(result.lastInsertRowid)))!;
  }

  setRolloutState(
    id: number,
    state: RolloutState,
    reason: string,
    finished: number | null,
  ): Promise<void> {
    this.#prepared("UPDATE rollouts SET state = ?, reason = ?, finished = ? WHERE id = ?").run(
      state,
      reason,
      finished,
      id,
    );
    return Promise.resolve();
  }

  rollouts(): Promise<RolloutRecord[]> {
    const rows = this.#prepared("SELECT * FROM rollouts ORDER BY id").all() as Row[];
    return Promise.resolve(rows.map(rolloutOf));
  }

  rollout(id: number): Promise<RolloutRecord | undefined> {
    const row = this.#prepared("SELECT * FROM rollouts WHERE id = ?").get(id) as Row | undefined;
    return Promise.resolve(row ? rolloutOf(row) : undefined);
  }

  setRolloutAgent(p: RolloutAgentRecord): Promise<void> {
    this.#prepared(
      "INSERT OR REPLACE INTO rollout_agents (rollout_id, node_id, state, detail, updated) VALUES (?, ?, ?, ?, ?)",
    ).run(p.rolloutId, p.nodeId, p.state, p.detail, p.updated);
    return Promise.resolve();
  }

  setRolloutAgents(progress: readonly RolloutAgentRecord[]): Promise<void> {
    return this.#transaction(() => {
      for (const p of progress) void this.setRolloutAgent(p);
    });
  }

  rolloutAgents(rolloutId: number): Promise<RolloutAgentRecord[]> {
    const rows = this.#prepared(
      "SELECT * FROM rollout_agents WHERE rollout_id = ? ORDER BY node_id",
    ).all(rolloutId) as Row[];
    return Promise.resolve(rows.map(rolloutAgentOf));
  }

  rolloutAgentPage(
    rolloutId: number,
    offset: number,
    limit: number,
  ): Promise<{ total: number; agents: RolloutAgentRecord[] }> {
    const total = this.#prepared("SELECT COUNT(*) AS n FROM rollout_agents WHERE rollout_id = ?")
      .get(rolloutId) as Row;
    const rows = this.#prepared(
      "SELECT * FROM rollout_agents WHERE rollout_id = ? ORDER BY node_id LIMIT ? OFFSET ?",
    ).all(rolloutId, limit, offset) as Row[];
    return Promise.resolve({ total: Number(total.n), agents: rows.map(rolloutAgentOf) });
  }

  rolloutAgentStates(rolloutId: number): Promise<Partial<Record<AgentProgressKind, number>>> {
    const rows = this.#prepared(
      "SELECT state, COUNT(*) AS n FROM rollout_agents WHERE rollout_id = ? GROUP BY state ORDER BY state",
    ).all(rolloutId) as Row[];
    const counts: Partial<Record<AgentProgressKind, number>> = {};
    for (const r of rows) counts[String(r.state) as AgentProgressKind] = Number(r.n);
    return Promise.resolve(counts);
  }

  // --- device history ---

  addHistory(h: HistoryRecord): Promise<void> {
    this.#prepared(
      "INSERT INTO history (node_id, model, at, event, digest, detail) VALUES (?, ?, ?, ?, ?, ?)",
    ).run(h.nodeId, h.model, h.at, h.event, h.digest, h.detail);
    return Promise.resolve();
  }

  history(nodeId?: string): Promise<HistoryRecord[]> {
    const rows =
      (nodeId === undefined
        ? this.#prepared("SELECT * FROM history ORDER BY at").all()
        : this.#prepared("SELECT * FROM history WHERE node_id = ? ORDER BY at").all(
          nodeId,
        )) as Row[];
    return Promise.resolve(rows.map((r) => ({
      nodeId: String(r.node_id),
      model: String(r.model),
      at: Number(r.at),
      event: String(r.event) as HistoryEvent,
      digest: String(r.digest),
      detail: String(r.detail),
    })));
  }

  // --- signed release documents ---

  putRelease(r: ReleaseRecord): Promise<void> {
    this.#prepared(
      "INSERT INTO releases (model, version, counter, digest, created) VALUES (?, ?, ?, ?, ?)",
    ).run(r.model, r.version, r.counter, r.digest, r.created);
    return Promise.resolve();
  }

  releases(): Promise<ReleaseRecord[]> {
    const rows = this.#prepared("SELECT * FROM releases ORDER BY seq").all() as Row[];
    return Promise.resolve(rows.map((r) => ({
      model: String(r.model),
      version: String(r.version),
      counter: Number(r.counter),
      digest: String(r.digest),
      created: Number(r.created),
    })));
  }

  putDelegation(d: DelegationRecord): Promise<void> {
    this.#prepared(
      "INSERT OR REPLACE INTO delegation (id, version, digest, created) VALUES (1, ?, ?, ?)",
    ).run(d.version, d.digest, d.created);
    return Promise.resolve();
  }

  delegation(): Promise<DelegationRecord | undefined> {
    const r = this.#prepared("SELECT * FROM delegation WHERE id = 1").get() as Row | undefined;
    return Promise.resolve(
      r && { version: Number(r.version), digest: String(r.digest), created: Number(r.created) },
    );
  }

  // --- operators' tokens and the audit log ---

  addToken(t: TokenRecord): Promise<void> {
    const exists = this.#prepared("SELECT 1 FROM tokens WHERE name = ?").get(t.name);
    if (exists) return Promise.reject(duplicateToken(t.name));
    this.#prepared(
      "INSERT INTO tokens (name, role, hash, created, revoked) VALUES (?, ?, ?, ?, ?)",
    ).run(t.name, t.role, t.hash, t.created, t.revoked);
    return Promise.resolve();
  }

  tokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const row = this.#prepared("SELECT * FROM tokens WHERE hash = ?").get(hash) as
      | Row
      | undefined;
    return Promise.resolve(row ? tokenOf(row) : undefined);
  }

  tokens(): Promise<TokenRecord[]> {
    const rows = this.#prepared("SELECT * FROM tokens ORDER BY created, name").all() as Row[];
    return Promise.resolve(rows.map(tokenOf));
  }

  revokeToken(name: string, at: number): Promise<boolean> {
    const result = this.#prepared(
      "UPDATE tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
    ).run(at, name);
    return Promise.resolve(Number(result.changes) === 1);
  }

  // --- device enrolment ---

  putEnrollmentToken(t: EnrollmentTokenRecord): Promise<void> {
    this.#prepared(
      "INSERT OR REPLACE INTO enrollment_tokens (hash, uses_left, expires, created) VALUES (?, ?, ?, ?)",
    ).run(t.hash, t.usesLeft, t.expires, t.created);
    return Promise.resolve();
  }

  enrollmentToken(hash: string): Promise<EnrollmentTokenRecord | undefined> {
    const row = this.#prepared("SELECT * FROM enrollment_tokens WHERE hash = ?").get(hash) as
      | Row
      | undefined;
    return Promise.resolve(
      row
        ? {
          hash: row.hash as string,
          usesLeft: Number(row.uses_left),
          expires: Number(row.expires),
          created: Number(row.created),
        }
        : undefined,
    );
  }

  consumeEnrollmentToken(hash: string, now: number): Promise<boolean> {
    // One statement: SQLite checks and decrements together, so two callers
    // (or two processes) never take the same last use.
    const result = this.#prepared(
      "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE hash = ? AND uses_left > 0 AND expires > ?",
    ).run(hash, now);
    return Promise.resolve(Number(result.changes) === 1);
  }

  putDeviceKey(d: DeviceKeyRecord): Promise<void> {
    this.#prepared(
      "INSERT OR REPLACE INTO device_keys (node_id, region, public_key, enrolled) VALUES (?, ?, ?, ?)",
    ).run(d.nodeId, d.region, d.publicKey, d.enrolled);
    return Promise.resolve();
  }

  deviceKeys(): Promise<DeviceKeyRecord[]> {
    const rows = this.#prepared("SELECT * FROM device_keys ORDER BY node_id").all() as Row[];
    return Promise.resolve(rows.map((row) => ({
      nodeId: row.node_id as string,
      region: row.region as string,
      publicKey: row.public_key as string,
      enrolled: Number(row.enrolled),
    })));
  }

  removeDeviceKey(nodeId: string): Promise<boolean> {
    const result = this.#prepared("DELETE FROM device_keys WHERE node_id = ?").run(nodeId);
    return Promise.resolve(Number(result.changes) === 1);
  }

  addAudit(a: AuditRecord): Promise<void> {
    const result = this.#prepared(
      "INSERT INTO audit (at, token, role, action, target, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ).run(a.at, a.token, a.role, a.action, a.target, a.status, a.reason);
    // Ids only grow (AUTOINCREMENT): everything older than the newest `keep` goes.
    this.#prepared("DELETE FROM audit WHERE id <= ?").run(
      Number(result.lastInsertRowid) - this.#auditKeep,
    );
    return Promise.resolve();
  }

  audit(limit: number): Promise<AuditRecord[]> {
    const rows = this.#prepared("SELECT * FROM audit ORDER BY id DESC LIMIT ?").all(
      limit,
    ) as Row[];
    return Promise.resolve(rows.map((r) => ({
      at: Number(r.at),
      token: r.token === null ? null : String(r.token),
      role: r.role === null ? null : String(r.role) as Role,
      action: String(r.action),
      target: r.target === null ? null : String(r.target),
      status: Number(r.status),
      reason: String(r.reason),
    })));
  }

  // --- bytes served by the control plane ---

  addServed(digest: string, bytes: number): Promise<void> {
    this.#prepared(
      "INSERT INTO served (digest, bytes) VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET bytes = bytes + excluded.bytes",
    ).run(digest, bytes);
    return Promise.resolve();
  }

  served(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const r of this.#prepared("SELECT * FROM served").all() as Row[]) {
      out[String(r.digest)] = Number(r.bytes);
    }
    return Promise.resolve(out);
  }
}

function versionOf(r: Row): VersionRecord {
  return {
    model: String(r.model),
    version: String(r.version),
    digest: String(r.digest),
    size: Number(r.size),
    created: Number(r.created),
  };
}

function rolloutOf(r: Row): RolloutRecord {
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

function tokenOf(r: Row): TokenRecord {
  return {
    name: String(r.name),
    role: String(r.role) as Role,
    hash: String(r.hash),
    created: Number(r.created),
    revoked: r.revoked === null ? null : Number(r.revoked),
  };
}

/** A `rollout_agents` row as its record. */
function rolloutAgentOf(r: Row): RolloutAgentRecord {
  return {
    rolloutId: Number(r.rollout_id),
    nodeId: String(r.node_id),
    state: String(r.state) as AgentProgressKind,
    detail: String(r.detail),
    updated: Number(r.updated),
  };
}
