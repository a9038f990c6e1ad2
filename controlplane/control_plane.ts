/**
 * The control plane process: the model store and patch cache, the agent
 * registry, rollouts and their elections, a blob server for leaders, the UDP
 * control endpoint and the operators' HTTP API, all bound to one address.
 *
 * A shell around pure parts: rollout_policy.ts decides (admission, halting,
 * done, superseding, operator transitions, retries), election.ts runs each
 * election, datagrams.ts reads the agents' datagrams, status_report.ts builds
 * the report, metrics.ts the metrics; this class holds the timers, the sockets, the blob server and
 * the state store (state_store.ts; SQLite by default). What the hot path
 * reads — agents, versions, rollouts, each agent's progress — is kept in
 * memory, loaded at start, and written through to the store in the
 * background, in order.
 *
 * Rollouts are reconciled every `tickMs`: each online agent in a running
 * rollout's scope that does not yet run the target joins the election of its
 * (rollout, region, base) — base being the digest it runs now, or none — and
 * each election is one patch (or, without a usable base, the whole file)
 * fetched once from here by its leader and re-seeded by it to the others.
 * A rollout is done when every agent in its scope runs the target, but for
 * agents silent longer than `offlineAfterMs`, which no longer hold it
 * (rollout_policy.ts `scopeOf`). The data directory is locked while it runs
 * (data_dir_lock.ts).
 *
 * @module
 */

import {
  type Announce,
  CONTROL_PLANE_RECEIVER,
  type ControlMessage,
  type ElectionClosed,
  encodeControlMessage,
  MAX_SOURCES,
  MAX_TICKET_BYTES,
  type SwarmSource,
} from "../transfer/control_messages.ts";
import {
  buildPieceListFromFile,
  choosePieceSize,
  encodePieceList,
} from "../transfer/piece_list.ts";
import { extendPlan, planSwarm, sourcesOf, type SwarmPlan } from "./swarm_plan.ts";
import { enrolledDevices, signTicket, TICKET_TTL_MS } from "../transfer/blob_auth.ts";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import {
  ConflictError,
  describeOsError,
  InvalidArgumentError,
  ioError,
  NotFoundError,
} from "../kernel/errors.ts";
import { formatTime, parseDelegation, parseRelease } from "../release/documents.ts";
import { BlobServer, type BlobServerLimits } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { ControlSocket } from "../transfer/control_socket.ts";
import type { FaultInjector } from "../transfer/faults.ts";
import { DEFAULT_CP_P2P_PORT, DEFAULT_CP_UDP_PORT } from "../transfer/default_ports.ts";
import { type AgentProgress, progressDetail } from "./agent_progress.ts";
import type {
  DevicePage,
  RolloutAgentPage,
  StatusReport,
  StatusSummary,
  TickStats,
} from "./api_types.ts";
import { DataDirLock } from "./data_dir_lock.ts";
import { Enrollment } from "./enrollment.ts";
import { loadOrCreateKey, publicKeyOf } from "../release/enrollment.ts";
import { DatagramAuthenticator } from "../transfer/datagram_auth.ts";
import type { SigningKey } from "../release/keys.ts";
import { DatagramHandler, type DropCounters } from "./datagrams.ts";
import {
  DEFAULT_ELECTION_TIMING,
  Election,
  type ElectionTiming,
  type Outgoing,
} from "./election.ts";
import { ElectionBook, type ElectionEntry } from "./election_book.ts";
import { Histogram } from "../kernel/prometheus.ts";
import { type ControlPlaneMetrics, ELECTION_BUCKETS, gatherMetrics } from "./metrics.ts";
import { type ControlPlanePatchFormat, PatchCache } from "./patch_cache.ts";
import {
  admit,
  emptySelection,
  haltReason,
  isDone,
  isFinished,
  isNews,
  rollbackVersion,
  type RolloutAction,
  runsTarget,
  scopeOf,
  stepFor,
  superseded,
  supersededReason,
  transition,
} from "./rollout_policy.ts";
import { DATABASE_FILE, SqliteStore } from "./sqlite_store.ts";
import {
  buildStatusReport,
  buildStatusSummary,
  deviceInfo,
  rolloutAgentInfo,
} from "./status_report.ts";
import { StatusCache } from "./status_cache.ts";
import {
  type AgentRecord,
  DEFAULT_PLAN,
  type DelegationRecord,
  type DeviceKeyRecord,
  type HistoryRecord,
  type PatchRecord,
  type ReleaseRecord,
  type RolloutAgentRecord,
  type RolloutPlan,
  type RolloutRecord,
  type RolloutState,
  type StateStore,
  type VersionRecord,
} from "./state_store.ts";

export type { DropCounters } from "./datagrams.ts";

/** An agent silent this long is offline (`--agent-timeout`). */
export const DEFAULT_AGENT_TIMEOUT_MS = 10_000;
/** An agent silent this long no longer holds a rollout (`--offline-after`). */
export const DEFAULT_OFFLINE_AFTER_MS = 120_000;

/**
 * Most datagrams received and waiting for verification and handling; past it
 * one is dropped and counted, as a full socket buffer would drop it.
 */
export const MAX_DATAGRAM_BACKLOG = 8192;

/**
 * Heartbeats' changes to the agent registry are written to the store in one
 * batch this often (and at close), not one write per heartbeat.
 */
export const AGENT_FLUSH_MS = 1000;

/** Most datagrams waiting in the control plane's outbox; past it one is dropped and counted. */
export const MAX_OUTBOX = 2048;
/** Datagrams the outbox hands to the socket before it lets the event loop run. */
export const PUMP_BATCH = 32;

/**
 * Most agents one rollout's reconcile adds to elections per tick; the others
 * join at the next ticks (10,000 agents: within 2 s).
 */
export const MAX_JOINS_PER_TICK = 1000;

/** Records per batched write (agents, progress): one transaction each. */
export const WRITE_CHUNK = 500;

/** Options of `ControlPlane.start`. */
export interface ControlPlaneOptions {
  readonly bind: string;
  readonly dataDir: string;
  readonly udpPort?: number;
  readonly p2pPort?: number;
  readonly httpPort?: number;
  /** An agent silent this long is offline: it leaves its elections (default 10 s). */
  readonly agentTimeoutMs?: number;
  /**
   * An agent silent this long no longer holds its rollouts: they go on (and
   * may finish) without it, and offer it the update again when it returns
   * (default 2 min; never less than `agentTimeoutMs`).
   */
  readonly offlineAfterMs?: number;
  readonly election?: Partial<ElectionTiming>;
  /** Reconcile period (default 200 ms). */
  readonly tickMs?: number;
  /** Log lines (timeline events) go here; default: none. */
  readonly log?: (line: string) => void;
  /** Transport faults to inject (tests only; the CLI never passes any). */
  readonly faults?: FaultInjector;
  /** Limits of the blob server (connections per address and in all, minimum rate); defaults of `BlobServer`. */
  readonly blobLimits?: BlobServerLimits;
  /**
   * Bytes per piece of the swarm's piece lists (a power of two, 64 KiB to
   * 64 MiB); default: `choosePieceSize` of each blob (about 256 pieces).
   */
  readonly pieceSize?: number;
  /**
   * The format of the patches it computes (default `DEFAULT_PATCH_FORMAT`, 4;
   * 2 for a fleet with agents older than 0.17).
   */
  readonly patchFormat?: ControlPlanePatchFormat;
  /**
   * The durable state; default: SQLite at `dataDir/controlplane.sqlite`. The
   * control plane closes it when it closes.
   */
  readonly stateStore?: StateStore;
}

