/**
 * A `StateStore` (controlplane/state_store.ts) in memory, for tests: the
 * second implementation of the interface, so the store tests can run as a
 * contract against both, and the control plane can be run without SQLite.
 * It answers as the SQLite store does (orders, replacement, sums), records
 * are copied in and out.
 */

import type { AgentProgressKind } from "../../controlplane/agent_progress.ts";
import type {
  AgentRecord,
  DelegationRecord,
  HistoryRecord,
  NewRollout,
  PatchRecord,
  ReleaseRecord,
  RolloutAgentRecord,
  RolloutRecord,
  RolloutState,
  StateStore,
  VersionRecord,
} from "../../controlplane/state_store.ts";
import {
  AUDIT_KEEP,
  type AuditRecord,
  type DeviceKeyRecord,
  duplicateToken,
  type EnrollmentTokenRecord,
  type TokenRecord,
} from "../../controlplane/state_store.ts";

/** The control plane's state in memory. */
export class MemoryStore implements StateStore {
  #boot = 0;
  readonly #versions: VersionRecord[] = [];
  readonly #patches = new Map<string, PatchRecord>();
  readonly #agents = new Map<string, AgentRecord>();
  readonly #rollouts = new Map<number, RolloutRecord>();
  readonly #rolloutAgents = new Map<string, RolloutAgentRecord>();
  readonly #history: HistoryRecord[] = [];
  readonly #served = new Map<string, number>();
  readonly #tokens: TokenRecord[] = [];
  readonly #audit: AuditRecord[] = [];
  readonly #enrollmentTokens = new Map<string, EnrollmentTokenRecord>();
  readonly #deviceKeys = new Map<string, DeviceKeyRecord>();
  readonly #auditKeep: number;
  readonly #releases: ReleaseRecord[] = [];
  #delegation: DelegationRecord | undefined;
  closed = false;

  /** `auditKeep`: how many audit entries are kept (default `AUDIT_KEEP`, as SQLite). */
  constructor(options: { auditKeep?: number } = {}) {
    this.#auditKeep = options.auditKeep ?? AUDIT_KEEP;
  }

  nextBoot(): Promise<number> {
    return Promise.resolve(++this.#boot);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  putVersion(version: VersionRecord): Promise<void> {
    const at = this.#versions.findIndex((v) =>
      v.model === version.model && v.version === version.version
    );
    if (at >= 0) this.#versions.splice(at, 1);
    this.#versions.push({ ...version });
    return Promise.resolve();
  }

  version(model: string, version: string): Promise<VersionRecord | undefined> {
    const found = this.#versions.find((v) => v.model === model && v.version === version);
    return Promise.resolve(found && { ...found });
  }

  versions(): Promise<VersionRecord[]> {
    const sorted = [...this.#versions].sort((a, b) =>
      a.model < b.model ? -1 : a.model > b.model ? 1 : a.created - b.created
    );
    return Promise.resolve(sorted.map((v) => ({ ...v })));
  }

  putPatch(patch: PatchRecord): Promise<void> {
    this.#patches.set(`${patch.base}>${patch.target}`, { ...patch });
    return Promise.resolve();
  }

