/**
 * The agent on each device: heartbeats to the control plane, answers
 * announces with a Bid, leads (downloads the blob from the control plane and
 * says LeaderReady) or follows (downloads from the leader, the control plane
 * as the last resort), applies the patch to the active model, verifies it and
 * switches `DATA/models/NAME/current` atomically; it serves the blobs it
 * holds to its region's followers.
 *
 * The update lifecycle itself (which step follows which, leader or follower,
 * recovery after a restart, failure bookkeeping) is the pure state machine of
 * update_machine.ts; this class is its shell: it gathers the facts, performs
 * the actions (sockets, timers, files, apply) and feeds back their results.
 * Every `state.json` read and write goes through `ModelStateFiles`
 * (lifecycle_state.ts).
 *
 * Signed releases (`trust: pinned`, agent --trust-root): before it bids on an
 * Announce — so before any byte of the blob is downloaded — the agent fetches
 * the delegation and release manifest the Announce names from the control
 * plane's blob server and decides with release/trust_policy.ts against its
 * trust memory (DATA/trust.json, trust_file.ts). A refused release gets no
 * Bid, a Status `failed` "refused: …", a `refusal` in the model's
 * `state.json` and a log line; repeats of the same announce get the same
 * answer without another fetch. The update machine has it checked again
 * before the switch and the memory persisted first. With `trust: insecure`
 * (agent --insecure) nothing is checked.
 *
 * It keeps no election state on disk: after a restart its heartbeat tells the
 * control plane what it runs, and the control plane tells it again what to do
 * (stateless recovery). Downloads resume from the partial file they left.
 *
 * @module
 */

import type {
  Announce,
  ControlMessage,
  ElectionClosed,
  StatusState,
} from "../transfer/control_messages.ts";
import {
  CONTROL_PLANE_RECEIVER,
  encodeControlMessage,
  MAX_DATAGRAM,
  SWARM_STRIPES,
} from "../transfer/control_messages.ts";
import { applyFile } from "../codec/applier.ts";
import { fromHex, toHex } from "../kernel/blake3.ts";
import { BlobServer, type BlobServerLimits } from "../transfer/blob_server.ts";
import { type BlobCredentials, ticketHolders } from "../transfer/blob_auth.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { type BlobSource, downloadBlob, fetchSmallBlob } from "../transfer/blob_client.ts";
import { decodePieceListFor, MAX_PIECE_LIST_SIZE } from "../transfer/piece_list.ts";
import { FilePieceStore } from "../transfer/piece_store.ts";
import { downloadPieces } from "../transfer/swarm_client.ts";
import { MAX_DOCUMENT_BYTES } from "../release/documents.ts";
import type { PublicKeyInfo, SigningKey } from "../release/keys.ts";
import {
  type Announced,
  checkRelease,
  type RefusalKind,
  rememberDelegation,
  type TrustDecision,
  type TrustMemory,
} from "../release/trust_policy.ts";
import { TrustMemoryFile } from "./trust_file.ts";
import { ControlSocket, type UdpAddress } from "../transfer/control_socket.ts";
import type { FaultInjector } from "../transfer/faults.ts";
import {
  DEFAULT_AGENT_P2P_PORT,
  DEFAULT_AGENT_UDP_PORT,
  DEFAULT_CP_HTTP_PORT,
} from "../transfer/default_ports.ts";
import { deviceKey, type EnrollmentFile, readEnrollment, requestEnrollment } from "./enrollment.ts";
import { publicKeyOf } from "../release/enrollment.ts";
import {
  type AuthDropCounters,
  authDropCounters,
  DatagramAuthenticator,
} from "../transfer/datagram_auth.ts";
import { builtinHealthCheck, type HealthResult, runHealthCommand } from "./health_check.ts";
import { ModelStateFiles, type RefusalRecord, type Step } from "./lifecycle_state.ts";
import { activeDigest, activeModels, currentPath, switchTo } from "./model_slots.ts";
import {
  advance,
  answerAnnounce,
  applyChange,
  blobsToKeep,
  newJob,
  type Outcome,
  recover,
  reportedVersion,
  type StartFacts,
  type Transition,
  type UpdateAction,
  type UpdateEvent,
  type UpdateJob,
  type UpdatePolicy,
} from "./update_machine.ts";
import { statfs } from "node:fs/promises";
import { formatBytes } from "../kernel/units.ts";
import { DiskSpaceError } from "./errors.ts";
import { KeyedMutex, type Release } from "./keyed_mutex.ts";

/**
 * Which releases the agent installs: `pinned` — only those signed under a
 * delegation of this root key (agent --trust-root); `insecure` — whatever the
 * control plane, or anyone spoofing it, announces (agent --insecure).
 */
export type AgentTrust =
  | { readonly kind: "pinned"; readonly root: PublicKeyInfo }
  | { readonly kind: "insecure" };

