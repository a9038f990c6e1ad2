/**
 * One simulated device: the real control protocol (protocol 4,
 * transfer/control_messages.ts) from its own loopback address and UDP
 * socket, with its own Ed25519 key — authenticated Heartbeats, Announce
 * answered by fetching the release documents and checking them
 * (documents.ts) then bidding, leading (the blob from the control plane,
 * verified, served to followers with tickets, LeaderReady repeated until
 * ElectionClosed) or following, Status reports, then the target reported
 * active. Every datagram it accepts is signed by the control plane's pinned
 * key for this device, never replayed (transfer/datagram_auth.ts).
 *
 * Following speaks the swarm as agent/agent.ts does (issue 15): with a
 * `pieceListDigest` in ElectionClosed, the piece list from the control plane
 * (its digest checked by `fetchSmallBlob`, `decodePieceListFor` the announced
 * blob), then `downloadPieces` from `closed.sources` (minus itself) with the
 * control plane as fallback and the ticket, into a `SharedPieceStore`
 * (shared_piece_store.ts: one buffer per blob per process, a bitmap per
 * device), shared on the device's own blob server (`sharePartial`) from the
 * start so that other devices take verified pieces from it. Without a piece
 * list, the whole blob from the sources then the control plane (download.ts).
 *
 * Blob servers (file descriptors; 250 devices per process by default, up to
 * 2,500 with `--per-worker`): a device's
 * server, on its own address and fixed port with `maxUploads` =
 * `--upload-slots`, is started lazily when it joins an election (its first
 * Announce of it: the control plane counts it a member, and may name it a
 * source, from then on), and closed
 * `SERVER_GRACE_MS` after its last download is done, when no election of it
 * is still transferring (started again if it joins another). A device that
 * never joins an election never listens. At most `swarmSlots` swarm
 * downloads of a process run at once (each up to 4 connections).
 *
 * It writes no model: a verified blob goes to the process's shelf
 * (blob_shelf.ts).
 *
 * States are typed records; every map is bounded (elections per device).
 *
 * @module
 */

import { fromHex, toHex } from "../../kernel/blake3.ts";
import type { SigningKey } from "../../release/keys.ts";
import { BlobServer } from "../../transfer/blob_server.ts";
import { decodePieceListFor, MAX_PIECE_LIST_SIZE } from "../../transfer/piece_list.ts";
import { downloadPieces } from "../../transfer/swarm_client.ts";
import { ticketHolders } from "../../transfer/blob_auth.ts";
import { BlobDownloadError, fetchSmallBlob } from "../../transfer/blob_client.ts";
import { MAX_DOCUMENT_BYTES } from "../../release/documents.ts";
import {
  type Announce,
  CONTROL_PLANE_RECEIVER,
  type ControlMessage,
  type ElectionClosed,
  type StatusState,
  SWARM_STRIPES,
} from "../../transfer/control_messages.ts";
import { ControlSocket, type UdpAddress } from "../../transfer/control_socket.ts";
import { DatagramAuthenticator } from "../../transfer/datagram_auth.ts";
import type { BlobShelf } from "./blob_shelf.ts";
import type { ReleaseChecks } from "./documents.ts";
import type { SharedBlobs } from "./shared_piece_store.ts";
import { fetchBlob, type FetchSource } from "./download.ts";
import { backoff, type Semaphore, sleep } from "./limiter.ts";
import { DEVICE_PORTS, type DevicePlan } from "./plan.ts";
import type { WorkerEvent } from "./wire.ts";

/** What every device of a process shares. */
export interface DeviceContext {
  readonly cp: UdpAddress;
  readonly checks: ReleaseChecks;
  readonly shelf: BlobShelf;
  /** Connections to the control plane for signed documents and fallbacks. */
  readonly cpSlots: Semaphore;
  /** Connections of leaders to the control plane (apart: documents never delay a leader). */
  readonly leadSlots: Semaphore;
  readonly peerSlots: Semaphore;
  readonly serverConnections: number;
  /** `maxUploads` of every device's blob server (`--upload-slots`). */
  readonly uploadSlots: number;
  /** `uploadBytesPerSecond` of every device's blob server (`--upload-rate`; 0: unlimited). */
  readonly uploadBytesPerSecond: number;
  /** `downloadPieces`'s `stallMs` (undefined: its default, as agents, 10 s). */
  readonly stallMs: number | undefined;
  /** Swarm downloads of this process at once. */
  readonly swarmSlots: Semaphore;
  /** The process's shared blob buffers (one per blob). */
  readonly pieces: SharedBlobs;
  readonly emit: (event: WorkerEvent) => void;
  readonly signal: AbortSignal;
  readonly counters: DeviceCounters;
}