  patches(): Promise<PatchRecord[]> {
    return Promise.resolve([...this.#patches.values()].map((p) => ({ ...p })));
  }

  putAgent(agent: AgentRecord): Promise<void> {
    this.#agents.set(agent.nodeId, structuredClone(agent));
    return Promise.resolve();
  }

  putAgents(agents: readonly AgentRecord[]): Promise<void> {
    for (const agent of agents) this.#agents.set(agent.nodeId, structuredClone(agent));
    return Promise.resolve();
  }

  agents(): Promise<AgentRecord[]> {
    const sorted = [...this.#agents.values()].sort((a, b) => a.nodeId < b.nodeId ? -1 : 1);
    return Promise.resolve(sorted.map((a) => structuredClone(a)));
  }

  removeAgent(nodeId: string): Promise<boolean> {
    if (!this.#agents.delete(nodeId)) return Promise.resolve(false);
    for (const [key, a] of this.#rolloutAgents) {
      if (a.nodeId === nodeId) this.#rolloutAgents.delete(key);
    }
    for (let i = this.#history.length - 1; i >= 0; i--) {
      if (this.#history[i].nodeId === nodeId) this.#history.splice(i, 1);
    }
    return Promise.resolve(true);
  }

  createRollout(r: NewRollout): Promise<RolloutRecord> {
    const id = this.#rollouts.size + 1;
    const record: RolloutRecord = {
      ...r.plan,
      reason: "",
      id,
      model: r.model,
      version: r.version,
      digest: r.digest,
      region: r.region,
      state: "running",
      created: r.created,
      finished: null,
    };
    this.#rollouts.set(id, record);
    return Promise.resolve({ ...record });
  }

  setRolloutState(
    id: number,
    state: RolloutState,
    reason: string,
    finished: number | null,
  ): Promise<void> {
    const rollout = this.#rollouts.get(id);
    if (rollout) this.#rollouts.set(id, { ...rollout, state, reason, finished });
    return Promise.resolve();
  }

  rollout(id: number): Promise<RolloutRecord | undefined> {
    const found = this.#rollouts.get(id);
    return Promise.resolve(found && { ...found });
  }

  rollouts(): Promise<RolloutRecord[]> {
    return Promise.resolve([...this.#rollouts.values()].map((r) => ({ ...r })));
  }

  setRolloutAgent(progress: RolloutAgentRecord): Promise<void> {
    this.#rolloutAgents.set(`${progress.rolloutId}|${progress.nodeId}`, { ...progress });
    return Promise.resolve();
  }

  setRolloutAgents(progress: readonly RolloutAgentRecord[]): Promise<void> {
    for (const p of progress) this.#rolloutAgents.set(`${p.rolloutId}|${p.nodeId}`, { ...p });
    return Promise.resolve();
  }

  rolloutAgents(rolloutId: number): Promise<RolloutAgentRecord[]> {
    const rows = [...this.#rolloutAgents.values()].filter((a) => a.rolloutId === rolloutId);
    rows.sort((a, b) => a.nodeId < b.nodeId ? -1 : 1);
    return Promise.resolve(rows.map((a) => ({ ...a })));
  }

  async rolloutAgentPage(
    rolloutId: number,
    offset: number,
    limit: number,
  ): Promise<{ total: number; agents: RolloutAgentRecord[] }> {
    const all = await this.rolloutAgents(rolloutId);
    return { total: all.length, agents: all.slice(offset, offset + limit) };
  }

  rolloutAgentStates(rolloutId: number): Promise<Partial<Record<AgentProgressKind, number>>> {
    const counts: Partial<Record<AgentProgressKind, number>> = {};
    for (const a of this.#rolloutAgents.values()) {
      if (a.rolloutId === rolloutId) counts[a.state] = (counts[a.state] ?? 0) + 1;
    }
    return Promise.resolve(counts);
  }

  addHistory(entry: HistoryRecord): Promise<void> {
    this.#history.push({ ...entry });
    return Promise.resolve();
  }

  history(nodeId?: string): Promise<HistoryRecord[]> {
    const rows = this.#history.filter((h) => nodeId === undefined || h.nodeId === nodeId);
    return Promise.resolve(rows.sort((a, b) => a.at - b.at).map((h) => ({ ...h })));
  }

  putRelease(release: ReleaseRecord): Promise<void> {
    this.#releases.push({ ...release });
    return Promise.resolve();
  }

  releases(): Promise<ReleaseRecord[]> {
    return Promise.resolve(this.#releases.map((r) => ({ ...r })));
  }

  putDelegation(delegation: DelegationRecord): Promise<void> {
    this.#delegation = { ...delegation };
    return Promise.resolve();
  }

  delegation(): Promise<DelegationRecord | undefined> {
    return Promise.resolve(this.#delegation && { ...this.#delegation });
  }

  addServed(digest: string, bytes: number): Promise<void> {
    this.#served.set(digest, (this.#served.get(digest) ?? 0) + bytes);
    return Promise.resolve();
  }

  served(): Promise<Record<string, number>> {
    return Promise.resolve(Object.fromEntries(this.#served));
  }

  addToken(token: TokenRecord): Promise<void> {
    if (this.#tokens.some((t) => t.name === token.name)) {
      return Promise.reject(duplicateToken(token.name));
    }
    this.#tokens.push({ ...token });
    return Promise.resolve();
  }

  tokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const found = this.#tokens.find((t) => t.hash === hash);
    return Promise.resolve(found && { ...found });
  }

  tokens(): Promise<TokenRecord[]> {
    const sorted = [...this.#tokens].sort((a, b) =>
      a.created - b.created || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
    );
    return Promise.resolve(sorted.map((t) => ({ ...t })));
  }

  revokeToken(name: string, at: number): Promise<boolean> {
    const index = this.#tokens.findIndex((t) => t.name === name && t.revoked === null);
    if (index < 0) return Promise.resolve(false);
    this.#tokens[index] = { ...this.#tokens[index], revoked: at };
    return Promise.resolve(true);
  }

  putEnrollmentToken(token: EnrollmentTokenRecord): Promise<void> {
    this.#enrollmentTokens.set(token.hash, { ...token });
    return Promise.resolve();
  }

  enrollmentToken(hash: string): Promise<EnrollmentTokenRecord | undefined> {
    const found = this.#enrollmentTokens.get(hash);
    return Promise.resolve(found && { ...found });
  }

  consumeEnrollmentToken(hash: string, now: number): Promise<boolean> {
    // Checked and decremented with no await between: atomic in one event loop.
    const found = this.#enrollmentTokens.get(hash);
    if (!found || found.usesLeft < 1 || found.expires <= now) return Promise.resolve(false);
    this.#enrollmentTokens.set(hash, { ...found, usesLeft: found.usesLeft - 1 });
    return Promise.resolve(true);
  }

  putDeviceKey(device: DeviceKeyRecord): Promise<void> {
    this.#deviceKeys.set(device.nodeId, { ...device });
    return Promise.resolve();
  }

  deviceKeys(): Promise<DeviceKeyRecord[]> {
    return Promise.resolve([...this.#deviceKeys.values()].map((d) => ({ ...d })));
  }

  removeDeviceKey(nodeId: string): Promise<boolean> {
    return Promise.resolve(this.#deviceKeys.delete(nodeId));
  }

  addAudit(entry: AuditRecord): Promise<void> {
    this.#audit.push({ ...entry });
    if (this.#audit.length > this.#auditKeep) {
      this.#audit.splice(0, this.#audit.length - this.#auditKeep);
    }
    return Promise.resolve();
  }

  audit(limit: number): Promise<AuditRecord[]> {
    const newest = limit > 0 ? this.#audit.slice(-limit) : [];
    return Promise.resolve(newest.reverse().map((a) => ({ ...a })));
  }
}
