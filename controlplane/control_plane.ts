/**
 * The control plane process: the model store and patch cache, the agent
 * registry, rollouts and their elections, a blob server for leaders, the UDP
 * control endpoint and the operators' HTTP API, all bound to one address.
 *
 * Rollouts are reconciled every `tickMs`: each online agent in a running
 * rollout's scope that does not yet run the target joins the election of its
 * (rollout, region, base) — base being the digest it runs now, or none — and
 * each election is one patch (or, without a usable base, the whole file)
 * fetched once from here by its leader and re-seeded by it to the others.
 * A rollout is done when every registered agent in its scope runs the target.
 *
 * @module
 */

import type { Announce, ControlMessage, Heartbeat, Status } from "../transfer/control_messages.ts";
import { fromHex, toHex } from "../kernel/blake3.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { ControlSocket, type UdpAddress } from "../transfer/control_socket.ts";
import { DEFAULT_CP_P2P_PORT, DEFAULT_CP_UDP_PORT } from "../transfer/default_ports.ts";
import { DEFAULT_ELECTION_TIMING, Election, type ElectionTiming } from "./election.ts";
import { PatchCache } from "./patch_cache.ts";
import type { AgentRow, RolloutPlan, RolloutRow, RolloutState, VersionRow } from "./state_db.ts";
import { DEFAULT_PLAN, StateDb } from "./state_db.ts";

/** Options of `ControlPlane.start`. */
export interface ControlPlaneOptions {
  readonly bind: string;
  readonly dataDir: string;
  readonly udpPort?: number;
  readonly p2pPort?: number;
  readonly httpPort?: number;
  /** An agent silent this long is offline (default 10 s). */
  readonly agentTimeoutMs?: number;
  readonly election?: Partial<ElectionTiming>;
  /** Reconcile period (default 200 ms). */
  readonly tickMs?: number;
  /** Log lines (timeline events) go here; default: none. */
  readonly log?: (line: string) => void;
}

/** Counters of datagrams the control plane refused. */
export interface DropCounters {
  /** From an address that is not the sender's registered one, or from an unknown node. */
  unexpectedSender: number;
  /** For an election the control plane does not know (e.g. from before a restart). */
  unknownElection: number;
  /** A message type the control plane never receives (e.g. an Announce). */
  wrongDirection: number;
}

interface ElectionEntry {
  readonly election: Election;
  readonly rolloutId: number;
  readonly key: string;
}

/** A running control plane. */
export class ControlPlane {
  readonly bind: string;
  readonly db: StateDb;
  readonly store: BlobStore;
  readonly patches: PatchCache;
  readonly blobServer: BlobServer;
  readonly socket: ControlSocket;
  readonly boot: number;
  readonly drops: DropCounters = { unexpectedSender: 0, unknownElection: 0, wrongDirection: 0 };
  readonly agents = new Map<string, AgentRow>();
  readonly #elections = new Map<string, ElectionEntry>();
  /** Leaders of failed elections, per (rollout, key): they do not lead again. */
  readonly #excluded = new Map<string, Set<string>>();
  /** Elections of finished or superseded rollouts, kept for the status report. */
  readonly #pastElections: ElectionEntry[] = [];
  readonly #timing: ElectionTiming;
  readonly #agentTimeoutMs: number;
  readonly #log: (line: string) => void;
  #electionSeq = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #receiving: Promise<void> | undefined;
  #servedFlushed = new Map<string, number>();
  #patchErrors = new Map<string, string>();
  #closed = false;

  private constructor(
    options: ControlPlaneOptions,
    db: StateDb,
    store: BlobStore,
    blobServer: BlobServer,
    socket: ControlSocket,
  ) {
    this.bind = options.bind;
    this.db = db;
    this.store = store;
    this.blobServer = blobServer;
    this.socket = socket;
    this.patches = new PatchCache(store, db);
    this.boot = db.nextBoot();
    this.#timing = { ...DEFAULT_ELECTION_TIMING, ...options.election };
    this.#agentTimeoutMs = options.agentTimeoutMs ?? 10_000;
    this.#log = options.log ?? (() => {});
    for (const agent of db.agents()) this.agents.set(agent.nodeId, agent);
  }