/** Counters shared by the devices of a process. */
export interface DeviceCounters {
  documentFetches: number;
  bytesFromControlPlane: number;
  bytesFromPeers: number;
  /** Pieces fetched and verified by swarm downloads. */
  piecesVerified: number;
  /** Bytes of piece lists fetched from the control plane. */
  pieceListBytes: number;
  /** Blob servers started (a device's server may start more than once). */
  serversStarted: number;
}

/** How far a device's release check got for one election. */
type Vetting = "pending" | "ok" | "refused";

/** What happens with the blob of one election. */
type Transfer =
  | { readonly kind: "idle" }
  | { readonly kind: "fetching" }
  | { readonly kind: "ready" }
  | { readonly kind: "done" };

/** One election as this device sees it. */
interface SimElection {
  readonly announce: Announce;
  vetting: Vetting;
  /** When its download started (ms since the epoch). */
  started: number | null;
  leader: boolean;
  closed: ElectionClosed | undefined;
  transfer: Transfer;
  readyTimer: ReturnType<typeof setInterval> | undefined;
}

/** Elections one device remembers (the oldest forgotten first). */
const MAX_ELECTIONS = 16;
/** Most held blobs listed in a heartbeat. */
const MAX_HELD = 20;
/** LeaderReady repeat period until ElectionClosed. */
const READY_RETRY_MS = 500;
/** Attempts at fetching one signed document. */
const DOCUMENT_ATTEMPTS = 12;
/** A device's blob server stays up this long after its last download is done. */
export const SERVER_GRACE_MS = 60_000;

/** How a download went, for the done event. */
interface Fetched {
  readonly from: "peer" | "controlPlane";
  readonly attempts: number;
  /** Pieces verified (swarm downloads; 0 otherwise) of `pieceCount` (0: not a swarm download). */
  readonly pieces: number;
  readonly pieceCount: number;
}

/** A simulated device. */
export class SimDevice {
  readonly plan: DevicePlan;
  readonly #ctx: DeviceContext;
  readonly #key: SigningKey;
  readonly #controlPlaneKey: Uint8Array;
  readonly #socket: ControlSocket;
  readonly #auth: DatagramAuthenticator;
  readonly #startedAt = Date.now();
  readonly #active = new Map<string, string>();
  readonly #held = new Map<string, Uint8Array>();
  readonly #elections = new Map<string, SimElection>();
  /** When it first heard of and first bid for each target (hex), for the done event. */
  readonly #firstSeen = new Map<string, { announced: number; bid: number | null }>();
  #server: BlobServer | undefined;
  #serverStop: ReturnType<typeof setTimeout> | undefined;
  /** Bytes served and peak uploads of servers already closed. */
  #servedBefore = 0;
  #peakBefore = 0;
  readonly #answersBefore = { notYet: 0, busy: 0, errors: 0 };
  #receiving: Promise<void> | undefined;
  #closed = false;