/** Options of `Agent.start`. */
export interface AgentOptions {
  readonly nodeId: string;
  readonly trust: AgentTrust;
  /** This device's class (agent --device-class): a release for another class is refused. */
  readonly deviceClass?: string;
  /** Deadline of fetching one signed document (default 10 s). */
  readonly documentDeadlineMs?: number;
  readonly region: string;
  readonly bind: string;
  readonly dataDir: string;
  readonly controlPlane: UdpAddress;
  readonly udpPort?: number;
  readonly p2pPort?: number;
  /** Heartbeat period (default 2 s). */
  readonly heartbeatMs?: number;
  /** LeaderReady retransmission period (default 500 ms). */
  readonly retryMs?: number;
  /** Idle timeout of blob transfers (default 10 s). */
  readonly transferTimeoutMs?: number;
  /**
   * Limits of the agent's blob server; `minRate` also applies to its downloads
   * (a leader below it is left for the control plane). Defaults of `BlobServer`.
   */
  readonly blobLimits?: BlobServerLimits;
  /** Health command (`sh -c`, `{model}` and `POOLBOY_MODEL` are the model's path); default: built-in check. */
  readonly healthCmd?: string;
  /** Health command timeout (default 60 s). */
  readonly healthTimeoutMs?: number;
  /** Failures of a version in one rollout after which it is not tried again (default 3). */
  readonly poisonAfter?: number;
  /** Command run (`sh -c`, `{model}`/`POOLBOY_MODEL`) after each switch, e.g. to reload the app. */
  readonly onSwitchCmd?: string;
  /** Free bytes to leave on the data directory's filesystem (default 64 MiB). */
  readonly minFreeBytes?: number;
  /** Earlier versions kept per model for rollback (default 1: the backup). */
  readonly keepBackups?: number;
  readonly log?: (line: string) => void;
  /** Transport faults to inject (tests only; the CLI never passes any). */
  readonly faults?: FaultInjector;
  /** Hooks into the update lifecycle (tests only). */
  readonly hooks?: AgentHooks;
  /**
   * An enrolment token (agent --enroll): used at start when DATA/enrollment.json
   * does not exist; ignored once the device is enrolled.
   */
  readonly enrollToken?: string;
  /** The control plane's HTTP API port, on the control plane's host (default 7402). */
  readonly controlPlaneHttpPort?: number;
  /** Without a token: how often to ask again while pending (default 30 s). */
  readonly enrollRetryMs?: number;
}

/** Test-only hooks into the update lifecycle; none by default. */
export interface AgentHooks {
  /**
   * Called right after a step of an update to `target` is on disk, before
   * anything else happens (a crash test exits the process here, as a power cut
   * would leave it).
   */
  readonly afterStepPersisted?: (step: Step, target: string | null) => void;
  /**
   * Awaited right after the release of an update to `target` was checked
   * again, before it is remembered and switched to (a test widens the window
   * another update of the model must not slip into).
   */
  readonly afterReleaseChecked?: (target: string) => Promise<void>;
}

/** Where downloaded bytes came from: a peer of the region, or the control plane. */
export type SourceKind = "peer" | "controlPlane";

/** Counters since start, for the metrics (agent/metrics_server.ts). */
export interface AgentCounters {
  /** Updates that finished, by how they ended. */
  readonly updates: Partial<Record<Outcome, number>>;
  /** Blob body bytes received (whole-blob and piece downloads), by source. */
  readonly downloadedBytes: Record<SourceKind, number>;
  /** Swarm pieces received that verified, by source. */
  readonly piecesVerified: Record<SourceKind, number>;
  /** Swarm piece requests refused (not yet, busy, not found), by source. */
  readonly pieceRefusals: Record<SourceKind, number>;
}

/** Counters of datagrams the agent refused (the authentication's reasons too). */
export interface AgentDrops extends AuthDropCounters {
  unexpectedSender: number;
  unknownElection: number;
  wrongDirection: number;
}

interface ElectionState {
  readonly announce: Announce;
  leader: boolean;
  closed?: ElectionClosed;
  /** The signed documents accepted for it (null: `insecure`, nothing checked). */
  readonly documents: ReleaseDocuments | null;
}

/** The bytes of an announce's delegation and release manifest, as fetched. */
interface ReleaseDocuments {
  readonly delegation: Uint8Array | null;
  readonly release: Uint8Array | null;
}

/** What the check of an announce concluded. */
type Vetting =
  | { readonly ok: true; readonly documents: ReleaseDocuments | null }
  | { readonly ok: false; readonly refusal: Omit<RefusalRecord, "at"> };

/** A job's hold on its model's switch lock (null until it reaches the release check or the switch). */
interface SwitchLock {
  readonly model: string;
  release: Release | null;
}

/** A refusal remembered for repeats of its announce. */
interface RememberedRefusal {
  /** What the announce named (a repeat naming other things is checked again). */
  readonly fingerprint: string;
  readonly refusal: Omit<RefusalRecord, "at">;
  /** Until when (ms since the epoch) repeats get it without a new check. */
  readonly until: number;
}

/** Most blob digests listed in a heartbeat (it must fit in one datagram). */
const MAX_HELD_IN_HEARTBEAT = 20;

/** Longest refusal reason kept and sent (a Status detail's limit). */
const MAX_REASON = 256;

/** Most refused announces remembered (the oldest is forgotten first). */
const MAX_REMEMBERED_REFUSALS = 256;

/** How long documents that could not be fetched are not asked for again, for one announce. */
const UNAVAILABLE_RETRY_MS = 5_000;

