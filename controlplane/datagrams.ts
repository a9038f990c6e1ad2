/**
 * The control plane's side of the control messages
 * (transfer/control_messages.ts): heartbeats keep the agent registry, bids,
 * LeaderReady, ClosedAck and Status drive elections, and a Status report
 * becomes the agent's typed progress in its rollout (`progressOfStatus`, the
 * one place its text is read). Datagrams from an unexpected sender, for an
 * unknown election or going the wrong way are dropped and counted.
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import type { ControlMessage, Heartbeat, Status } from "../transfer/control_messages.ts";
import type { UdpAddress } from "../transfer/control_socket.ts";
import { type AuthDropCounters, authDropCounters } from "../transfer/datagram_auth.ts";
import type { AgentProgress } from "./agent_progress.ts";
import type { ElectionBook, ElectionEntry } from "./election_book.ts";
import type { Election, ElectionTiming } from "./election.ts";
import { retryDelay } from "./rollout_policy.ts";
import { type AgentRecord, type HistoryRecord, servedTotal } from "./state_store.ts";

/**
 * Counters of datagrams the control plane refused; the authentication's
 * reasons (transfer/datagram_auth.ts): from a sender that is not an enrolled
 * device, a bad signature, replayed, stale.
 */
export interface DropCounters extends AuthDropCounters {
  /** From an address that is not the sender's registered one, or from an unknown node. */
  unexpectedSender: number;
  /** For an election the control plane does not know (e.g. from before a restart). */
  unknownElection: number;
  /** A message type the control plane never receives (e.g. an Announce). */
  wrongDirection: number;
  /** Received while `MAX_DATAGRAM_BACKLOG` datagrams waited to be verified and handled. */
  backlogFull: number;
  /** Not sent: `MAX_OUTBOX` datagrams were already waiting to be sent (retransmitted later). */
  outboxFull: number;
}

/**
 * An agent re-heartbeating with nothing new is written to the store at most
 * this often (its `lastSeen` on disk is at most this old; the control plane
 * writes changed agents in batches).
 */
const AGENT_WRITE_INTERVAL_MS = 30_000;

/** What the datagram handler works on: the control plane's state and I/O. */
export interface DatagramHost {
  readonly agents: Map<string, AgentRecord>;
  readonly elections: ElectionBook;
  readonly timing: ElectionTiming;
  send(nodeId: string, message: ControlMessage): void;
  setProgress(rolloutId: number, nodeId: string, progress: AgentProgress): void;
  /** Persists (in the background, in order). */
  putAgent(agent: AgentRecord): void;
  addHistory(entry: HistoryRecord): void;
  log(line: string): void;
  /** An election closed (its leader said LeaderReady) at `now`: for the metrics. */
  electionClosed(election: Election, now: number): void;
}

/**
 * The typed progress an agent's Status datagram reports. The wire format
 * carries the poison pill only as text: the agent's detail starts with
 * "poisoned" (agent/agent.ts). It is read here, once, into `poisoned`.
 */
export function progressOfStatus(message: Status): AgentProgress {
  switch (message.state) {
    case "active":
    case "up-to-date":
      return { kind: "active", detail: message.detail };
    case "failed":
      return {
        kind: "failed",
        reason: message.detail,
        poisoned: message.detail.startsWith("poisoned"),
      };
    default:
      return { kind: message.state, detail: message.detail };
  }
}

/** Handles the datagrams agents send to the control plane. */
export class DatagramHandler {
  readonly drops: DropCounters = {
    unexpectedSender: 0,
    unknownElection: 0,
    wrongDirection: 0,
    backlogFull: 0,
    outboxFull: 0,
    ...authDropCounters(),
  };
  readonly #host: DatagramHost;

  constructor(host: DatagramHost) {
    this.#host = host;
  }