  constructor(
    plan: DevicePlan,
    ctx: DeviceContext,
    key: SigningKey,
    controlPlaneKey: Uint8Array,
    active: { model: string; digest: string },
  ) {
    this.plan = plan;
    this.#ctx = ctx;
    this.#key = key;
    this.#controlPlaneKey = controlPlaneKey;
    this.#auth = new DatagramAuthenticator(plan.nodeId);
    this.#active.set(active.model, active.digest);
    this.#socket = ControlSocket.open(plan.host, DEVICE_PORTS.udp, {
      signer: () => key.privateKey,
    });
  }

  /** Starts answering the control plane and sends the first heartbeat. */
  start(): Promise<void> {
    this.#receiving = this.#receive();
    return this.heartbeat();
  }

  /** Datagrams sent, received (decoded), and dropped: malformed, or refused by the authentication by reason. */
  get datagrams(): {
    sent: number;
    received: number;
    malformed: number;
    stale: number;
    replayed: number;
    badSignature: number;
  } {
    const c = this.#socket.counters;
    const d = this.#auth.drops;
    return {
      sent: c.sent,
      received: c.received,
      malformed: c.malformed,
      stale: d.stale,
      replayed: d.replayed,
      badSignature: d.badSignature + d.unknownSender,
    };
  }

  /** Bytes its blob servers sent. */
  get served(): number {
    return this.#servedBefore + (this.#server?.bytesServed ?? 0);
  }

  /** NOT_YET and BUSY answers and failed connections of its blob servers. */
  get serverAnswers(): { notYet: number; busy: number; errors: number } {
    const b = this.#answersBefore;
    const s = this.#server;
    return {
      notYet: b.notYet + (s?.notYet ?? 0),
      busy: b.busy + (s?.busy ?? 0),
      errors: b.errors + (s?.errors ?? 0),
    };
  }

  /** Most bodies its blob servers sent at once. */
  get peakUploads(): number {
    return Math.max(this.#peakBefore, this.#server?.peakUploads ?? 0);
  }

  /** Its blob server, started if it is not running (and its stop timer cancelled). */
  #ensureServer(): BlobServer {
    clearTimeout(this.#serverStop);
    this.#serverStop = undefined;
    if (this.#server === undefined) {
      this.#server = BlobServer.start({
        hostname: this.plan.host,
        port: DEVICE_PORTS.p2p,
        store: this.#ctx.shelf.lookupFor((hex) => this.#held.has(hex)),
        maxConnections: this.#ctx.serverConnections,
        // On loopback every peer connects from 127.0.0.1.
        maxConnectionsPerAddress: this.#ctx.serverConnections,
        maxUploads: this.#ctx.uploadSlots,
        uploadBytesPerSecond: this.#ctx.uploadBytesPerSecond,
        authorize: ticketHolders(() => this.#controlPlaneKey),
      });
      this.#ctx.counters.serversStarted++;
    }
    return this.#server;
  }

  /** Closes its server `SERVER_GRACE_MS` from now unless an election of it is still transferring. */
  #scheduleServerStop(): void {
    clearTimeout(this.#serverStop);
    this.#serverStop = setTimeout(() => {
      this.#serverStop = undefined;
      const busy = [...this.#elections.values()].some((e) =>
        e.vetting !== "refused" && e.transfer.kind !== "done"
      );
      const server = this.#server;
      if (busy || server === undefined || this.#closed) return;
      this.#server = undefined;
      this.#servedBefore += server.bytesServed;
      this.#answersBefore.notYet += server.notYet;
      this.#answersBefore.busy += server.busy;
      this.#answersBefore.errors += server.errors;
      this.#peakBefore = Math.max(this.#peakBefore, server.peakUploads);
      void server.close();
    }, SERVER_GRACE_MS);
  }

  /** Sends a heartbeat: what it runs and holds, its ports. */
  heartbeat(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#send({
      type: "heartbeat",
      nodeId: this.plan.nodeId,
      region: this.plan.region,
      host: this.plan.host,
      udpPort: this.#socket.port,
      p2pPort: this.#server?.port ?? DEVICE_PORTS.p2p,
      held: [...this.#held.values()].slice(-MAX_HELD),
      active: [...this.#active].map(([model, digest]) => [model, fromHex(digest)] as const),
      served: this.served,
      startedAt: this.#startedAt,
    });
  }

  /** Stops: the socket, the timers, the blob server. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const e of this.#elections.values()) clearInterval(e.readyTimer);
    clearTimeout(this.#serverStop);
    this.#socket.close();
    await this.#receiving;
    await this.#server?.close();
  }

  async #receive(): Promise<void> {
    for await (const { message, from, opened } of this.#socket.messages()) {
      if (from.hostname !== this.#ctx.cp.hostname) continue;
      const ok = await this.#auth.accept(
        CONTROL_PLANE_RECEIVER,
        this.#controlPlaneKey,
        opened,
        Date.now(),
      );
      if (!ok || this.#closed) continue;
      this.#handle(message);
    }
  }

  #handle(message: ControlMessage): void {
    switch (message.type) {
      case "announce":
        return this.#onAnnounce(message);
      case "leaderAck":
        return this.#onLeaderAck(message.manifestId);
      case "electionClosed":
        return this.#onClosed(message);
      default:
        return; // not for a device
    }
  }

  #onAnnounce(announce: Announce): void {
    const running = this.#active.get(announce.model);
    const target = toHex(announce.targetDigest);
    if (running === target) {
      void this.#status(announce.manifestId, "up-to-date", "");
      return;
    }
    if (announce.baseDigest !== null && running !== toHex(announce.baseDigest)) {
      void this.#status(announce.manifestId, "failed", "the patch's base is not what runs here");
      return;
    }
    if (!this.#firstSeen.has(target)) {
      this.#firstSeen.set(target, { announced: Date.now(), bid: null });
      while (this.#firstSeen.size > MAX_ELECTIONS) {
        this.#firstSeen.delete(this.#firstSeen.keys().next().value!);
      }
    }
    const known = this.#elections.get(announce.manifestId);
    if (known) {
      if (known.vetting === "ok") void this.#bid(announce.manifestId);
      return;
    }
    const election: SimElection = {
      announce,
      vetting: "pending",
      started: null,
      leader: false,
      closed: undefined,
      transfer: { kind: "idle" },
      readyTimer: undefined,
    };
    this.#elections.set(announce.manifestId, election);
    // Announced, it is a member: the control plane may name it a source from now on.
    this.#ensureServer();
    while (this.#elections.size > MAX_ELECTIONS) {
      const [id, old] = this.#elections.entries().next().value!;
      clearInterval(old.readyTimer);
      this.#elections.delete(id);
    }
    void this.#vet(election);
  }

  /** Fetches the announce's documents, checks them, then bids (and follows if already closed). */
  async #vet(election: SimElection): Promise<void> {
    const { announce } = election;
    try {
      const delegation = await this.#document(announce, announce.delegationDigest);
      const release = await this.#document(announce, announce.releaseDigest);
      const decision = await this.#ctx.checks.decide(announce, delegation, release);
      if (!decision.ok) {
        election.vetting = "refused";
        this.#scheduleServerStop();
        await this.#status(announce.manifestId, "failed", decision.reason.slice(0, 256));
        this.#ctx.emit({ t: "failed", id: this.plan.nodeId, reason: decision.reason });
        return;
      }
    } catch (err) {
      if (this.#closed) return;
      // Unavailable documents refuse this announce only: a repeat asks again.
      this.#elections.delete(announce.manifestId);
      this.#scheduleServerStop();
      const reason = `cannot fetch the signed documents: ${messageOf(err)}`;
      await this.#status(announce.manifestId, "failed", reason.slice(0, 256));
      return;
    }
    election.vetting = "ok";
    const seen = this.#firstSeen.get(toHex(announce.targetDigest));
    if (seen && seen.bid === null) seen.bid = Date.now();
    await this.#bid(announce.manifestId);
    if (election.closed && !election.leader) this.#follow(election);
  }

  /** A signed document from the control plane's blob server (its digest checked), patiently. */
  #document(announce: Announce, digest: Uint8Array | null): Promise<Uint8Array | null> {
    if (digest === null) return Promise.resolve(null);
    return this.#fetchFromControlPlane(
      digest,
      this.#controlPlaneSource(announce),
      MAX_DOCUMENT_BYTES,
      () => this.#ctx.counters.documentFetches++,
    );
  }

  /** A small blob from the control plane (its digest checked by `fetchSmallBlob`), patiently. */
  async #fetchFromControlPlane(
    digest: Uint8Array,
    source: FetchSource,
    maxBytes: number,
    onAttempt?: () => void,
  ): Promise<Uint8Array> {
    for (let attempt = 1;; attempt++) {
      try {
        onAttempt?.();
        return await this.#ctx.cpSlots.run(() =>
          fetchSmallBlob({
            source,
            digest,
            maxBytes,
            deadlineMs: 10_000,
            signal: this.#ctx.signal,
            credentials: { nodeId: this.plan.nodeId, privateKey: this.#key.privateKey },
          })
        );
      } catch (err) {
        if (!(err instanceof BlobDownloadError) || attempt >= DOCUMENT_ATTEMPTS) throw err;
        await sleep(backoff(attempt, 100, 2000), this.#ctx.signal);
      }
    }
  }

  #onLeaderAck(manifestId: string): void {
    const election = this.#elections.get(manifestId);
    if (!election || election.vetting !== "ok") return;
    if (election.transfer.kind === "idle" && !election.leader) {
      election.leader = true;
      void this.#status(manifestId, "downloading", "leader");
      void this.#lead(election);
    } else if (election.transfer.kind === "fetching") {
      void this.#status(manifestId, "downloading", "leader");
    }
  }

  #onClosed(closed: ElectionClosed): void {
    const election = this.#elections.get(closed.manifestId);
    if (!election) return;
    election.closed = closed;
    void this.#send({ type: "closedAck", manifestId: closed.manifestId, nodeId: this.plan.nodeId });
    if (election.leader) {
      clearInterval(election.readyTimer);
      election.readyTimer = undefined;
      return;
    }
    if (election.transfer.kind === "done") {
      void this.#status(closed.manifestId, "active", "");
    } else if (election.vetting === "ok") this.#follow(election);
  }

  /** Leads: the blob from the control plane, verified, served; LeaderReady until ElectionClosed. */
  async #lead(election: SimElection): Promise<void> {
    const { announce } = election;
    election.transfer = { kind: "fetching" };
    election.started = Date.now();
    try {
      const fetched = await fetchBlob({
        digest: announce.blobDigest,
        size: announce.blobSize,
        sources: [this.#controlPlaneSource(announce)],
        credentials: { nodeId: this.plan.nodeId, privateKey: this.#key.privateKey },
        slots: this.#ctx.leadSlots,
        signal: this.#ctx.signal,
      });
      this.#ctx.counters.bytesFromControlPlane += fetched.bytes.length;
      await this.#keep(announce.blobDigest, fetched.bytes);
      const port = this.#ensureServer().port;
      election.transfer = { kind: "ready" };
      const ready = () => {
        if (election.closed || this.#closed) return clearInterval(election.readyTimer);
        void this.#send({
          type: "leaderReady",
          manifestId: announce.manifestId,
          nodeId: this.plan.nodeId,
          p2pPort: port,
        });
      };
      ready();
      election.readyTimer = setInterval(ready, READY_RETRY_MS);
      await this.#finish(election, {
        from: "controlPlane",
        attempts: fetched.attempts,
        pieces: 0,
        pieceCount: 0,
      });
    } catch (err) {
      if (this.#closed) return;
      election.transfer = { kind: "idle" };
      election.leader = false;
      await this.#fail(election, err);
    }
    this.#scheduleServerStop();
  }

  /** Follows: the swarm with a piece list, else the whole blob from the sources (the control plane last). */
  #follow(election: SimElection): void {
    const closed = election.closed;
    if (!closed || election.transfer.kind !== "idle") return;
    election.transfer = { kind: "fetching" };
    election.started = Date.now();
    const { announce } = election;
    void (async () => {
      await this.#status(announce.manifestId, "downloading", `from ${closed.leaderNodeId}`);
      const fetched = closed.pieceListDigest
        ? await this.#swarm(announce, closed, closed.pieceListDigest)
        : await this.#whole(announce, closed);
      await this.#finish(election, fetched);
    })().catch(async (err) => {
      if (this.#closed) return;
      election.transfer = { kind: "idle" };
      await this.#fail(election, err);
    }).finally(() => this.#scheduleServerStop());
  }

  /** The sources ElectionClosed names, minus this device. */
  #peersOf(closed: ElectionClosed): { hostname: string; port: number; label: string }[] {
    return closed.sources
      .filter((source) => source.nodeId !== this.plan.nodeId)
      .map((source) => ({ hostname: source.host, port: source.p2pPort, label: source.nodeId }));
  }

  /**
   * The blob piece by piece (agent/agent.ts #swarm): the piece list from the
   * control plane, then every piece from the sources, each verified, the
   * control plane as fallback; verified pieces served from the start.
   */
  async #swarm(
    announce: Announce,
    closed: ElectionClosed,
    pieceListDigest: Uint8Array,
  ): Promise<Fetched> {
    const digest = announce.blobDigest;
    const controlPlane = this.#controlPlaneSource(announce);
    const listBytes = await this.#fetchFromControlPlane(
      pieceListDigest,
      controlPlane,
      MAX_PIECE_LIST_SIZE,
    );
    this.#ctx.counters.pieceListBytes += listBytes.length;
    const list = decodePieceListFor(listBytes, digest, announce.blobSize);
    const store = this.#ctx.pieces.storeFor(list);
    const server = this.#ensureServer();
    server.sharePartial(digest, store);
    try {
      const result = await this.#ctx.swarmSlots.run(() =>
        downloadPieces({
          store,
          sources: this.#peersOf(closed),
          fallback: controlPlane,
          // In order, as agents do: each piece passed down the line once verified.
          startPiece: 0,
          // Even pieces from the first source, odd from the second (two trees: swarm_plan.ts).
          stripes: SWARM_STRIPES,
          stallMs: this.#ctx.stallMs,
          credentials: {
            nodeId: this.plan.nodeId,
            privateKey: this.#key.privateKey,
            ticket: closed.ticket ?? null,
          },
          signal: this.#ctx.signal,
        })
      );
      this.#ctx.counters.piecesVerified += result.piecesFetched;
      this.#ctx.counters.bytesFromControlPlane += result.fallbackBytes;
      this.#ctx.counters.bytesFromPeers += result.bytesReceived - result.fallbackBytes;
      await this.#keep(digest, store.bytes());
      const fromPeers = result.sources.some((source) => !source.fallback && source.pieces > 0);
      return {
        from: fromPeers ? "peer" : "controlPlane",
        attempts: result.sources.reduce((n, source) => n + source.pieces + source.failures, 0),
        pieces: result.piecesFetched,
        pieceCount: result.pieceCount,
      };
    } finally {
      // Held whole now (or failed): the shelf serves it from here on.
      this.#server?.unsharePartial(digest);
      await store.close();
    }
  }

  /** The whole blob from the sources, then the control plane (no piece list yet). */
  async #whole(announce: Announce, closed: ElectionClosed): Promise<Fetched> {
    const sources: FetchSource[] = [
      ...this.#peersOf(closed).map((peer) => ({ ...peer, kind: "peer" as const })),
      this.#controlPlaneSource(announce),
    ];
    const fetched = await fetchBlob({
      digest: announce.blobDigest,
      size: announce.blobSize,
      sources,
      credentials: {
        nodeId: this.plan.nodeId,
        privateKey: this.#key.privateKey,
        ticket: closed.ticket ?? null,
      },
      slots: this.#ctx.peerSlots,
      signal: this.#ctx.signal,
    });
    if (fetched.kind === "peer") this.#ctx.counters.bytesFromPeers += fetched.bytes.length;
    else this.#ctx.counters.bytesFromControlPlane += fetched.bytes.length;
    await this.#keep(announce.blobDigest, fetched.bytes);
    return { from: fetched.kind, attempts: fetched.attempts, pieces: 0, pieceCount: 0 };
  }

  #controlPlaneSource(announce: Announce): FetchSource {
    return {
      kind: "controlPlane",
      hostname: announce.cpHost,
      port: announce.cpP2pPort,
      label: "control-plane",
    };
  }

  /** Holds a verified blob (fetchBlob returned only bytes whose BLAKE3 is the digest). */
  async #keep(digest: Uint8Array, bytes: Uint8Array): Promise<void> {
    await this.#ctx.shelf.put(digest, bytes);
    this.#held.delete(toHex(digest));
    this.#held.set(toHex(digest), digest);
    while (this.#held.size > MAX_HELD) this.#held.delete(this.#held.keys().next().value!);
  }

  /** The update is done: the target runs (reported active, in status and heartbeats). */
  async #finish(election: SimElection, fetched: Fetched): Promise<void> {
    const { announce } = election;
    election.transfer = { kind: "done" };
    const target = toHex(announce.targetDigest);
    this.#active.set(announce.model, target);
    await this.#status(announce.manifestId, "active", "");
    const now = Date.now();
    const seen = this.#firstSeen.get(target);
    this.#ctx.emit({
      t: "done",
      id: this.plan.nodeId,
      at: now,
      announced: seen?.announced ?? now,
      bid: seen?.bid ?? now,
      started: election.started ?? now,
      blob: toHex(announce.blobDigest),
      target,
      leader: election.leader,
      from: fetched.from,
      attempts: fetched.attempts,
      pieces: fetched.pieces,
      pieceCount: fetched.pieceCount,
    });
    await this.heartbeat();
  }

  async #fail(election: SimElection, err: unknown): Promise<void> {
    const reason = messageOf(err).slice(0, 256);
    this.#ctx.emit({ t: "failed", id: this.plan.nodeId, reason });
    await this.#status(election.announce.manifestId, "failed", reason);
  }

  #bid(manifestId: string): Promise<void> {
    return this.#send({ type: "bid", manifestId, nodeId: this.plan.nodeId });
  }

  #status(manifestId: string, state: StatusState, detail: string): Promise<void> {
    return this.#send({ type: "status", manifestId, nodeId: this.plan.nodeId, state, detail });
  }

  #send(message: ControlMessage): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#socket.send(message, this.#ctx.cp);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