/** A running agent. */
export class Agent {
  readonly options: AgentOptions;
  readonly store: BlobStore;
  readonly blobServer: BlobServer;
  readonly socket: ControlSocket;
  /** The models' `state.json` files. */
  readonly states: ModelStateFiles;
  readonly startedAt = Date.now();
  readonly drops: AgentDrops = {
    unexpectedSender: 0,
    unknownElection: 0,
    wrongDirection: 0,
    ...authDropCounters(),
  };
  /** Counters since start, for the metrics. */
  readonly counters: AgentCounters = {
    updates: {},
    downloadedBytes: { peer: 0, controlPlane: 0 },
    piecesVerified: { peer: 0, controlPlane: 0 },
    pieceRefusals: { peer: 0, controlPlane: 0 },
  };
  /** The version name of each model's active digest, as its last update named it (since start). */
  readonly #versionNames = new Map<string, { readonly digest: string; readonly version: string }>();
  /**
   * Checks the control plane's datagrams against the key pinned at enrolment,
   * signed for this agent's node id.
   */
  readonly #auth: DatagramAuthenticator;
  readonly #elections = new Map<string, ElectionState>();
  /** Updates in progress, by target digest. */
  readonly #jobs = new Map<string, Promise<void>>();
  /**
   * Per model: held by a job from its release check (or, without signed
   * releases, its switch) to its end (committed, rolled back or failed), so
   * two updates of one model never interleave "check again → remember →
   * switch → health check": the second checks against what the first wrote.
   */
  readonly #switchLocks = new KeyedMutex();
  /**
   * Blobs known to be complete in the store (hex): a leader of any election
   * for one of them may say LeaderReady, whichever election fetched it.
   */
  readonly #readyBlobs = new Set<string>();
  /** Blob downloads in progress, by blob digest. */
  readonly #downloads = new Map<string, Promise<void>>();
  readonly #log: (line: string) => void;
  readonly #policy: UpdatePolicy;
  /** The trust memory (null: `insecure`). */
  readonly #trust: TrustMemoryFile | null;
  /** Refused announces, by manifest id (bounded). */
  readonly #refusals = new Map<string, RememberedRefusal>();
  /** Checks of announces in progress, by manifest id and fingerprint. */
  readonly #vetting = new Map<string, Promise<Vetting>>();
  /** Announces being handled apart from the receive loop (`pinned` only). */
  readonly #announcing = new Set<Promise<void>>();
  /** This device's key (DATA/device.key, made at first start). */
  #deviceKey: SigningKey | undefined;
  /** The enrolment (DATA/enrollment.json): undefined until enrolled. */
  #enrollment: EnrollmentFile | undefined;
  #enrollTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #retryTimer: ReturnType<typeof setInterval> | undefined;
  #receiving: Promise<void> | undefined;
  #closed = false;
  readonly #abort = new AbortController();