  /** Handles one datagram from `from`, received at `now`. */
  handle(message: ControlMessage, from: UdpAddress, now: number): void {
    if (message.type === "heartbeat") return this.#onHeartbeat(message, from, now);
    if (
      message.type === "announce" || message.type === "leaderAck" ||
      message.type === "electionClosed"
    ) {
      this.drops.wrongDirection++;
      return;
    }
    const agent = this.#host.agents.get(message.nodeId);
    if (!agent || agent.host !== from.hostname) {
      this.drops.unexpectedSender++;
      return;
    }
    const entry = this.#host.elections.get(message.manifestId);
    if (!entry || !entry.election.isMember(message.nodeId)) {
      this.drops.unknownElection++;
      return;
    }
    const { election } = entry;
    switch (message.type) {
      case "bid": {
        const wasAnnouncing = election.state === "announcing";
        for (const out of election.onBid(message.nodeId, now)) {
          this.#host.send(out.nodeId, out.message);
        }
        if (wasAnnouncing && (election.state as string) === "leading") {
          this.#host.log(`election ${election.manifestId}: leader ${message.nodeId}`);
          this.#host.setProgress(entry.rolloutId, message.nodeId, {
            kind: "leader",
            manifestId: election.manifestId,
          });
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
        for (const out of sends) this.#host.send(out.nodeId, out.message);
        if (wasLeading && (election.state as string) === "closed") {
          this.#host.log(`election ${election.manifestId}: leader ${message.nodeId} ready, closed`);
          this.#host.electionClosed(election, now);
        }
        return;
      }
      case "closedAck":
        election.onClosedAck(message.nodeId, now);
        return;
      case "status":
        return this.#onStatus(entry, message, now);
    }
  }

  #onStatus(entry: ElectionEntry, message: Status, now: number): void {
    const { election } = entry;
    const host = this.#host;
    election.onLeaderAlive(message.nodeId);
    election.onAnswered(message.nodeId, now);
    const progress = progressOfStatus(message);
    const model = election.announce.model;
    const digest = toHex(election.announce.targetDigest);
    if (progress.kind === "active") {
      election.onDone(message.nodeId, now);
      const agent = host.agents.get(message.nodeId)!;
      if (agent.active[model] !== digest) {
        host.agents.set(agent.nodeId, { ...agent, active: { ...agent.active, [model]: digest } });
        host.addHistory({
          nodeId: agent.nodeId,
          model,
          at: now,
          event: "running",
          digest,
          detail: message.detail,
        });
      }
      host.setProgress(entry.rolloutId, message.nodeId, progress);
      return;
    }
    host.setProgress(entry.rolloutId, message.nodeId, progress);
    if (progress.kind === "failed") {
      const delay = retryDelay(progress, host.timing.retryMs);
      if (delay !== undefined) election.rewind(message.nodeId, now, delay);
      host.addHistory({
        nodeId: message.nodeId,
        model,
        at: now,
        event: "failed",
        digest,
        detail: message.detail,
      });
    }
  }

  #onHeartbeat(message: Heartbeat, from: UdpAddress, now: number): void {
    const host = this.#host;
    if (message.host !== from.hostname) {
      this.drops.unexpectedSender++;
      return;
    }
    const previous = host.agents.get(message.nodeId);
    const agent: AgentRecord = {
      nodeId: message.nodeId,
      region: message.region,
      host: message.host,
      udpPort: message.udpPort,
      p2pPort: message.p2pPort,
      active: Object.fromEntries(message.active.map(([model, d]) => [model, toHex(d)])),
      held: message.held.map(toHex),
      ...servedTotal(previous, message.served, message.startedAt),
      startedAt: message.startedAt,
      lastSeen: now,
    };
    host.agents.set(agent.nodeId, agent);
    for (const [model, digest] of Object.entries(agent.active)) {
      if (previous?.active[model] !== digest) {
        host.addHistory({
          nodeId: agent.nodeId,
          model,
          at: now,
          event: "running",
          digest,
          detail: "",
        });
      }
    }
    const changed = !previous || previous.startedAt !== agent.startedAt ||
      previous.region !== agent.region || previous.host !== agent.host ||
      previous.udpPort !== agent.udpPort || previous.p2pPort !== agent.p2pPort ||
      previous.served !== agent.served ||
      JSON.stringify(previous.active) !== JSON.stringify(agent.active) ||
      now - previous.lastSeen > AGENT_WRITE_INTERVAL_MS;
    if (changed) host.putAgent(agent);
    if (!previous) host.log(`agent ${agent.nodeId} joined (${agent.region}, ${agent.host})`);
    if (previous && previous.startedAt !== agent.startedAt) {
      host.log(`agent ${agent.nodeId} restarted`);
      for (const { election } of host.elections.live()) {
        if (!election.isMember(agent.nodeId)) continue;
        if (election.state === "leading" && election.leader === agent.nodeId) {
          election.fail(`leader ${agent.nodeId} restarted before LeaderReady`, now);
        } else election.rewind(agent.nodeId, now);
      }
    }
  }
}