  /** Opens the state under `dataDir` and binds the UDP and blob ports. */
  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    await Deno.mkdir(options.dataDir, { recursive: true });
    const db = new StateDb(`${options.dataDir}/controlplane.sqlite`);
    const store = await BlobStore.open(`${options.dataDir}/blobs`);
    const socket = ControlSocket.open(options.bind, options.udpPort ?? DEFAULT_CP_UDP_PORT);
    const blobServer = BlobServer.start({
      hostname: options.bind,
      port: options.p2pPort ?? DEFAULT_CP_P2P_PORT,
      store,
    });
    const cp = new ControlPlane(options, db, store, blobServer, socket);
    cp.#receiving = cp.#receive();
    const tickMs = options.tickMs ?? 200;
    cp.#timer = setInterval(() => cp.tick(Date.now()), tickMs);
    cp.#log(`control plane boot ${cp.boot}: udp ${socket.port}, blobs ${blobServer.port}`);
    return cp;
  }

  /** Stops everything; state is already on disk. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#flushServed();
    this.socket.close();
    await this.#receiving;
    await this.blobServer.close();
    this.db.close();
  }

  // --- operator actions (the HTTP API calls these) ---

  /** Stores a version's file from a stream; returns its row and the patches prepared for it. */
  async publish(
    model: string,
    version: string,
    body: ReadableStream<Uint8Array>,
  ): Promise<{ version: VersionRow; patches: { from: string; digest: string; size: number }[] }> {
    const { digest, size } = await this.store.importStream(body);
    const hex = toHex(digest);
    const existing = this.db.version(model, version);
    if (existing && existing.digest !== hex) {
      const used = this.db.versions().some((v) => v.digest === hex) ||
        this.db.patches().some((p) => p.digest === hex);
      if (!used) await this.store.remove(digest);
      throw new ConflictError(
        `${model} ${version} is already published with digest ${existing.digest}; publish a new version instead`,
      );
    }
    const row = existing ?? { model, version, digest: hex, size, created: Date.now() };
    if (!existing) this.db.putVersion(row);
    this.#log(`published ${model} ${version} ${hex.slice(0, 16)} (${size} bytes)`);
    // Patches from every version agents run now, so a rollout can start at once.
    const patches = [];
    for (const base of this.#runningDigests(model)) {
      if (base === hex) continue;
      const from = this.db.versionByDigest(model, base);
      if (!from) continue;
      const patch = await this.patches.ensure(base, hex);
      patches.push({ from: from.version, ...patch });
    }
    return { version: row, patches };
  }

  /** Starts a rollout; it supersedes any unfinished rollout of the same model. */
  rollout(
    model: string,
    version: string,
    region: string | null,
    plan: RolloutPlan = DEFAULT_PLAN,
  ): RolloutRow {
    const row = this.db.version(model, version);
    if (!row) {
      throw new NotFoundError(`unknown version: ${model} ${version} has not been published`);
    }
    const id = this.db.createRollout(model, version, row.digest, region, plan);
    this.db.supersedeRollouts(model, id);
    for (const r of this.db.rollouts()) {
      if (r.id !== id && r.model === model) this.#dropElections(r.id);
    }
    this.#log(
      `rollout ${id}: ${model} ${version} to ${region ?? "every region"} (${plan.strategy}${
        plan.rollback ? ", rollback" : ""
      })`,
    );
    return this.db.rollout(id)!;
  }

  /** Pauses, resumes or aborts a rollout. */
  control(id: number, action: "pause" | "resume" | "abort"): RolloutRow {
    const rollout = this.db.rollout(id);
    if (!rollout) throw new NotFoundError(`unknown rollout ${id}`);
    const allowed: Record<typeof action, RolloutState[]> = {
      pause: ["running"],
      resume: ["paused", "halted"],
      abort: ["running", "paused", "halted"],
    };
    if (!allowed[action].includes(rollout.state)) {
      throw new ConflictError(`rollout ${id} is ${rollout.state}: it cannot ${action}`);
    }
    const state: RolloutState = action === "pause"
      ? "paused"
      : action === "resume"
      ? "running"
      : "aborted";
    this.db.setRolloutState(id, state, action === "resume" ? "" : `${action}d by the operator`);
    if (action === "resume") {
      // The failures that halted it were seen: they count again only if they happen again.
      for (const [key, value] of this.#agentStates) {
        if (key.startsWith(`${id}|`) && value.startsWith("failed|")) this.#agentStates.delete(key);
      }
    }
    if (state === "aborted") this.#dropElections(id);
    this.#log(`rollout ${id} ${state}`);
    return this.db.rollout(id)!;
  }

  /**
   * Rolls `model` back to version `to` (default: the version of the last
   * rollout before the newest one that differs from it) on every device.
   * Devices that still hold that version switch to it locally.
   */
  rollback(model: string, to: string | undefined): RolloutRow {
    const rollouts = this.db.rollouts().filter((r) => r.model === model);
    if (rollouts.length === 0 && to === undefined) {
      throw new NotFoundError(`nothing to roll back: ${model} was never rolled out`);
    }
    let version = to;
    if (version === undefined) {
      const newest = rollouts.at(-1)!;
      const before = rollouts.slice(0, -1).reverse().find((r) => r.digest !== newest.digest);
      if (!before) {
        throw new NotFoundError(
          `nothing to roll back to: ${model} was only rolled out as ${newest.version}`,
        );
      }
      version = before.version;
    }
    return this.rollout(model, version, null, { ...DEFAULT_PLAN, rollback: true });
  }

  #dropElections(rolloutId: number): void {
    for (const [manifestId, entry] of this.#elections) {
      if (entry.rolloutId === rolloutId) {
        this.#pastElections.push(entry);
        this.#elections.delete(manifestId);
      }
    }
  }

  /** Everything an operator wants to see, as JSON-ready data. */
  status(now = Date.now()): StatusReport {
    this.#flushServed();
    const served = this.db.served();
    const agents = [...this.agents.values()].map((a) => ({
      nodeId: a.nodeId,
      region: a.region,
      host: a.host,
      online: now - a.lastSeen <= this.#agentTimeoutMs,
      lastSeenMsAgo: now - a.lastSeen,
      active: a.active,
      served: a.served,
    }));
    const elections = [...this.#pastElections, ...this.#elections.values()].map((e) =>
      this.#electionReport(e, served)
    );
    const rollouts = this.db.rollouts().map((r) => ({
      ...r,
      agents: this.db.rolloutAgents(r.id),
      elections: elections.filter((e) => e.rolloutId === r.id),
    }));
    return {
      boot: this.boot,
      versions: this.db.versions(),
      patches: this.db.patches(),
      agents,
      rollouts,
      controlPlane: {
        served: Object.values(served).reduce((a, b) => a + b, 0),
        servedByDigest: served,
      },
      drops: { ...this.drops, ...this.socket.counters },
      patchErrors: Object.fromEntries(this.#patchErrors),
    };
  }

  // --- the control loop ---

  /** Reconciles rollouts and sends what is due. Called every `tickMs`; public for tests. */
  tick(now: number): void {
    if (this.#closed) return;
    this.#expireAgents(now);
    const running = new Set<number>();
    for (const rollout of this.db.rollouts()) {
      if (rollout.state !== "running") continue;
      running.add(rollout.id);
      this.#reconcile(rollout, now);
    }
    for (const entry of this.#elections.values()) {
      if (!running.has(entry.rolloutId)) continue; // paused: nothing is sent
      for (const out of entry.election.tick(now)) this.#sendTo(out.nodeId, out.message);
      if (entry.election.state === "failed") this.#retire(entry);
    }
  }

  /**
   * The agents a rollout lets update now, in a stable order (by node id):
   * everyone (`all`), the canaries until every one of them runs the target
   * (`canary`), or batch after batch (`rolling`).
   */
  #admitted(rollout: RolloutRow, scope: AgentRow[]): { admitted: AgentRow[]; batch: AgentRow[] } {
    const sorted = [...scope].sort((a, b) => a.nodeId < b.nodeId ? -1 : 1);
    const done = (a: AgentRow) => a.active[rollout.model] === rollout.digest;
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

  #reconcile(rollout: RolloutRow, now: number): void {
    const scope = [...this.agents.values()].filter((a) =>
      rollout.region === null || a.region === rollout.region
    );
    const { admitted, batch } = this.#admitted(rollout, scope);
    // Halt when too many of the current batch failed.
    const failed = batch.filter((a) =>
      a.active[rollout.model] !== rollout.digest &&
      this.#agentStates.get(`${rollout.id}|${a.nodeId}`)?.startsWith("failed|")
    );
    if (batch.length > 0 && failed.length / batch.length > rollout.maxFailures) {
      const reason = `${failed.length} of ${batch.length} in the current batch failed (${
        failed.map((a) => a.nodeId).join(", ")
      }); over the ${Math.round(rollout.maxFailures * 100)}% limit`;
      this.db.setRolloutState(rollout.id, "halted", reason);
      this.#dropElections(rollout.id);
      this.#log(`rollout ${rollout.id} halted: ${reason}`);
      return;
    }
    const admittedIds = new Set(admitted.map((a) => a.nodeId));
    let allDone = scope.length > 0;
    for (const agent of scope) {
      const running = agent.active[rollout.model];
      const current = this.#electionOf(rollout.id, agent.nodeId);
      if (running === rollout.digest) {
        current?.election.onDone(agent.nodeId);
        this.#setAgentState(rollout.id, agent.nodeId, "active", "");
        continue;
      }
      allDone = false;
      if (!admittedIds.has(agent.nodeId)) {
        this.#setAgentState(rollout.id, agent.nodeId, "waiting", "not in a batch yet");
        continue;
      }
      if (now - agent.lastSeen > this.#agentTimeoutMs) {
        if (current) current.election.removeMember(agent.nodeId);
        this.#setAgentState(rollout.id, agent.nodeId, "offline", "");
        continue;
      }
      // A device that still holds the target switches to it locally: its election's blob is
      // the target itself, which every member already has.
      const holds = agent.held.includes(rollout.digest);
      const base = holds ? null : running ?? null;
      const key = holds ? `${agent.region}|held` : `${agent.region}|${base ?? "none"}`;
      if (current && current.key === key) continue;
      if (current) current.election.removeMember(agent.nodeId); // its base changed
      const entry = this.#electionFor(rollout, agent.region, key, base);
      if (!entry) continue; // the patch is still being computed
      entry.election.addMember(agent.nodeId, now);
      this.#setAgentState(rollout.id, agent.nodeId, "pending", entry.election.manifestId);
    }
    if (allDone) {
      this.db.finishRollout(rollout.id);
      this.#log(`rollout ${rollout.id} done`);
      this.#dropElections(rollout.id);
    }
  }

  /** The live election of (rollout, key), created if needed; undefined while its patch is computed. */
  #electionFor(
    rollout: RolloutRow,
    region: string,
    key: string,
    base: string | null,
  ): ElectionEntry | undefined {
    for (const entry of this.#elections.values()) {
      if (entry.rolloutId === rollout.id && entry.key === key) return entry;
    }
    let blob: { digest: string; size: number; base: string | null };
    const target = {
      digest: rollout.digest,
      size: this.db.version(rollout.model, rollout.version)!.size,
    };
    if (base !== null && this.db.versionByDigest(rollout.model, base)) {
      const patch = this.patches.cached(base, rollout.digest);
      if (!patch) {
        const patchKey = `${base}>${rollout.digest}`;
        if (!this.#patchErrors.has(patchKey)) {
          this.patches.ensure(base, rollout.digest).catch((err) => {
            this.#patchErrors.set(patchKey, err instanceof Error ? err.message : String(err));
          });
        }
        return undefined;
      }
      blob = { ...patch, base };
    } else {
      // No usable base (nothing installed, or a version we never stored): the whole file.
      blob = { ...target, base: null };
    }
    const manifestId = `r${rollout.id}.b${this.boot}.e${++this.#electionSeq}`;
    const announce: Announce = {
      type: "announce",
      manifestId,
      model: rollout.model,
      version: rollout.version,
      targetDigest: fromHex(target.digest),
      targetSize: target.size,
      baseDigest: blob.base === null ? null : fromHex(blob.base),
      blobDigest: fromHex(blob.digest),
      blobSize: blob.size,
      cpHost: this.bind,
      cpP2pPort: this.blobServer.port,
    };
    const excluded = this.#excluded.get(`${rollout.id}|${key}`) ?? new Set<string>();
    const election = new Election(announce, region, this.#timing, excluded);
    const entry = { election, rolloutId: rollout.id, key };
    this.#elections.set(manifestId, entry);
    this.#log(
      `election ${manifestId}: ${region}, ${blob.base ? "patch" : "whole file"} ${blob.size} bytes`,
    );
    return entry;
  }

  #electionOf(rolloutId: number, nodeId: string): ElectionEntry | undefined {
    for (const entry of this.#elections.values()) {
      if (entry.rolloutId === rolloutId && entry.election.isMember(nodeId)) return entry;
    }
    return undefined;
  }

  /** A failed election: its leader is excluded next time, and the next tick elects again. */
  #retire(entry: ElectionEntry): void {
    const { election } = entry;
    this.#log(`election ${election.manifestId} failed: ${election.failure}`);
    if (election.leader) {
      const key = `${entry.rolloutId}|${entry.key}`;
      const excluded = this.#excluded.get(key) ?? new Set<string>();
      excluded.add(election.leader);
      this.#excluded.set(key, excluded);
    }
    this.#elections.delete(election.manifestId);
    this.#pastElections.push(entry);
  }

  #expireAgents(now: number): void {
    for (const entry of this.#elections.values()) {
      const leader = entry.election.leader;
      if (entry.election.state !== "leading" || leader === undefined) continue;
      const agent = this.agents.get(leader);
      if (!agent || now - agent.lastSeen > this.#agentTimeoutMs) {
        entry.election.fail(
          `leader ${leader} went silent (no heartbeat for ${this.#agentTimeoutMs} ms)`,
        );
      }
    }
  }

  #setAgentState(rolloutId: number, nodeId: string, state: string, detail: string): void {
    const key = `${rolloutId}|${nodeId}`;
    const previous = this.#agentStates.get(key);
    if (previous === `${state}|${detail}`) return;
    // Reconcile knows less than the agent's own report: the same state without detail is no news.
    if (detail === "" && previous?.startsWith(`${state}|`)) return;
    this.#agentStates.set(key, `${state}|${detail}`);
    this.db.setRolloutAgent(rolloutId, nodeId, state, detail);
    if (state === "active") this.#log(`agent ${nodeId} done (rollout ${rolloutId})`);
  }
  readonly #agentStates = new Map<string, string>();

  // --- datagrams ---

  async #receive(): Promise<void> {
    for await (const { message, from } of this.socket.messages()) {
      try {
        this.#handle(message, from, Date.now());
      } catch (err) {
        this.#log(`error handling ${message.type}: ${err instanceof Error ? err.message : err}`);
      }
    }
  }

  #handle(message: ControlMessage, from: UdpAddress, now: number): void {
    if (message.type === "heartbeat") return this.#onHeartbeat(message, from, now);
    if (
      message.type === "announce" || message.type === "leaderAck" ||
      message.type === "electionClosed"
    ) {
      this.drops.wrongDirection++;
      return;
    }
    const agent = this.agents.get(message.nodeId);
    if (!agent || agent.host !== from.hostname) {
      this.drops.unexpectedSender++;
      return;
    }
    const entry = this.#elections.get(message.manifestId);
    if (!entry || !entry.election.isMember(message.nodeId)) {
      this.drops.unknownElection++;
      return;
    }
    const { election } = entry;
    switch (message.type) {
      case "bid": {
        const wasAnnouncing = election.state === "announcing";
        for (const out of election.onBid(message.nodeId, now)) {
          this.#sendTo(out.nodeId, out.message);
        }
        if (wasAnnouncing && (election.state as string) === "leading") {
          this.#log(`election ${election.manifestId}: leader ${message.nodeId}`);
          this.#setAgentState(entry.rolloutId, message.nodeId, "leader", election.manifestId);
        }
        return;
      }
      case "leaderReady": {
        const wasLeading = election.state === "leading";
        const sends = election.onLeaderReady(
          message.nodeId,
          { host: agent.host, p2pPort: message.p2pPort },
          now,
        );
        for (const out of sends) this.#sendTo(out.nodeId, out.message);
        if (wasLeading && (election.state as string) === "closed") {
          this.#log(`election ${election.manifestId}: leader ${message.nodeId} ready, closed`);
        }
        return;
      }
      case "closedAck":
        election.onClosedAck(message.nodeId);
        return;
      case "status":
        return this.#onStatus(entry, message);
    }
  }

  #onStatus(entry: ElectionEntry, message: Status): void {
    const { election } = entry;
    election.onLeaderAlive(message.nodeId);
    election.onAnswered(message.nodeId);
    if (message.state === "active" || message.state === "up-to-date") {
      election.onDone(message.nodeId);
      const agent = this.agents.get(message.nodeId)!;
      const model = election.announce.model;
      const digest = toHex(election.announce.targetDigest);
      if (agent.active[model] !== digest) {
        this.agents.set(agent.nodeId, { ...agent, active: { ...agent.active, [model]: digest } });
        this.db.addHistory({
          nodeId: agent.nodeId,
          model,
          at: Date.now(),
          event: "running",
          digest,
          detail: message.detail,
        });
      }
      this.#setAgentState(entry.rolloutId, message.nodeId, "active", message.detail);
      return;
    }
    this.#setAgentState(entry.rolloutId, message.nodeId, message.state, message.detail);
    if (message.state === "failed") {
      // Try again later (the agent counts its failures and stops at its poison limit).
      if (!message.detail.startsWith("poisoned")) {
        election.rewind(message.nodeId, Date.now(), 4 * this.#timing.retryMs);
      }
      this.db.addHistory({
        nodeId: message.nodeId,
        model: election.announce.model,
        at: Date.now(),
        event: "failed",
        digest: toHex(election.announce.targetDigest),
        detail: message.detail,
      });
    }
  }

  #onHeartbeat(message: Heartbeat, from: UdpAddress, now: number): void {
    if (message.host !== from.hostname) {
      this.drops.unexpectedSender++;
      return;
    }
    const previous = this.agents.get(message.nodeId);
    const row: AgentRow = {
      nodeId: message.nodeId,
      region: message.region,
      host: message.host,
      udpPort: message.udpPort,
      p2pPort: message.p2pPort,
      active: Object.fromEntries(message.active.map(([model, d]) => [model, toHex(d)])),
      held: message.held.map(toHex),
      served: message.served,
      startedAt: message.startedAt,
      lastSeen: now,
    };
    this.agents.set(row.nodeId, row);
    for (const [model, digest] of Object.entries(row.active)) {
      if (previous?.active[model] !== digest) {
        this.db.addHistory({
          nodeId: row.nodeId,
          model,
          at: now,
          event: "running",
          digest,
          detail: "",
        });
      }
    }
    const changed = !previous || previous.startedAt !== row.startedAt ||
      previous.region !== row.region || previous.host !== row.host ||
      previous.udpPort !== row.udpPort || previous.p2pPort !== row.p2pPort ||
      previous.served !== row.served ||
      JSON.stringify(previous.active) !== JSON.stringify(row.active) ||
      now - previous.lastSeen > 5_000;
    if (changed) this.db.putAgent(row);
    if (!previous) this.#log(`agent ${row.nodeId} joined (${row.region}, ${row.host})`);
    if (previous && previous.startedAt !== row.startedAt) {
      this.#log(`agent ${row.nodeId} restarted`);
      for (const entry of this.#elections.values()) {
        const { election } = entry;
        if (!election.isMember(row.nodeId)) continue;
        if (election.state === "leading" && election.leader === row.nodeId) {
          election.fail(`leader ${row.nodeId} restarted before LeaderReady`);
        } else election.rewind(row.nodeId, now);
      }
    }
  }

  #sendTo(nodeId: string, message: ControlMessage): void {
    const agent = this.agents.get(nodeId);
    if (!agent) return;
    this.socket.send(message, { hostname: agent.host, port: agent.udpPort });
  }

  #runningDigests(model: string): Set<string> {
    const out = new Set<string>();
    for (const agent of this.agents.values()) {
      const digest = agent.active[model];
      if (digest) out.add(digest);
    }
    return out;
  }

  #flushServed(): void {
    for (const [digest, bytes] of this.blobServer.servedByDigest()) {
      const before = this.#servedFlushed.get(digest) ?? 0;
      if (bytes > before) {
        this.db.addServed(digest, bytes - before);
        this.#servedFlushed.set(digest, bytes);
      }
    }
  }

  #electionReport(entry: ElectionEntry, served: Record<string, number>): ElectionReport {
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
}