  private constructor(
    options: AgentOptions,
    store: BlobStore,
    blobServer: BlobServer,
    socket: ControlSocket,
    trust: TrustMemoryFile | null,
  ) {
    this.options = options;
    this.#auth = new DatagramAuthenticator(options.nodeId, this.drops);
    this.#trust = trust;
    this.store = store;
    this.blobServer = blobServer;
    this.socket = socket;
    this.states = new ModelStateFiles(options.dataDir);
    this.#log = options.log ?? (() => {});
    this.#policy = {
      poisonAfter: options.poisonAfter ?? 3,
      keepBackups: options.keepBackups ?? 1,
      checkReleases: options.trust.kind === "pinned",
    };
  }

  /** Binds the ports, then heartbeats and answers the control plane until `close`. */
  static async start(options: AgentOptions): Promise<Agent> {
    await Deno.mkdir(`${options.dataDir}/models`, { recursive: true });
    // The device's identity first: a refused enrolment token stops the agent before any port.
    const key = await deviceKey(options.dataDir);
    let enrollment = await readEnrollment(options.dataDir);
    if (enrollment === undefined && options.enrollToken !== undefined) {
      const result = await requestEnrollment({
        dataDir: options.dataDir,
        nodeId: options.nodeId,
        region: options.region,
        key,
        controlPlane: httpAddressOf(options),
        token: options.enrollToken,
      });
      if (result.kind === "enrolled") enrollment = result.enrollment;
    }
    // A damaged trust memory stops the agent here, before any port is bound.
    const trust = options.trust.kind === "pinned"
      ? await TrustMemoryFile.open(options.dataDir)
      : null;
    const store = await BlobStore.open(`${options.dataDir}/blobs`);
    const socket = ControlSocket.open(options.bind, options.udpPort ?? DEFAULT_AGENT_UDP_PORT, {
      faults: options.faults,
      // Every datagram it sends is signed with the device key (protocol 3).
      signer: () => key.privateKey,
    });
    // Serves only a device the pinned control plane gave a ticket for the blob (protocol version 2).
    const self: { agent?: Agent } = {};
    const blobServer = BlobServer.start({
      hostname: options.bind,
      port: options.p2pPort ?? DEFAULT_AGENT_P2P_PORT,
      store,
      faults: options.faults?.transport,
      ...options.blobLimits,
      authorize: ticketHolders(() => {
        const pinned = self.agent === undefined ? undefined : self.agent.#enrollment;
        return pinned === undefined ? undefined : publicKeyOf(pinned.controlPlaneKey);
      }),
    });
    const agent = new Agent(options, store, blobServer, socket, trust);
    self.agent = agent;
    agent.#deviceKey = key;
    agent.#enrollment = enrollment;
    if (enrollment === undefined) agent.#askToEnrol();
    await agent.#recover();
    agent.#receiving = agent.#receive();
    agent.#heartbeatTimer = setInterval(() => agent.heartbeat(), options.heartbeatMs ?? 2000);
    agent.#retryTimer = setInterval(() => agent.#retransmit(), options.retryMs ?? 500);
    await agent.heartbeat();
    agent.#log(
      `agent ${options.nodeId} (${options.region}) on ${options.bind}: udp ${socket.port}, blobs ${blobServer.port}; ${
        options.trust.kind === "pinned"
          ? `installs releases signed under root key ${options.trust.root.keyId.slice(0, 16)}${
            options.deviceClass === undefined ? "" : ` for device class ${options.deviceClass}`
          }`
          : "installs unsigned releases (--insecure)"
      }`,
    );
    return agent;
  }

  /** Stops; a download in progress keeps its partial file for next time. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeatTimer);
    clearInterval(this.#retryTimer);
    clearTimeout(this.#enrollTimer);
    this.#abort.abort();
    this.socket.close();
    await this.#receiving;
    await Promise.allSettled([...this.#announcing]);
    await Promise.allSettled([...this.#jobs.values()]);
    await this.blobServer.close();
  }

  /** The enrolment (DATA/enrollment.json), or undefined while the device is not enrolled. */
  get enrollment(): EnrollmentFile | undefined {
    return this.#enrollment;
  }

  /** Updates running now. */
  get updatesInProgress(): number {
    return this.#jobs.size;
  }

  /** The version name a finished update gave `digest` of `model` since start, if any. */
  versionName(model: string, digest: string): string | undefined {
    const known = this.#versionNames.get(model);
    return known?.digest === digest ? known.version : undefined;
  }

  /** Counts a finished job (metrics), and remembers the name of the version it left active. */
  #finished(job: UpdateJob): void {
    if (job.phase.name !== "finished") return;
    const outcome = job.phase.outcome;
    this.counters.updates[outcome] = (this.counters.updates[outcome] ?? 0) + 1;
    if (outcome === "committed" || outcome === "alreadyActive") {
      // Bounded: one entry per model directory.
      this.#versionNames.set(job.update.model, {
        digest: job.update.target,
        version: job.update.version,
      });
    }
  }

  /** This device's key (DATA/device.key). */
  get deviceKey(): SigningKey {
    return this.#deviceKey!;
  }

  /**
   * Not enrolled and no token: asks the control plane to enrol this device
   * (it is pending until an admin accepts it), again every `enrollRetryMs`
   * until it is enrolled; the first key it is then given is pinned (trust on
   * first use).
   */
  #askToEnrol(): void {
    if (this.#closed || this.#enrollment !== undefined) return;
    const ask = async () => {
      try {
        const result = await requestEnrollment({
          dataDir: this.options.dataDir,
          nodeId: this.options.nodeId,
          region: this.options.region,
          key: this.deviceKey,
          controlPlane: httpAddressOf(this.options),
        });
        if (result.kind === "enrolled") {
          this.#enrollment = result.enrollment;
          this.#log(`agent ${this.options.nodeId}: enrolled (accepted by an admin)`);
          return;
        }
        this.#log(`agent ${this.options.nodeId}: enrolment pending (poolboy device accept)`);
      } catch (err) {
        this.#log(
          `agent ${this.options.nodeId}: cannot enrol: ${err instanceof Error ? err.message : err}`,
        );
      }
      if (!this.#closed) {
        this.#enrollTimer = setTimeout(ask, this.options.enrollRetryMs ?? 30_000);
      }
    };
    void ask();
  }

  /** Sends a heartbeat now. */
  async heartbeat(): Promise<void> {
    if (this.#closed) return;
    const active = await activeModels(this.options.dataDir);
    for (const [model, digest] of active) {
      const state = await this.states.read(model).catch(() => undefined);
      const reported = reportedVersion(state, digest);
      if (reported === null) active.delete(model);
      else active.set(model, reported);
    }
    const held = (await this.store.list()).slice(-MAX_HELD_IN_HEARTBEAT);
    const message: ControlMessage = {
      type: "heartbeat",
      nodeId: this.options.nodeId,
      region: this.options.region,
      host: this.options.bind,
      udpPort: this.socket.port,
      p2pPort: this.blobServer.port,
      held,
      active: [...active].map(([model, digest]) => [model, fromHex(digest)] as const),
      served: this.blobServer.bytesServed,
      startedAt: this.startedAt,
    };
    // Drop held digests until it fits (many models with many blobs).
    let m = message;
    while (encodeSize(m) > MAX_DATAGRAM && m.held.length > 0) {
      m = { ...m, held: m.held.slice(1) };
    }
    await this.socket.send(m, this.options.controlPlane);
  }

  async #receive(): Promise<void> {
    for await (const { message, from, opened } of this.socket.messages()) {
      if (from.hostname !== this.options.controlPlane.hostname) {
        this.drops.unexpectedSender++;
        continue;
      }
      // Only the control plane it enrolled with: signed by the pinned key, never replayed.
      const pinned = this.#enrollment === undefined
        ? undefined
        : publicKeyOf(this.#enrollment.controlPlaneKey);
      if (!(await this.#auth.accept(CONTROL_PLANE_RECEIVER, pinned, opened, Date.now()))) continue;
      const handling = this.#handle(message).catch((err) => {
        this.#log(`error handling ${message.type}: ${err instanceof Error ? err.message : err}`);
      });
      if (message.type === "announce" && this.options.trust.kind === "pinned") {
        // Its check fetches documents (up to a deadline): the other datagrams go on meanwhile.
        this.#announcing.add(handling);
        handling.finally(() => this.#announcing.delete(handling));
      } else {
        await handling;
      }
    }
  }

  async #handle(message: ControlMessage): Promise<void> {
    switch (message.type) {
      case "announce":
        return await this.#onAnnounce(message);
      case "leaderAck": {
        const election = this.#elections.get(message.manifestId);
        if (!election) {
          this.drops.unknownElection++;
          return;
        }
        if (!election.leader) {
          election.leader = true;
          this.#log(`leader of ${message.manifestId}`);
        }
        await this.#status(election.announce.manifestId, "downloading", "leader");
        this.#startJob(election);
        return;
      }
      case "electionClosed": {
        const election = this.#elections.get(message.manifestId);
        if (!election) {
          this.drops.unknownElection++;
          return;
        }
        election.closed = message;
        await this.#send({
          type: "closedAck",
          manifestId: message.manifestId,
          nodeId: this.options.nodeId,
        });
        this.#startJob(election);
        return;
      }
      default:
        this.drops.wrongDirection++;
    }
  }

  async #onAnnounce(announce: Announce): Promise<void> {
    const running = (await activeModels(this.options.dataDir)).get(announce.model) ?? null;
    const answer = answerAnnounce(
      running,
      toHex(announce.targetDigest),
      announce.baseDigest ? toHex(announce.baseDigest) : null,
    );
    switch (answer.kind) {
      case "upToDate":
        return await this.#status(announce.manifestId, "up-to-date", "");
      case "wrongBase":
        await this.#status(announce.manifestId, "failed", answer.detail);
        return await this.heartbeat();
      case "bid": {
        const known = this.#elections.get(announce.manifestId);
        // The same announce again (our bid was lost) was accepted already.
        if (!known || fingerprintOf(known.announce) !== fingerprintOf(announce)) {
          const vetting = await this.#vet(announce);
          if (!vetting.ok) {
            return await this.#status(announce.manifestId, "failed", vetting.refusal.reason);
          }
          if (!this.#elections.has(announce.manifestId)) {
            this.#elections.set(announce.manifestId, {
              announce,
              leader: false,
              documents: vetting.documents,
            });
          }
        }
        await this.#send({
          type: "bid",
          manifestId: announce.manifestId,
          nodeId: this.options.nodeId,
        });
      }
    }
  }

  /**
   * Whether this agent may bid on `announce`: under `insecure`, always; under
   * `pinned`, when its signed documents pass the trust policy. A refusal is
   * recorded (state.json, log) once and remembered for repeats of the
   * announce; a check in progress is shared by the repeats that arrive
   * meanwhile. Documents that cannot be fetched refuse this announce only.
   */
  async #vet(announce: Announce): Promise<Vetting> {
    if (this.options.trust.kind === "insecure") return { ok: true, documents: null };
    const fingerprint = fingerprintOf(announce);
    const known = this.#refusals.get(announce.manifestId);
    if (known && known.fingerprint === fingerprint && Date.now() < known.until) {
      return { ok: false, refusal: known.refusal };
    }
    const key = `${announce.manifestId} ${fingerprint}`;
    let running = this.#vetting.get(key);
    if (!running) {
      running = this.#vetNow(announce).then(async (vetting) => {
        if (!vetting.ok) await this.#recordRefusal(announce, fingerprint, vetting.refusal);
        return vetting;
      }).finally(() => this.#vetting.delete(key));
      this.#vetting.set(key, running);
    }
    return await running;
  }

  /** Fetches the announce's documents and runs the trust policy on them. */
  async #vetNow(announce: Announce): Promise<Vetting> {
    const refused = (kind: RefusalKind | "unavailable", reason: string): Vetting => ({
      ok: false,
      refusal: { kind, reason: reason.slice(0, MAX_REASON), manifestId: announce.manifestId },
    });
    let documents: ReleaseDocuments;
    try {
      documents = {
        delegation: await this.#fetchDocument(announce, announce.delegationDigest),
        release: await this.#fetchDocument(announce, announce.releaseDigest),
      };
    } catch (err) {
      if (this.#closed) throw err;
      return refused(
        "unavailable",
        `refused: cannot fetch the signed documents: ${err instanceof Error ? err.message : err}`,
      );
    }
    const { decision } = await this.#decide(documents, {
      model: announce.model,
      version: announce.version,
      target: toHex(announce.targetDigest),
      targetSize: announce.targetSize,
    });
    // A delegation that passed is remembered even when its release is refused: a key a newer
    // delegation dropped stays revoked here whatever the control plane serves next.
    const passed = decision.delegation;
    if (passed && this.#trust && passed.version > this.#trust.memory.delegationVersion) {
      await this.#trust.remember(rememberDelegation(this.#trust.memory, passed)).catch((err) =>
        this.#log(`cannot record delegation version ${passed.version}: ${err}`)
      );
    }
    return decision.ok ? { ok: true, documents } : refused(decision.kind, decision.reason);
  }

  /** The trust policy's decision on `documents` for `announced`, now, and the memory it used. */
  async #decide(
    documents: ReleaseDocuments,
    announced: Announced,
  ): Promise<{ decision: TrustDecision; memory: TrustMemory }> {
    const trust = this.options.trust;
    if (trust.kind !== "pinned" || this.#trust === null) {
      throw new Error("a release check without a pinned root key (a bug)");
    }
    const memory = this.#trust.memory;
    const decision = await checkRelease({
      root: trust.root,
      delegation: documents.delegation,
      release: documents.release,
      announced,
      deviceClass: this.options.deviceClass ?? null,
      memory,
      now: Date.now(),
    });
    return { decision, memory };
  }

  /** A document the announce names, from its control plane's blob server (null: it names none). */
  async #fetchDocument(announce: Announce, digest: Uint8Array | null): Promise<Uint8Array | null> {
    if (digest === null) return null;
    return await fetchSmallBlob({
      source: { hostname: announce.cpHost, port: announce.cpP2pPort, label: "control-plane" },
      digest,
      maxBytes: MAX_DOCUMENT_BYTES,
      deadlineMs: this.options.documentDeadlineMs ?? 10_000,
      signal: this.#abort.signal,
      credentials: this.#credentials(),
    });
  }

  /** What this device signs its blob requests with (protocol version 2). */
  #credentials(): BlobCredentials {
    return { nodeId: this.options.nodeId, privateKey: this.deviceKey.privateKey };
  }

  /**
   * Logs a refusal and records it in the model's state.json (the active model
   * is not touched); remembers it for repeats of the announce (for
   * `UNAVAILABLE_RETRY_MS` only when the documents could not be fetched).
   */
  async #recordRefusal(
    announce: Announce,
    fingerprint: string,
    refusal: Omit<RefusalRecord, "at">,
  ): Promise<void> {
    this.#log(`${announce.model} ${announce.version} (${announce.manifestId}): ${refusal.reason}`);
    const until = refusal.kind === "unavailable" ? Date.now() + UNAVAILABLE_RETRY_MS : Infinity;
    this.#refusals.delete(announce.manifestId);
    this.#refusals.set(announce.manifestId, { fingerprint, refusal, until });
    while (this.#refusals.size > MAX_REMEMBERED_REFUSALS) {
      this.#refusals.delete(this.#refusals.keys().next().value!);
    }
    await this.states.update(
      announce.model,
      (state) => applyChange(state, { kind: "refused", refusal }, Date.now()),
    ).catch((err) =>
      this.#log(`cannot record the refusal in ${this.states.path(announce.model)}: ${err}`)
    );
  }

  /** Starts (once per target) the download-apply-switch of an election. */
  #startJob(election: ElectionState): void {
    const { announce } = election;
    const target = toHex(announce.targetDigest);
    if (this.#jobs.has(target)) return;
    const job = newJob({
      model: announce.model,
      version: announce.version,
      manifestId: announce.manifestId,
      target,
      blob: toHex(announce.blobDigest),
      isPatch: announce.baseDigest !== null,
    }, this.#policy);
    const lock: SwitchLock = { model: announce.model, release: null };
    const running = this.#runJob(election, job, lock)
      .catch(async (error) => {
        if (this.#closed) return; // interrupted: the state file says where it stood
        await this.#runFailure(election, job, error);
      })
      .finally(() => {
        lock.release?.(); // after the failure path: a roll-back happens under the lock
        this.#jobs.delete(target);
      });
    this.#jobs.set(target, running);
  }

  /** Gathers the facts of a job's start, then runs the machine from there. */
  async #runJob(election: ElectionState, job: UpdateJob, lock: SwitchLock): Promise<void> {
    const { model } = job.update;
    const facts: StartFacts = {
      state: await this.states.read(model),
      active: await activeDigest(this.options.dataDir, model),
      haveTarget: await this.store.has(election.announce.targetDigest),
      role: election.leader
        ? { kind: "leader" }
        : { kind: "follower", leader: election.closed?.leaderNodeId ?? null },
    };
    await this.#drive(election, advance(job, { type: "start", facts }), lock);
  }

  /**
   * Performs a transition's actions, feeding the event an action answers with
   * back into the machine, until a transition ends without one.
   */
  async #drive(
    election: ElectionState | undefined,
    transition: Transition,
    lock?: SwitchLock,
  ): Promise<void> {
    let t = transition;
    for (;;) {
      let event: UpdateEvent | undefined;
      for (const action of t.actions) {
        if (
          lock !== undefined && lock.release === null &&
          (action.type === "checkRelease" || action.type === "switchToTarget")
        ) {
          lock.release = await this.#switchLocks.acquire(lock.model);
          this.#abort.signal.throwIfAborted(); // closed while waiting: switch nothing
        }
        event = (await this.#perform(election, t.job, action)) ?? event;
      }
      if (event === undefined) {
        this.#finished(t.job);
        return;
      }
      t = advance(t.job, event);
    }
  }

  /** The failure path of a job: its bookkeeping (stopped by an error), then its report. */
  async #runFailure(election: ElectionState, job: UpdateJob, error: unknown): Promise<void> {
    const state = await this.states.read(job.update.model).catch(() => null);
    const t = advance(job, { type: "failed", error, state });
    try {
      for (const action of t.actions) await this.#perform(election, t.job, action);
    } catch {
      // The failure is reported all the same.
    }
    this.#finished(t.job);
    for (const action of t.always ?? []) await this.#perform(election, t.job, action);
  }

  /** Does one action of the machine; returns the event it answers with, if any. */
  async #perform(
    election: ElectionState | undefined,
    job: UpdateJob,
    action: UpdateAction,
  ): Promise<UpdateEvent | undefined> {
    const u = job.update;
    const dataDir = this.options.dataDir;
    switch (action.type) {
      case "report":
        await this.#status(u.manifestId, action.state, action.detail);
        return;
      case "checkDiskSpace":
        await this.#checkDiskSpace(this.#announceOf(election));
        return;
      case "persist": {
        const next = await this.states.update(
          u.model,
          (state) => applyChange(state, action.change, Date.now()),
        );
        this.options.hooks?.afterStepPersisted?.(next.step, next.target);
        return;
      }
      case "download": {
        const announce = this.#announceOf(election);
        const controlPlane = {
          hostname: announce.cpHost,
          port: announce.cpP2pPort,
          label: "control-plane",
        };
        const closed = election?.closed;
        if (action.from === "leaderThenControlPlane" && closed?.pieceListDigest) {
          await this.#downloadSwarm(announce, closed, controlPlane);
          return;
        }
        const sources = action.from === "leaderThenControlPlane" && closed
          ? [
            ...closed.sources
              .filter((source) => source.nodeId !== this.options.nodeId)
              .map((source) => ({
                hostname: source.host,
                port: source.p2pPort,
                label: source.nodeId,
              })),
            controlPlane,
          ]
          : [controlPlane];
        await this.#download(announce, sources, closed?.ticket ?? null);
        return;
      }
      case "announceLeaderReady":
        if (election) await this.#sendLeaderReady(election);
        return;
      case "applyPatch": {
        const announce = this.#announceOf(election);
        if (announce.baseDigest === null) throw new Error("applyPatch without a base (a bug)");
        const summary = await applyFile(
          this.store.pathOf(announce.baseDigest),
          this.store.pathOf(announce.blobDigest),
          this.store.pathOf(announce.targetDigest),
        );
        return { type: "patchApplied", rebuilt: summary.targetBlake3 };
      }
      case "checkRelease": {
        const documents = election?.documents;
        if (!documents) throw new Error("checkRelease without checked documents (a bug)");
        const { decision, memory } = await this.#decide(documents, {
          model: u.model,
          version: u.version,
          target: u.target,
          targetSize: this.#announceOf(election).targetSize,
        });
        await this.options.hooks?.afterReleaseChecked?.(u.target);
        return { type: "releaseChecked", decision, memory };
      }
      case "rememberRelease": {
        if (this.#trust === null) throw new Error("rememberRelease without a trust memory (a bug)");
        await this.#trust.remember(action.memory);
        return;
      }
      case "discardTarget":
        await this.store.remove(fromHex(u.target));
        return;
      case "fail":
        throw action.error;
      case "switchToTarget": {
        const mode = await switchTo(dataDir, u.model, u.target);
        this.#log(`switched ${u.model} to ${u.version} ${u.target.slice(0, 16)} (${mode})`);
        return;
      }
      case "switchBack":
        if (action.to !== null) await switchTo(dataDir, u.model, action.to);
        else await Deno.remove(currentPath(dataDir, u.model)).catch(() => {});
        return;
      case "runOnSwitch":
        await this.#onSwitch(u.model);
        return;
      case "checkHealth": {
        const result = await this.#healthCheck(u.model, u.target);
        return { type: "healthChecked", result, state: await this.states.read(u.model) };
      }
      case "cleanUp":
        await this.#cleanUp().catch((err) => this.#log(`clean-up failed: ${err}`));
        return;
      case "heartbeat":
        await this.heartbeat();
        return;
      case "log":
        this.#log(action.line);
        return;
    }
  }

  /** The announce of a job's election (recovery jobs have none and never need it). */
  #announceOf(election: ElectionState | undefined): Announce {
    if (!election) throw new Error("an update action that needs the announce, in recovery (a bug)");
    return election.announce;
  }

  async #healthCheck(model: string, target: string): Promise<HealthResult> {
    const path = await Deno.realPath(currentPath(this.options.dataDir, model));
    if (this.options.healthCmd === undefined) return await builtinHealthCheck(path, target);
    return await runHealthCommand(
      this.options.healthCmd,
      path,
      this.options.healthTimeoutMs ?? 60_000,
    );
  }

  /** Refuses an update the filesystem has no room for (before any byte is downloaded). */
  async #checkDiskSpace(announce: Announce): Promise<void> {
    const needed = announce.blobSize + (announce.baseDigest === null ? 0 : announce.targetSize);
    const reserve = this.options.minFreeBytes ?? 64 * 1024 * 1024;
    const fs = await statfs(this.options.dataDir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    if (free - needed < reserve) {
      throw new DiskSpaceError(
        `not enough disk space for ${announce.model} ${announce.version}: needs ${
          formatBytes(needed)
        } plus ${formatBytes(reserve)} kept free, ${formatBytes(free)} available`,
      );
    }
  }

  /** Runs `--on-switch` (if given) for the model's current file; its failure is logged only. */
  async #onSwitch(model: string): Promise<void> {
    if (this.options.onSwitchCmd === undefined) return;
    const path = await Deno.realPath(currentPath(this.options.dataDir, model));
    const result = await runHealthCommand(this.options.onSwitchCmd, path, 60_000);
    if (!result.healthy) this.#log(`--on-switch for ${model}: ${result.reason}`);
  }

  /**
   * After a commit: removes every blob that is no model's active version, one
   * of its kept earlier versions (`keepBackups`), or the blob of its latest
   * update (kept to seed peers).
   */
  async #cleanUp(): Promise<void> {
    const models = [];
    for (const model of await this.states.models()) {
      models.push({
        state: await this.states.read(model),
        active: await activeDigest(this.options.dataDir, model),
      });
    }
    const keep = blobsToKeep(models);
    for (const digest of await this.store.list()) {
      const hex = toHex(digest);
      if (!keep.has(hex)) {
        await this.store.remove(digest);
        this.#readyBlobs.delete(hex);
        this.#log(`removed old blob ${hex.slice(0, 16)}`);
      }
    }
  }

  /**
   * After a restart (update_machine.ts `recover`): an update cut short before
   * its switch goes back to idle; one cut short after the switch is
   * health-checked again, then committed or rolled back. Leftover temporary
   * files are removed.
   */
  async #recover(): Promise<void> {
    await removeTemporaries(this.options.dataDir); // a trust.json write cut short
    await removeTemporaries(`${this.options.dataDir}/blobs`);
    for (const model of await this.states.models()) {
      await removeTemporaries(`${this.options.dataDir}/models/${model}`);
      const state = await this.states.read(model);
      const active = await activeDigest(this.options.dataDir, model);
      const recovery = recover(state, active, this.#policy);
      if (recovery.kind !== "none") await this.#drive(undefined, recovery.transition);
    }
  }

  /** The blob from `sources`; `ticket` (the control plane's, from ElectionClosed) admits it at a leader. */
  async #download(
    announce: Announce,
    sources: BlobSource[],
    ticket: Uint8Array | null,
  ): Promise<void> {
    await this.#fetchOnce(announce, async () => {
      const blob = toHex(announce.blobDigest);
      const result = await downloadBlob({
        sources,
        digest: announce.blobDigest,
        size: announce.blobSize,
        destination: this.store.pathOf(announce.blobDigest),
        partialPath: this.store.partialPathOf(announce.blobDigest),
        idleTimeoutMs: this.options.transferTimeoutMs,
        minRate: this.options.blobLimits?.minRate,
        signal: this.#abort.signal,
        credentials: { ...this.#credentials(), ticket },
      });
      for (const attempt of result.attempts) {
        this.counters
          .downloadedBytes[attempt.label === "control-plane" ? "controlPlane" : "peer"] +=
            attempt.bytes;
      }
      this.#readyBlobs.add(blob);
      this.#log(
        `downloaded ${
          blob.slice(0, 16)
        } from ${result.source}: ${result.bytesReceived} bytes received in ${result.attempts.length} attempt(s), resumed from ${result.resumedFrom}`,
      );
      for (const attempt of result.attempts) {
        if (attempt.error) this.#log(`  attempt at ${attempt.label} failed: ${attempt.error}`);
      }
    });
  }

  /**
   * The blob piece by piece from the election's swarm (issue 15): the piece
   * list from the control plane (its digest from the signed ElectionClosed,
   * checked to describe the announced blob), then every piece from the
   * sources, each checked against the list, the control plane last. Pieces
   * verified so far are served to the members that name this device as a
   * source; the partial file and its bitmap stay for a resume.
   */
  async #downloadSwarm(
    announce: Announce,
    closed: ElectionClosed,
    controlPlane: BlobSource,
  ): Promise<void> {
    await this.#fetchOnce(announce, () => this.#swarm(announce, closed, controlPlane));
  }

  /** Runs `fetch` for the announce's blob unless it is held, once at a time per blob. */
  async #fetchOnce(announce: Announce, fetch: () => Promise<void>): Promise<void> {
    const blob = toHex(announce.blobDigest);
    if (await this.store.has(announce.blobDigest)) {
      this.#readyBlobs.add(blob);
      return;
    }
    let running = this.#downloads.get(blob);
    if (!running) {
      running = fetch().finally(() => this.#downloads.delete(blob));
      this.#downloads.set(blob, running);
    }
    await running;
  }

  async #swarm(
    announce: Announce,
    closed: ElectionClosed,
    controlPlane: BlobSource,
  ): Promise<void> {
    const digest = announce.blobDigest;
    const blob = toHex(digest);
    const listBytes = await fetchSmallBlob({
      source: controlPlane,
      digest: closed.pieceListDigest!,
      maxBytes: MAX_PIECE_LIST_SIZE,
      deadlineMs: this.options.documentDeadlineMs ?? 10_000,
      signal: this.#abort.signal,
      credentials: this.#credentials(),
    });
    const list = decodePieceListFor(listBytes, digest, announce.blobSize);
    const { store, resumedPieces } = await FilePieceStore.open(list, {
      partialPath: this.store.swarmPathOf(digest),
      destination: this.store.pathOf(digest),
    });
    this.blobServer.sharePartial(digest, store);
    try {
      const result = await downloadPieces({
        store,
        sources: closed.sources
          .filter((source) => source.nodeId !== this.options.nodeId)
          .map((source) => ({ hostname: source.host, port: source.p2pPort, label: source.nodeId })),
        fallback: controlPlane,
        // In order: each piece is passed on down the line as soon as it is verified.
        startPiece: 0,
        // Even pieces from the first source, odd from the second (two trees: swarm_plan.ts).
        stripes: SWARM_STRIPES,
        credentials: { ...this.#credentials(), ticket: closed.ticket ?? null },
        idleTimeoutMs: this.options.transferTimeoutMs,
        minRate: this.options.blobLimits?.minRate,
        signal: this.#abort.signal,
      });
      for (const source of result.sources) {
        const kind: SourceKind = source.fallback ? "controlPlane" : "peer";
        this.counters.downloadedBytes[kind] += source.bytes;
        this.counters.piecesVerified[kind] += source.pieces;
        this.counters.pieceRefusals[kind] += source.refusals;
      }
      this.#readyBlobs.add(blob);
      const from = result.sources
        .filter((source) => source.pieces > 0)
        .map((source) => `${source.label} ${source.pieces}`)
        .join(", ");
      this.#log(
        `downloaded ${
          blob.slice(0, 16)
        } in ${result.pieceCount} pieces (${resumedPieces} kept from before; from ${
          from || "none"
        }), ${result.bytesReceived} bytes received, ${result.fallbackBytes} from the control plane`,
      );
      for (const source of result.sources) {
        this.#log(
          `  source ${source.label}: ${source.pieces} pieces, ${source.bytes} bytes, ${source.refusals} refusals, ${source.failures} failures${
            source.dropped === null ? "" : `, dropped: ${source.dropped}`
          }`,
        );
      }
    } finally {
      this.blobServer.unsharePartial(digest);
      await store.close();
    }
  }

  async #sendLeaderReady(election: ElectionState): Promise<void> {
    if (!election.leader || election.closed) return;
    await this.#send({
      type: "leaderReady",
      manifestId: election.announce.manifestId,
      nodeId: this.options.nodeId,
      p2pPort: this.blobServer.port,
    });
  }

  /** Repeats LeaderReady, for every election this agent leads and holds the blob of, until ElectionClosed. */
  #retransmit(): void {
    for (const election of this.#elections.values()) {
      const ready = this.#readyBlobs.has(toHex(election.announce.blobDigest));
      if (election.leader && ready && !election.closed) {
        this.#sendLeaderReady(election);
      }
    }
  }

  async #status(manifestId: string, state: StatusState, detail: string): Promise<void> {
    await this.#send({
      type: "status",
      manifestId,
      nodeId: this.options.nodeId,
      state,
      detail: detail.slice(0, 256),
    });
  }

  async #send(message: ControlMessage): Promise<void> {
    await this.socket.send(message, this.options.controlPlane);
  }
}