/** What `publish` did: the version, the patches prepared for it, and whether it is new. */
export interface PublishOutcome {
  readonly version: VersionRecord;
  readonly patches: { from: string; digest: string; size: number }[];
  readonly created: boolean;
}

/** What the control plane loads from its store at start. */
interface Loaded {
  readonly boot: number;
  readonly agents: AgentRecord[];
  readonly versions: VersionRecord[];
  readonly patches: PatchRecord[];
  readonly rollouts: RolloutRecord[];
  readonly releases: ReleaseRecord[];
  readonly delegation: DelegationRecord | undefined;
  /** The control plane's own key (DATA/controlplane.key, made at first start). */
  readonly key: SigningKey;
  readonly deviceKeys: DeviceKeyRecord[];
}

/** The status report as the API serves it, and its JSON text (what `GET /v1/status` answers). */
export interface ApiStatus {
  readonly report: StatusReport;
  readonly bytes: Uint8Array;
}

/** The status summary as the API serves it, and its JSON text. */
export interface ApiSummary {
  readonly summary: StatusSummary;
  readonly bytes: Uint8Array;
}

/** What `putDelegation` or `putRelease` did: the record, and whether it is new. */
export interface StoredDocument<T> {
  readonly record: T;
  readonly created: boolean;
}

/** A running control plane. */
export class ControlPlane {
  readonly bind: string;
  readonly stateStore: StateStore;
  readonly store: BlobStore;
  readonly patches: PatchCache;
  readonly blobServer: BlobServer;
  readonly socket: ControlSocket;
  readonly boot: number;
  /** Device enrolment: the enrolled devices' keys, tokens, pending requests, this control plane's key. */
  readonly enrollment: Enrollment;
  /** The agent registry (loaded at start; heartbeats keep it). */
  readonly agents = new Map<string, AgentRecord>();
  readonly #versions: VersionRecord[];
  readonly #rollouts = new Map<number, RolloutRecord>();
  /** Each agent's progress per rollout (in memory only: after a restart it is seen anew). */
  readonly #progress = new Map<number, Map<string, AgentProgress>>();
  readonly #elections = new ElectionBook();
  readonly #datagrams: DatagramHandler;
  /** Checks devices' datagrams (signature, replay), counting into the handler's drops. */
  readonly #auth: DatagramAuthenticator;
  readonly #timing: ElectionTiming;
  readonly #agentTimeoutMs: number;
  readonly #offlineAfterMs: number;
  readonly #log: (line: string) => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #receiving: Promise<void> | undefined;
  /** The store's writes, chained so they happen in order. */
  #writes: Promise<void> = Promise.resolve();
  readonly #servedFlushed = new Map<string, number>();
  readonly #patchErrors = new Map<string, string>();
  /** Uploads between their first byte and their record (a blob they committed may be theirs). */
  #importing = 0;
  /** Blobs of refused uploads, deleted by `#collectGarbage` once nothing refers to them. */
  readonly #garbage = new Set<string>();
  /** Each version's current release manifest, by `model/version`. */
  readonly #releases = new Map<string, ReleaseRecord>();
  /** The highest release counter stored per model. */
  readonly #highestCounter = new Map<string, number>();
  #delegation: DelegationRecord | undefined;
  /** Blob digests of every signed document stored (kept: a device may still fetch an older one). */
  readonly #documentDigests = new Set<string>();
  /** Piece lists by the hex digest of the blob they cut (swarm downloads). */
  readonly #pieceLists = new Map<string, PieceListState>();
  /** Piece lists being built (at most one per blob of a live election); `close` waits for them. */
  readonly #background = new Set<Promise<void>>();
  /** Swarm plan of each closed election (`swarm_plan.ts`), by manifest id. */
  readonly #swarmPlans = new Map<
    string,
    { plan: SwarmPlan; count: number; leader: string }
  >();
  readonly #pieceSize: number | undefined;
  #closed = false;
  /** The status report as the API serves it (status_cache.ts). */
  readonly #statusCache = new StatusCache<ApiStatus>(async () => {
    const report = await this.status();
    return { report, bytes: new TextEncoder().encode(JSON.stringify(report, null, 2) + "\n") };
  });
  /** The summary as the API serves it, and its JSON (`GET /v1/status?view=summary`). */
  readonly #summaryCache = new StatusCache<ApiSummary>(async () => {
    const summary = await this.statusSummary();
    return { summary, bytes: new TextEncoder().encode(JSON.stringify(summary, null, 2) + "\n") };
  });
  /** The control loop's ticks: how many, how long. */
  #tickStats: TickStats = { count: 0, totalMs: 0, maxMs: 0, lastMs: 0 };
  /** Agents changed since they were last written; written together every `AGENT_FLUSH_MS`. */
  readonly #dirtyAgents = new Map<string, AgentRecord>();
  #agentsFlushedAt = 0;
  /**
   * Agents' progress recorded since the last write, by node id and rollout:
   * written in one batch at the end of every tick (and before the store is read).
   */
  readonly #dirtyProgress = new Map<string, Map<number, RolloutAgentRecord>>();
  /** Datagrams to send (`#sendTo`), from `#outboxHead` on; `#pump` sends them. */
  readonly #outbox: Outgoing[] = [];
  #outboxHead = 0;
  #pumping = false;
  /** Datagrams received, not yet handled (`#receive`). */
  #backlog = 0;
  /** Enrolled devices' decoded public keys, per enrolment record. */
  readonly #deviceKeys = new WeakMap<DeviceKeyRecord, Uint8Array>();
  /** The lock on the data directory, held until `close`. */
  readonly #lock: DataDirLock;
  /** When this control plane started (ms since the epoch): its uptime in the metrics. */
  readonly #startedAt = Date.now();
  /** Closed elections' durations since start, seconds (metrics.ts). */
  readonly #electionDurations = new Histogram(ELECTION_BUCKETS);
  /** Elections that failed since start. */
  #electionsFailed = 0;

  private constructor(
    options: ControlPlaneOptions,
    stateStore: StateStore,
    loaded: Loaded,
    store: BlobStore,
    blobServer: BlobServer,
    socket: ControlSocket,
    lock: DataDirLock,
  ) {
    this.#lock = lock;
    this.bind = options.bind;
    this.stateStore = stateStore;
    this.store = store;
    this.blobServer = blobServer;
    this.socket = socket;
    this.boot = loaded.boot;
    this.patches = new PatchCache(store, stateStore, loaded.patches, 1, options.patchFormat);
    this.enrollment = new Enrollment(stateStore, loaded.key, loaded.deviceKeys);
    this.#versions = loaded.versions;
    for (const agent of loaded.agents) this.agents.set(agent.nodeId, agent);
    for (const rollout of loaded.rollouts) this.#rollouts.set(rollout.id, rollout);
    for (const release of loaded.releases) this.#rememberRelease(release);
    this.#delegation = loaded.delegation;
    this.#timing = { ...DEFAULT_ELECTION_TIMING, ...options.election };
    this.#pieceSize = options.pieceSize;
    this.#agentTimeoutMs = options.agentTimeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS;
    this.#offlineAfterMs = Math.max(
      options.offlineAfterMs ?? DEFAULT_OFFLINE_AFTER_MS,
      this.#agentTimeoutMs,
    );
    this.#log = options.log ?? (() => {});
    this.#datagrams = new DatagramHandler({
      agents: this.agents,
      elections: this.#elections,
      timing: this.#timing,
      send: (nodeId, message) => this.#sendTo(nodeId, message),
      setProgress: (rolloutId, nodeId, progress) => this.#setProgress(rolloutId, nodeId, progress),
      putAgent: (agent) => void this.#dirtyAgents.set(agent.nodeId, agent),
      addHistory: (entry: HistoryRecord) => void this.#persist(() => stateStore.addHistory(entry)),
      log: this.#log,
      electionClosed: (election, now) => {
        const from = election.timeline.announced ?? election.timeline.firstBid ?? now;
        this.#electionDurations.observe(Math.max(0, now - from) / 1000);
      },
    });
    this.#auth = new DatagramAuthenticator(CONTROL_PLANE_RECEIVER, this.#datagrams.drops);
  }

  /** Opens the state under `dataDir` and binds the UDP and blob ports. */
  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    await Deno.mkdir(options.dataDir, { recursive: true });
    // Before anything of the directory is read: a second control plane on it stops here.
    const lock = await DataDirLock.acquire(options.dataDir);
    let stateStore: StateStore;
    try {
      stateStore = options.stateStore ??
        await SqliteStore.open(`${options.dataDir}/${DATABASE_FILE}`);
    } catch (err) {
      lock.release();
      throw err;
    }
    const loaded: Loaded = {
      boot: await stateStore.nextBoot(),
      agents: await stateStore.agents(),
      versions: await stateStore.versions(),
      patches: await stateStore.patches(),
      rollouts: await stateStore.rollouts(),
      releases: await stateStore.releases(),
      delegation: await stateStore.delegation(),
      key: await loadOrCreateKey(options.dataDir, "controlplane"),
      deviceKeys: await stateStore.deviceKeys(),
    };
    let socket: ControlSocket | undefined;
    let store: BlobStore;
    let blobServer: BlobServer;
    // The blob server serves only enrolled devices (protocol version 2); the registry comes with the instance.
    const registry: { enrollment?: Enrollment } = {};
    try {
      store = await BlobStore.open(`${options.dataDir}/blobs`);
      socket = ControlSocket.open(options.bind, options.udpPort ?? DEFAULT_CP_UDP_PORT, {
        faults: options.faults,
        // Every datagram it sends is signed with its key, the one devices pinned.
        signer: () => loaded.key.privateKey,
      });
      blobServer = BlobServer.start({
        hostname: options.bind,
        port: options.p2pPort ?? DEFAULT_CP_P2P_PORT,
        store,
        faults: options.faults?.transport,
        ...options.blobLimits,
        // Leaders of every region download from here at once: no cap below the connections'.
        maxUploads: options.blobLimits?.maxUploads ?? options.blobLimits?.maxConnections ?? 64,
        authorize: enrolledDevices((nodeId) => {
          const device = registry.enrollment?.device(nodeId);
          return device === undefined ? undefined : publicKeyOf(device.publicKey);
        }),
      });
    } catch (err) {
      // A port in use, say: nothing stays open behind the error.
      socket?.close();
      await stateStore.close();
      lock.release();
      throw err;
    }
    const cp = new ControlPlane(options, stateStore, loaded, store, blobServer, socket, lock);
    registry.enrollment = cp.enrollment;
    cp.#receiving = cp.#receive();
    const tickMs = options.tickMs ?? 200;
    cp.#timer = setInterval(() => cp.tick(Date.now()), tickMs);
    cp.#log(`control plane boot ${cp.boot}: udp ${socket.port}, blobs ${blobServer.port}`);
    return cp;
  }

  /** Writes a line to the control plane's log (timeline events, e.g. a device enrolled). */
  logLine(line: string): void {
    this.#log(line);
  }

  /** Datagrams refused, by reason. */
  get drops(): DropCounters {
    return this.#datagrams.drops;
  }

  /** Stops everything; state is on disk once it resolves. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#flushServed();
    this.#flushAgents();
    this.#flushProgress();
    this.socket.close();
    await this.#receiving;
    await this.blobServer.close();
    await Promise.all(this.#background);
    await this.#writes;
    await this.stateStore.close();
    this.#lock.release();
  }

  // --- operator actions (the HTTP API calls these) ---

  /**
   * Stores a version's file from a stream; returns it and the patches prepared
   * for it. Other bytes under a published version are a conflict (409); their
   * blob is deleted only once nothing refers to it and no upload is in flight
   * (`#collectGarbage`), so a concurrent publish of the same bytes as another
   * version keeps them.
   */
  async publish(
    model: string,
    version: string,
    body: ReadableStream<Uint8Array>,
  ): Promise<PublishOutcome> {
    this.#importing++;
    let imported: { digest: Uint8Array; size: number };
    try {
      imported = await this.store.importStream(body);
    } catch (err) {
      this.#importing--;
      this.#collectGarbage();
      throw err;
    }
    const { digest, size } = imported;
    const hex = toHex(digest);
    // From here to the record being in #versions nothing awaits: the check and the
    // claim are one step, and a concurrent publish of this version sees the record.
    const existing = this.#version(model, version);
    if (existing && existing.digest !== hex) {
      this.#importing--;
      this.#garbage.add(hex);
      this.#collectGarbage();
      throw new ConflictError(
        `${model} ${version} is already published with digest ${existing.digest}; publish a new version instead`,
      );
    }
    const record = existing ?? { model, version, digest: hex, size, created: Date.now() };
    if (!existing) this.#versions.push(record);
    this.#importing--;
    this.#collectGarbage(); // refused uploads that waited for this one to be claimed
    if (!existing) {
      try {
        await this.#persist(() => this.stateStore.putVersion(record));
      } catch (err) {
        this.#versions.splice(this.#versions.indexOf(record), 1);
        this.#garbage.add(hex);
        this.#collectGarbage();
        throw err;
      }
    }
    this.#log(`published ${model} ${version} ${hex.slice(0, 16)} (${size} bytes)`);
    // Patches from every version agents run now, so a rollout can start at once.
    const patches = [];
    for (const base of this.#runningDigests(model)) {
      if (base === hex) continue;
      const from = this.#versionByDigest(model, base);
      if (!from) continue;
      const patch = await this.patches.ensure(base, hex);
      patches.push({ from: from.version, ...patch });
    }
    return { version: record, patches, created: !existing };
  }

  /**
   * Stores a delegation document (structure checked; the control plane holds
   * no key and trusts nothing in it). A stored one of a higher version, or of
   * the same version with other bytes, is a conflict; the same bytes again
   * change nothing.
   */
  async putDelegation(bytes: Uint8Array): Promise<StoredDocument<DelegationRecord>> {
    const doc = parseDelegation(bytes);
    const digest = toHex(blake3(bytes));
    const stored = this.#delegation;
    if (stored && stored.digest === digest) return { record: stored, created: false };
    if (stored && stored.version >= doc.signed.version) {
      throw new ConflictError(
        stored.version === doc.signed.version
          ? `delegation version ${stored.version} is already stored with other bytes; sign a new version`
          : `delegation version ${stored.version} is stored; version ${doc.signed.version} is older`,
      );
    }
    await this.#importDocument(bytes, digest);
    const record = { version: doc.signed.version, digest, created: Date.now() };
    await this.#persist(() => this.stateStore.putDelegation(record));
    this.#delegation = record;
    this.#log(
      `delegation version ${record.version} stored (${doc.signed.releaseKeys.length} release keys, expires ${
        formatTime(doc.signed.expires)
      })`,
    );
    return { record, created: true };
  }

  /** The stored delegation's record and bytes; 404 when none is stored. */
  async delegationDocument(): Promise<{ record: DelegationRecord; bytes: Uint8Array }> {
    const record = this.#delegation;
    if (!record) throw new NotFoundError("no delegation is stored (poolboy publish sends one)");
    return { record, bytes: await this.#readDocument(record.digest) };
  }

  /**
   * Stores a release manifest for a published version; it becomes the
   * version's current manifest. Its model, version, target digest and size
   * must be the version's (409 naming what differs); nothing is stored otherwise.
   */
  async putRelease(
    model: string,
    version: string,
    bytes: Uint8Array,
  ): Promise<StoredDocument<ReleaseRecord>> {
    const published = this.#version(model, version);
    if (!published) {
      throw new NotFoundError(`unknown version: ${model} ${version} has not been published`);
    }
    const r = parseRelease(bytes).signed;
    const differs = [];
    if (r.model !== model) differs.push(`model ${r.model} (the path names ${model})`);
    if (r.version !== version) differs.push(`version ${r.version} (the path names ${version})`);
    if (r.target.blake3 !== published.digest) {
      differs.push(`target blake3 ${r.target.blake3} (published: ${published.digest})`);
    }
    if (r.target.size !== published.size) {
      differs.push(`target size ${r.target.size} (published: ${published.size})`);
    }
    if (differs.length > 0) {
      throw new ConflictError(
        `the manifest is not for ${model} ${version} as published: ${differs.join("; ")}`,
      );
    }
    const digest = toHex(blake3(bytes));
    const current = this.#releases.get(releaseKey(model, version));
    if (current && current.digest === digest) return { record: current, created: false };
    await this.#importDocument(bytes, digest);
    const record = { model, version, counter: r.counter, digest, created: Date.now() };
    await this.#persist(() => this.stateStore.putRelease(record));
    this.#rememberRelease(record);
    this.#log(`release manifest for ${model} ${version} stored (counter ${r.counter})`);
    return { record, created: true };
  }

  /** A version's current manifest's record and bytes; 404 when it has none. */
  async releaseDocument(
    model: string,
    version: string,
  ): Promise<{ record: ReleaseRecord; bytes: Uint8Array }> {
    const record = this.#releases.get(releaseKey(model, version));
    if (!record) throw new NotFoundError(`${model} ${version} has no signed release manifest`);
    return { record, bytes: await this.#readDocument(record.digest) };
  }

  /** The current manifest of a version, if any (what its elections announce). */
  release(model: string, version: string): ReleaseRecord | undefined {
    return this.#releases.get(releaseKey(model, version));
  }

  /** The highest release counter of every manifest stored for `model` (0 when none). */
  highestCounter(model: string): number {
    return this.#highestCounter.get(model) ?? 0;
  }

  /**
   * Starts a rollout; it supersedes any unfinished rollout of the same model
   * whose scope overlaps its own (the same region, or either is fleet-wide).
   * A selection with no registered device is refused (400), nothing created.
   */
  async rollout(
    model: string,
    version: string,
    region: string | null,
    plan: RolloutPlan = DEFAULT_PLAN,
  ): Promise<RolloutRecord> {
    const target = this.#version(model, version);
    if (!target) {
      throw new NotFoundError(`unknown version: ${model} ${version} has not been published`);
    }
    const empty = emptySelection(region, this.agents.values());
    if (empty !== undefined) throw new InvalidArgumentError(empty);
    const created = await this.#persist(() =>
      this.stateStore.createRollout({
        model,
        version,
        digest: target.digest,
        region,
        plan,
        created: Date.now(),
      })
    );
    this.#rollouts.set(created.id, created);
    if (!this.release(model, version)) {
      this.#log(
        `warning: rollout ${created.id} of ${model} ${version} is unsigned: agents that pin a trust root will refuse it`,
      );
    }
    const now = Date.now();
    for (const older of superseded(created, this.#rollouts.values())) {
      this.#setRolloutState(older, "superseded", supersededReason(created), now);
      this.#elections.endRollout(older.id);
    }
    this.#log(
      `rollout ${created.id}: ${model} ${version} to ${region ?? "every region"} (${plan.strategy}${
        plan.rollback ? ", rollback" : ""
      })`,
    );
    await this.#writes;
    return created;
  }

  /** Pauses, resumes or aborts a rollout (pure rule: rollout_policy.ts `transition`). */
  async control(id: number, action: RolloutAction): Promise<RolloutRecord> {
    const rollout = this.#rollouts.get(id);
    if (!rollout) throw new NotFoundError(`unknown rollout ${id}`);
    const next = transition(id, rollout.state, action);
    const updated = this.#setRolloutState(rollout, next.state, next.reason, Date.now());
    if (next.forgetFailures) {
      const progress = this.#progress.get(id);
      for (const [nodeId, p] of progress ?? []) {
        if (p.kind === "failed") progress!.delete(nodeId);
      }
    }
    if (next.endElections) this.#elections.endRollout(id);
    this.#log(`rollout ${id} ${next.state}`);
    await this.#writes;
    return updated;
  }

  /**
   * Rolls `model` back to version `to` (default: the version of the last
   * rollout before the newest one that differs from it) on every device.
   * Devices that still hold that version switch to it locally.
   */
  rollback(model: string, to: string | undefined): Promise<RolloutRecord> {
    const rollouts = [...this.#rollouts.values()].filter((r) => r.model === model);
    const version = rollbackVersion(model, rollouts, to);
    return this.rollout(model, version, null, { ...DEFAULT_PLAN, rollback: true });
  }

  /**
   * Forgets a device: its registry row, its progress in every rollout and its
   * history (the audit log keeps the removal). It leaves every election; one it
   * was leading before LeaderReady fails and is run again. A device that
   * heartbeats again re-appears: devices do not enrol yet (issue 14).
   * NotFoundError for an unknown device.
   */
  async removeDevice(nodeId: string): Promise<void> {
    const hadKey = await this.enrollment.remove(nodeId);
    this.#auth.forget(nodeId);
    if (!this.agents.has(nodeId)) {
      if (hadKey) return;
      throw new NotFoundError(`unknown device "${nodeId}"`);
    }
    this.agents.delete(nodeId);
    this.#dirtyAgents.delete(nodeId);
    this.#dirtyProgress.delete(nodeId);
    for (const { election } of this.#elections.live()) {
      if (!election.isMember(nodeId)) continue;
      if (election.leader === nodeId) election.fail(`leader ${nodeId} was removed`);
      election.removeMember(nodeId);
    }
    for (const progress of this.#progress.values()) progress.delete(nodeId);
    await this.#persist(() => this.stateStore.removeAgent(nodeId));
    this.#log(`device ${nodeId} removed`);
  }

  /** Every published version (by model, oldest first). */
  async versions(): Promise<VersionRecord[]> {
    await this.#writes;
    return await this.stateStore.versions();
  }

  /** Every rollout, by id. */
  async rollouts(): Promise<RolloutRecord[]> {
    await this.#writes;
    return await this.stateStore.rollouts();
  }

  /** A device's history, oldest first. */
  async history(nodeId: string): Promise<HistoryRecord[]> {
    await this.#writes;
    return await this.stateStore.history(nodeId);
  }

  /** Everything an operator wants to see, as JSON-ready data. */
  async status(now = Date.now()): Promise<StatusReport> {
    const base = await this.#reportBase(now);
    return buildStatusReport({
      ...base,
      rollouts: await Promise.all(
        base.rolloutRecords.map(async (rollout) => ({
          rollout,
          agents: await this.stateStore.rolloutAgents(rollout.id),
        })),
      ),
    });
  }

  /**
   * The status report without per-device lists (counts instead): no copy of
   * any device's record, one counting pass over the registry, the rollouts'
   * agents counted by the store.
   */
  async statusSummary(now = Date.now()): Promise<StatusSummary> {
    const base = await this.#reportBase(now);
    return buildStatusSummary({
      ...base,
      rollouts: await Promise.all(
        base.rolloutRecords.map(async (rollout) => ({
          rollout,
          agentStates: await this.stateStore.rolloutAgentStates(rollout.id),
        })),
      ),
    });
  }

  /** What the whole report and the summary share, after every pending write. */
  async #reportBase(now: number) {
    this.#flushServed();
    this.#flushProgress();
    await this.#writes;
    return {
      boot: this.boot,
      now,
      agentTimeoutMs: this.#agentTimeoutMs,
      versions: await this.stateStore.versions(),
      releaseOf: (model: string, version: string) => this.release(model, version),
      patches: await this.stateStore.patches(),
      agents: this.agents.values(),
      rolloutRecords: await this.stateStore.rollouts(),
      elections: this.#elections.all(),
      served: await this.stateStore.served(),
      drops: { ...this.drops, ...this.socket.counters },
      patchErrors: Object.fromEntries(this.#patchErrors),
      tick: this.#tickStats,
      datagramBacklog: this.#backlog,
    };
  }

  /**
   * The metrics (`GET /metrics`, metrics.ts): from memory only, one pass over
   * the devices and the live rollouts' progress; nothing is read from the store.
   */
  metrics(now = Date.now()): ControlPlaneMetrics {
    let blobServedBytes = 0;
    for (const bytes of this.blobServer.servedByDigest().values()) blobServedBytes += bytes;
    return gatherMetrics({
      boot: this.boot,
      now,
      startedAt: this.#startedAt,
      residentBytes: Deno.memoryUsage().rss,
      agentTimeoutMs: this.#agentTimeoutMs,
      agents: this.agents.values(),
      rollouts: this.#rollouts.values(),
      progress: this.#progress.entries(),
      liveElections: [...this.#elections.live()].map((e) => e.election.state),
      electionsFailed: this.#electionsFailed,
      electionDurations: this.#electionDurations.snapshot(),
      drops: this.drops,
      socket: this.socket.counters,
      datagramBacklog: this.#backlog,
      outboxQueued: this.#outbox.length - this.#outboxHead,
      blobServedBytes,
      tick: this.#tickStats,
    });
  }

  /** The summary for the API: `statusSummary()`, reused as the status report is, with its JSON. */
  apiSummary(): Promise<ApiSummary> {
    return this.#summaryCache.get();
  }

  /** Devices ordered by node id, from `offset` on, at most `limit`; and how many in all. */
  devicePage(offset: number, limit: number, now = Date.now()): DevicePage {
    const ids = [...this.agents.keys()].sort();
    const agents = ids.slice(offset, offset + limit).map((id) =>
      deviceInfo(this.agents.get(id)!, now, this.#agentTimeoutMs)
    );
    return { agents, total: ids.length, offset, limit };
  }

  /** A rollout's agents by node id, from `offset` on, at most `limit`. NotFoundError: no such rollout. */
  async rolloutAgentPage(id: number, offset: number, limit: number): Promise<RolloutAgentPage> {
    if (!this.#rollouts.has(id)) throw new NotFoundError(`unknown rollout "${id}"`);
    this.#flushProgress();
    await this.#writes;
    const page = await this.stateStore.rolloutAgentPage(id, offset, limit);
    return {
      rolloutId: id,
      agents: page.agents.map(rolloutAgentInfo),
      total: page.total,
      offset,
      limit,
    };
  }

  /**
   * The status report for the API: `status()`, but reused for a short while
   * once building it is expensive (status_cache.ts), with its JSON.
   */
  apiStatus(): Promise<ApiStatus> {
    return this.#statusCache.get();
  }

  /** An operator changed something: the API's next status report is built anew. */
  invalidateStatus(): void {
    this.#statusCache.invalidate();
    this.#summaryCache.invalidate();
  }

  // --- the control loop ---

  /** Reconciles rollouts and sends what is due. Called every `tickMs`; public for tests. */
  tick(now: number): void {
    if (this.#closed) return;
    const started = performance.now();
    this.#reconcileAll(now);
    this.#flushProgress();
    const ms = performance.now() - started;
    const t = this.#tickStats;
    this.#tickStats = {
      count: t.count + 1,
      totalMs: t.totalMs + ms,
      maxMs: Math.max(t.maxMs, ms),
      lastMs: ms,
    };
  }

  #reconcileAll(now: number): void {
    if (now - this.#agentsFlushedAt >= AGENT_FLUSH_MS) this.#flushAgents();
    this.#expireLeaders(now);
    const running = new Set<number>();
    for (const rollout of [...this.#rollouts.values()]) {
      if (rollout.state !== "running") continue;
      running.add(rollout.id);
      this.#reconcile(rollout, now);
    }
    const due: Outgoing[][] = [];
    for (const entry of [...this.#elections.live()]) {
      if (!running.has(entry.rolloutId)) continue; // paused: nothing is sent
      due.push(entry.election.tick(now));
      if (entry.election.state === "failed") {
        this.#log(`election ${entry.election.manifestId} failed: ${entry.election.failure}`);
        this.#electionsFailed++;
        this.#elections.retire(entry);
      }
    }
    for (const out of interleave(due)) this.#sendTo(out.nodeId, out.message);
  }

  #reconcile(rollout: RolloutRecord, now: number): void {
    const { live: scope, gone } = scopeOf(rollout, this.agents.values(), now, this.#offlineAfterMs);
    // Which live election each agent is in: one pass, kept up to date below.
    const members = this.#elections.membersOf(rollout.id);
    for (const agent of gone) {
      // It no longer holds the rollout; heard from again, it is back in `scope`.
      members.get(agent.nodeId)?.election.removeMember(agent.nodeId);
      members.delete(agent.nodeId);
      if (!runsTarget(rollout, agent)) {
        this.#setProgress(rollout.id, agent.nodeId, { kind: "offline", excluded: true });
      }
    }
    const { admitted, batch } = admit(rollout, scope);
    const halt = haltReason(
      rollout,
      batch,
      (nodeId) => this.#progress.get(rollout.id)?.get(nodeId),
    );
    if (halt !== undefined) {
      this.#setRolloutState(rollout, "halted", halt, now);
      this.#elections.endRollout(rollout.id);
      this.#log(`rollout ${rollout.id} halted: ${halt}`);
      return;
    }
    // Everyone admitted (strategy all, or the canaries are done): no set of 10,000 ids per tick.
    const admittedIds = admitted.length === scope.length
      ? undefined
      : new Set(admitted.map((a) => a.nodeId));
    let joins = 0;
    for (const agent of scope) {
      const current = members.get(agent.nodeId);
      const step = stepFor(
        rollout,
        agent,
        admittedIds?.has(agent.nodeId) ?? true,
        now,
        this.#agentTimeoutMs,
      );
      switch (step.kind) {
        case "active":
          current?.election.onDone(agent.nodeId, now);
          this.#setProgress(rollout.id, agent.nodeId, { kind: "active", detail: "" });
          break;
        case "waiting":
          this.#setProgress(rollout.id, agent.nodeId, { kind: "waiting" });
          break;
        case "offline":
          current?.election.removeMember(agent.nodeId);
          members.delete(agent.nodeId);
          this.#setProgress(rollout.id, agent.nodeId, { kind: "offline", excluded: false });
          break;
        case "join": {
          if (current && current.key === step.key) break;
          // Holding the target because this election brought it (downloaded, not switched yet):
          // it finishes there. A "held" election is for devices that had it before (a rollback).
          if (current && step.key === `${agent.region}|held`) break;
          // Thousands joining at once would hold the loop in one tick: the rest join next tick.
          if (joins >= MAX_JOINS_PER_TICK) break;
          joins++;
          current?.election.removeMember(agent.nodeId); // its base changed
          members.delete(agent.nodeId);
          const entry = this.#electionFor(rollout, agent.region, step.key, step.base);
          if (!entry) break; // the patch is still being computed
          entry.election.addMember(agent.nodeId, now);
          members.set(agent.nodeId, entry);
          this.#setProgress(rollout.id, agent.nodeId, {
            kind: "pending",
            manifestId: entry.election.manifestId,
          });
          break;
        }
      }
    }
    this.#elections.forgetEmpty(rollout.id);
    if (isDone(rollout, scope, gone)) {
      this.#setRolloutState(rollout, "done", "", now);
      this.#log(`rollout ${rollout.id} done`);
      this.#elections.endRollout(rollout.id);
    }
  }

  /** The live election of (rollout, key), created if needed; undefined while its patch is computed. */
  #electionFor(
    rollout: RolloutRecord,
    region: string,
    key: string,
    base: string | null,
  ): ElectionEntry | undefined {
    const existing = this.#elections.find(rollout.id, key);
    if (existing) return existing;
    let blob: { digest: string; size: number; base: string | null };
    const target = {
      digest: rollout.digest,
      size: this.#version(rollout.model, rollout.version)!.size,
    };
    if (base !== null && this.#versionByDigest(rollout.model, base)) {
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
    const manifestId = this.#elections.nextManifestId(rollout.id, this.boot);
    const release = this.release(rollout.model, rollout.version);
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
      releaseDigest: release ? fromHex(release.digest) : null,
      delegationDigest: release && this.#delegation ? fromHex(this.#delegation.digest) : null,
    };
    const excluded = this.#elections.excluded(rollout.id, key);
    const entry = {
      election: new Election(announce, region, this.#timing, excluded),
      rolloutId: rollout.id,
      key,
    };
    this.#elections.add(entry);
    this.#preparePieceList(announce.blobDigest, announce.blobSize);
    this.#log(
      `election ${manifestId}: ${region}, ${blob.base ? "patch" : "whole file"} ${blob.size} bytes`,
    );
    return entry;
  }

  /** A leader silent for longer than the agent timeout fails its election. */
  #expireLeaders(now: number): void {
    for (const { election } of this.#elections.live()) {
      const leader = election.leader;
      if (election.state !== "leading" || leader === undefined) continue;
      const agent = this.agents.get(leader);
      if (!agent || now - agent.lastSeen > this.#agentTimeoutMs) {
        election.fail(
          `leader ${leader} went silent (no heartbeat for ${this.#agentTimeoutMs} ms)`,
          now,
        );
      }
    }
  }

  /** Records an agent's progress in a rollout, if it is news. */
  #setProgress(rolloutId: number, nodeId: string, progress: AgentProgress): void {
    let forRollout = this.#progress.get(rolloutId);
    if (!forRollout) this.#progress.set(rolloutId, forRollout = new Map());
    if (!isNews(forRollout.get(nodeId), progress)) return;
    forRollout.set(nodeId, progress);
    const record = {
      rolloutId,
      nodeId,
      state: progress.kind,
      detail: progressDetail(progress),
      updated: Date.now(),
    };
    let dirty = this.#dirtyProgress.get(nodeId);
    if (!dirty) this.#dirtyProgress.set(nodeId, dirty = new Map());
    dirty.set(rolloutId, record);
    if (progress.kind === "active") this.#log(`agent ${nodeId} done (rollout ${rolloutId})`);
  }

  /** Sets a rollout's state in memory now, and in the store in the background. */
  #setRolloutState(
    rollout: RolloutRecord,
    state: RolloutState,
    reason: string,
    now: number,
  ): RolloutRecord {
    const updated = { ...rollout, state, reason, finished: isFinished(state) ? now : null };
    this.#rollouts.set(rollout.id, updated);
    // Over for good: its agents' progress is in the store, and nothing reads it here again.
    if (state === "done" || state === "aborted" || state === "superseded") {
      this.#progress.delete(rollout.id);
    }
    void this.#persist(() =>
      this.stateStore.setRolloutState(rollout.id, state, reason, updated.finished)
    );
    return updated;
  }

  /**
   * Runs a store write after every earlier one. The returned promise settles
   * with it; a failed write is also logged, and later writes still run.
   */
  #persist<T>(write: () => Promise<T>): Promise<T> {
    const done = this.#writes.then(write);
    this.#writes = done.then(
      () => {},
      (err) => this.#log(`state store: ${err instanceof Error ? err.message : err}`),
    );
    return done;
  }

  // --- datagrams ---

  /**
   * Receives datagrams and handles them in the order they came. Their
   * signatures are verified concurrently (`DatagramAuthenticator.verify`)
   * while later ones are received, so the socket is drained at the rate it
   * can be read, not one verification at a time; the replay rule and the
   * handling run in arrival order. At most `MAX_DATAGRAM_BACKLOG` datagrams
   * wait: past that one is dropped and counted (`drops.backlogFull`).
   */
  async #receive(): Promise<void> {
    let handled: Promise<void> = Promise.resolve();
    for await (const { message, from, opened } of this.socket.messages()) {
      const now = Date.now();
      if (this.#backlog >= MAX_DATAGRAM_BACKLOG) {
        this.#datagrams.drops.backlogFull++;
        continue;
      }
      // A device's datagram counts only if it is enrolled, signed by its key and new:
      // nothing of an unauthenticated one is kept (no row, no state).
      const nodeId = "nodeId" in message ? message.nodeId : undefined;
      const verdict = nodeId === undefined
        ? undefined
        : this.#auth.verify(nodeId, this.#deviceKey(nodeId), opened, now);
      this.#backlog++;
      handled = handled.then(async () => {
        try {
          if (nodeId !== undefined) {
            const reason = await verdict!;
            // Removed meanwhile: its datagrams count as from an unknown sender.
            const known = this.enrollment.device(nodeId) !== undefined;
            if (!this.#auth.commit(nodeId, opened, known ? reason : "unknownSender")) return;
          }
          this.#datagrams.handle(message, from, now);
        } catch (err) {
          this.#log(`error handling ${message.type}: ${err instanceof Error ? err.message : err}`);
        } finally {
          this.#backlog--;
        }
      });
    }
    await handled;
  }

  /** An enrolled device's raw public key (decoded once per enrolment record). */
  #deviceKey(nodeId: string): Uint8Array | undefined {
    const device = this.enrollment.device(nodeId);
    if (device === undefined) return undefined;
    let key = this.#deviceKeys.get(device);
    if (key === undefined) {
      key = publicKeyOf(device.publicKey);
      if (key !== undefined) this.#deviceKeys.set(device, key);
    }
    return key;
  }

  /** Datagrams received and waiting for their verification or handling. */
  get datagramBacklog(): number {
    return this.#backlog;
  }

  /**
   * Queues a datagram for `nodeId` in the outbox, which `#pump` empties a
   * few at a time, letting the event loop run in between: what a tick or a
   * handler sends never holds up receiving and the API for long (each
   * datagram is signed, an ElectionClosed also gets a signed ticket). Past
   * `MAX_OUTBOX` waiting datagrams one is dropped and counted
   * (`drops.outboxFull`): retransmitted later, like a lost datagram.
   */
  #sendTo(nodeId: string, message: ControlMessage): void {
    if (this.#outbox.length - this.#outboxHead >= MAX_OUTBOX) {
      this.#datagrams.drops.outboxFull++;
      return;
    }
    this.#outbox.push({ nodeId, message });
    if (!this.#pumping) void this.#pump();
  }

  /** Sends the outbox's datagrams, `PUMP_BATCH` at a time, yielding to the event loop between. */
  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (this.#outboxHead < this.#outbox.length && !this.#closed) {
        const end = Math.min(this.#outbox.length, this.#outboxHead + PUMP_BATCH);
        for (; this.#outboxHead < end; this.#outboxHead++) {
          const { nodeId, message } = this.#outbox[this.#outboxHead];
          this.#dispatch(nodeId, message);
        }
        if (this.#outboxHead > 4096) {
          this.#outbox.splice(0, this.#outboxHead);
          this.#outboxHead = 0;
        }
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } finally {
      this.#outbox.length = 0;
      this.#outboxHead = 0;
      this.#pumping = false;
    }
  }

  #dispatch(nodeId: string, message: ControlMessage): void {
    const agent = this.agents.get(nodeId);
    if (!agent) return;
    // A full send queue would drop it: no ticket is signed for nothing.
    if (this.socket.dropIfFull()) return;
    if (message.type === "electionClosed" && message.ticket === undefined) {
      void this.#sendClosed(nodeId, message);
      return;
    }
    this.socket.send(message, { hostname: agent.host, port: agent.udpPort }, nodeId);
  }

  /**
   * ElectionClosed with the member's ticket: what the leader's blob server
   * admits it with (transfer/blob_auth.ts). The leader gets none (it
   * downloads from this control plane), nor does a device not enrolled.
   */
  async #sendClosed(nodeId: string, message: ElectionClosed): Promise<void> {
    const entry = this.#elections.get(message.manifestId);
    const device = this.enrollment.device(nodeId);
    const publicKey = device === undefined ? undefined : publicKeyOf(device.publicKey);
    let ticket: Uint8Array | undefined;
    if (entry !== undefined && publicKey !== undefined && nodeId !== message.leaderNodeId) {
      try {
        ticket = await signTicket({
          manifestId: message.manifestId,
          digest: entry.election.announce.blobDigest,
          nodeId,
          publicKey,
          expires: Date.now() + TICKET_TTL_MS,
        }, this.enrollment.key.privateKey);
      } catch (err) {
        this.#log(`cannot sign a blob ticket for ${nodeId}: ${describeOsError(err)}`);
      }
    }
    const agent = this.agents.get(nodeId);
    if (!agent || this.#closed) return;
    const swarmed = entry === undefined ? message : this.#swarmed(entry.election, nodeId, message);
    this.socket.send(ticket === undefined ? swarmed : { ...swarmed, ticket }, {
      hostname: agent.host,
      port: agent.udpPort,
    }, nodeId);
  }

  /**
   * ElectionClosed for one member of the swarm: its own sources
   * (`swarm_plan.ts`: the leader or other members, who serve the pieces they
   * hold) and the blob's piece list. While the piece list is not computed yet,
   * the election's own message (the leader as the one source, the blob whole).
   */
  #swarmed(election: Election, nodeId: string, message: ElectionClosed): ElectionClosed {
    const pieceList = this.#pieceLists.get(toHex(election.announce.blobDigest));
    if (pieceList?.kind !== "ready") return message;
    const plan = this.#swarmPlanOf(election, message.leaderNodeId);
    const usable = (id: string) => {
      const agent = this.agents.get(id);
      return agent !== undefined && Date.now() - agent.lastSeen <= this.#agentTimeoutMs;
    };
    const ids = sourcesOf(nodeId, plan, usable);
    // Not heard from yet (its ElectionClosed goes with the Announce): the leader, until it answers.
    if (ids === undefined) return { ...message, pieceListDigest: pieceList.digest };
    const sources: SwarmSource[] = [];
    for (const id of ids) {
      if (id === message.leaderNodeId) {
        sources.push(message.sources[0]);
        continue;
      }
      const agent = this.agents.get(id);
      if (agent !== undefined) {
        sources.push({ nodeId: id, host: agent.host, p2pPort: agent.p2pPort });
      }
    }
    if (sources.length === 0) sources.push(message.sources[0]);
    return { ...message, sources: fitSources(message, sources), pieceListDigest: pieceList.digest };
  }

  /**
   * The election's swarm plan (`swarm_plan.ts`): its members' positions, made the first time a
   * member's sources are needed, extended as members join (no position changes), made anew
   * when one leaves or the leader changes.
   */
  #swarmPlanOf(election: Election, leader: string): SwarmPlan {
    // Only members that answered: one never heard from may not run, and could not serve.
    const cached = this.#swarmPlans.get(election.manifestId);
    // Unchanged membership: no copy of the members per ElectionClosed sent.
    if (cached?.leader === leader && cached.count === election.answeredCount) return cached.plan;
    const members = election.answeredMembers;
    if (cached !== undefined && cached.leader === leader) {
      const extended = extendPlan(cached.plan, members);
      if (extended !== undefined) {
        this.#swarmPlans.set(election.manifestId, {
          plan: extended,
          count: members.length,
          leader,
        });
        return extended;
      }
    }
    // A memo of plans: forgetting every entry now and then bounds it (members keep the
    // sources they were sent; only later ones get a new plan's).
    if (this.#swarmPlans.size >= 4096) this.#swarmPlans.clear();
    const plan = planSwarm(leader, members);
    this.#swarmPlans.set(election.manifestId, { plan, count: members.length, leader });
    return plan;
  }

  /**
   * Computes (once per blob) the piece list an election's members download by,
   * stores it as a blob this control plane serves, and remembers its digest.
   */
  #preparePieceList(blobDigest: Uint8Array, blobSize: number): void {
    const hex = toHex(blobDigest);
    if (this.#pieceLists.has(hex)) return;
    this.#pieceLists.set(hex, { kind: "building" });
    const pieceSize = this.#pieceSize ?? choosePieceSize(blobSize);
    const building = (async () => {
      try {
        const list = await buildPieceListFromFile(this.store.pathOf(blobDigest), pieceSize);
        if (toHex(list.blobDigest) !== hex) {
          throw new Error(`the stored blob's digest is ${toHex(list.blobDigest)}: it is damaged`);
        }
        const bytes = encodePieceList(list);
        const imported = await this.store.importStream(ReadableStream.from([bytes]));
        this.#pieceLists.set(hex, { kind: "ready", digest: imported.digest });
      } catch (err) {
        this.#pieceLists.delete(hex); // the next election of this blob tries again
        this.#log(`cannot build the piece list of ${hex.slice(0, 16)}: ${describeOsError(err)}`);
      }
    })();
    // `close` waits for it: no blob is half-written when the store's directory goes.
    this.#background.add(building);
    void building.finally(() => this.#background.delete(building));
  }

  // --- helpers ---

  #rememberRelease(record: ReleaseRecord): void {
    this.#documentDigests.add(record.digest);
    this.#releases.set(releaseKey(record.model, record.version), record);
    this.#highestCounter.set(
      record.model,
      Math.max(this.#highestCounter.get(record.model) ?? 0, record.counter),
    );
  }

  /**
   * Stores a signed document's bytes as a blob, kept from then on (a device
   * may fetch an older document). Until it is claimed it counts as an upload in
   * flight, so no refused upload's blob of the same bytes is deleted under it.
   */
  async #importDocument(bytes: Uint8Array, digest: string): Promise<void> {
    this.#importing++;
    try {
      await this.store.importStream(ReadableStream.from([bytes]), fromHex(digest));
      this.#documentDigests.add(digest);
    } finally {
      this.#importing--;
      this.#collectGarbage();
    }
  }

  /**
   * Deletes the blobs of refused uploads that nothing refers to (no version,
   * patch or signed document), but only while no upload is in flight: an
   * upload of the same bytes may have found the blob present and be about to
   * record it. Check and delete happen in one synchronous step, so no upload
   * starts between them (one that starts later writes the blob anew).
   */
  #collectGarbage(): void {
    if (this.#importing > 0) return;
    for (const digest of [...this.#garbage]) {
      this.#garbage.delete(digest);
      if (this.#isReferenced(digest)) continue;
      const path = this.store.pathOf(fromHex(digest));
      try {
        Deno.removeSync(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          this.#log(`cannot delete the refused upload's blob ${path}: ${describeOsError(err)}`);
        }
      }
    }
  }

  /** Whether a stored version, patch or signed document is the blob `digest`. */
  #isReferenced(digest: string): boolean {
    return this.#versions.some((v) => v.digest === digest) || this.patches.isPatch(digest) ||
      this.#isDocument(digest);
  }

  /** Whether `digest` is a stored release document's blob (the delegation or any manifest). */
  #isDocument(digest: string): boolean {
    return this.#delegation?.digest === digest || this.#documentDigests.has(digest);
  }

  async #readDocument(digest: string): Promise<Uint8Array> {
    const path = this.store.pathOf(fromHex(digest));
    try {
      return await Deno.readFile(path);
    } catch (err) {
      throw ioError("read the stored document", path, err);
    }
  }

  #version(model: string, version: string): VersionRecord | undefined {
    return this.#versions.find((v) => v.model === model && v.version === version);
  }

  #versionByDigest(model: string, digest: string): VersionRecord | undefined {
    return this.#versions.find((v) => v.model === model && v.digest === digest);
  }

  #runningDigests(model: string): Set<string> {
    const out = new Set<string>();
    for (const agent of this.agents.values()) {
      const digest = agent.active[model];
      if (digest) out.add(digest);
    }
    return out;
  }

  /** Writes the progress recorded since the last flush, in one batch. */
  #flushProgress(): void {
    if (this.#dirtyProgress.size === 0) return;
    const batch = [...this.#dirtyProgress.values()].flatMap((m) => [...m.values()]);
    this.#dirtyProgress.clear();
    this.#persistInChunks(batch, (chunk) => this.stateStore.setRolloutAgents(chunk));
  }

  /**
   * Writes `items` in chunks of `WRITE_CHUNK` (one transaction each in
   * SQLite), in order after every earlier write. They are not spread over
   * event-loop turns: `status` waits for every queued write, and would then
   * wait for those turns too.
   */
  #persistInChunks<T>(items: readonly T[], write: (chunk: readonly T[]) => Promise<void>): void {
    for (let i = 0; i < items.length; i += WRITE_CHUNK) {
      const chunk = items.slice(i, i + WRITE_CHUNK);
      void this.#persist(() => write(chunk));
    }
  }

  /** Writes the agents changed since the last flush, in one batch. */
  #flushAgents(): void {
    this.#agentsFlushedAt = Date.now();
    if (this.#dirtyAgents.size === 0) return;
    const batch = [...this.#dirtyAgents.values()];
    this.#dirtyAgents.clear();
    this.#persistInChunks(batch, (chunk) => this.stateStore.putAgents(chunk));
  }

  #flushServed(): void {
    for (const [digest, bytes] of this.blobServer.servedByDigest()) {
      const before = this.#servedFlushed.get(digest) ?? 0;
      if (bytes > before) {
        void this.#persist(() => this.stateStore.addServed(digest, bytes - before));
        this.#servedFlushed.set(digest, bytes);
      }
    }
  }
}