/** One election in the status report. */
export interface ElectionReport {
  readonly manifestId: string;
  readonly rolloutId: number;
  readonly region: string;
  readonly base: string | null;
  readonly blob: string;
  readonly blobSize: number;
  readonly state: string;
  readonly failure: string | null;
  readonly leader: string | null;
  readonly members: string[];
  readonly pending: string[];
  readonly timeline: { announced?: number; firstBid?: number; leaderReady?: number };
  /** Bytes of this election's blob the control plane has served (all elections that share it). */
  readonly controlPlaneServedForBlob: number;
}

/** The status report (`GET /v1/status`). */
export interface StatusReport {
  readonly boot: number;
  readonly versions: VersionRow[];
  readonly patches: { base: string; target: string; digest: string; size: number }[];
  readonly agents: {
    nodeId: string;
    region: string;
    host: string;
    online: boolean;
    lastSeenMsAgo: number;
    active: Record<string, string>;
    served: number;
  }[];
  readonly rollouts: (RolloutRow & {
    agents: { nodeId: string; state: string; detail: string; updated: number }[];
    elections: ElectionReport[];
  })[];
  readonly controlPlane: { served: number; servedByDigest: Record<string, number> };
  readonly drops: Record<string, number>;
  readonly patchErrors: Record<string, string>;
}

/** A request that conflicts with stored state (HTTP 409). */
export class ConflictError extends Error {}
/** A request names something unknown (HTTP 404). */
export class NotFoundError extends Error {}