/** What an announce names that its check depends on. */
function fingerprintOf(a: Announce): string {
  const hex = (d: Uint8Array | null) => (d === null ? "-" : toHex(d));
  return [
    a.model,
    a.version,
    toHex(a.targetDigest),
    a.targetSize,
    hex(a.releaseDigest),
    hex(a.delegationDigest),
  ]
    .join(" ");
}

function encodeSize(message: ControlMessage): number {
  try {
    // As sent: a sequence number as large as a real one (the signature's size is fixed).
    return encodeControlMessage(message, Date.now() * 1000).length;
  } catch {
    return Infinity;
  }
}

/** Removes poolboy's temporary files (`.NAME.poolboy-XXXXXXXX.tmp`, `.current.X.tmp`) in `dir`. */
async function removeTemporaries(dir: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (/^\..*\.poolboy-[0-9a-f]{8}\.tmp$|^\.current\.[0-9a-f]+\.tmp$/.test(entry.name)) {
        await Deno.remove(`${dir}/${entry.name}`).catch(() => {});
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** The control plane's HTTP API, `host:port`: its UDP host, `controlPlaneHttpPort` (default 7402). */
function httpAddressOf(options: AgentOptions): string {
  const host = options.controlPlane.hostname;
  const port = options.controlPlaneHttpPort ?? DEFAULT_CP_HTTP_PORT;
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