/** Where the piece list of one blob stands. */
type PieceListState = { kind: "building" } | { kind: "ready"; digest: Uint8Array };

/**
 * Drops trailing sources (never the first) until the ElectionClosed fits a
 * datagram with the longest ticket: long names can make four sources too many.
 */
function fitSources(message: ElectionClosed, sources: SwarmSource[]): SwarmSource[] {
  const kept = sources.slice(0, MAX_SOURCES);
  const ticketRoom = new Uint8Array(MAX_TICKET_BYTES);
  while (kept.length > 1) {
    try {
      encodeControlMessage({ ...message, sources: kept, ticket: ticketRoom });
      break;
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      kept.pop();
    }
  }
  return kept;
}

/**
 * The elections' datagrams taken in turn, one of each election's at a time,
 * each election's in its own order: when the socket's send queue is full
 * (transfer/control_socket.ts `MAX_SEND_QUEUE`), every election loses some of
 * its datagrams (retransmitted later), not the last elections all of theirs.
 */
export function* interleave<T>(lists: readonly (readonly T[])[]): Generator<T> {
  const longest = Math.max(0, ...lists.map((l) => l.length));
  for (let i = 0; i < longest; i++) {
    for (const list of lists) if (i < list.length) yield list[i];
  }
}

function releaseKey(model: string, version: string): string {
  return `${model}/${version}`;
}
