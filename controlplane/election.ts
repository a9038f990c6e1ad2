/**
 * One election: the state machine that picks a leader among the agents of one
 * (rollout, region, base) and then tells everyone where to download from
 * (docs/design.md, docs/spec/control-messages-v1.md). Pure: it takes messages and the clock,
 * and returns the datagrams to send; the control plane does the I/O.
 *
 * States: `announcing` (Announce to every member not yet heard from) →
 * `leading` (the first Bid won by compare-and-set; LeaderAck is repeated until
 * the leader shows life) → `closed` (the leader sent LeaderReady;
 * ElectionClosed is repeated to every member until it is done, preceded by the
 * Announce for members never heard from) or `failed`
 * (the leader timed out or went silent: the control plane starts a new
 * election without it). Every handler is idempotent; retransmissions back off
 * exponentially from `retryMs` up to `maxRetryMs`.
 *
 * **Settling.** A closed election holds the other members' ElectionClosed
 * until the region has settled: every member has answered, or none answered
 * for `settleQuietMs`, or `settleMaxMs` passed since it closed. The swarm
 * numbers members as they answer and computes each one's sources when its
 * ElectionClosed is sent (swarm_plan.ts): a leader that holds the blob at once
 * (a small patch, a fast link) would otherwise close the election while most
 * members are still being announced to, and every late member would get the
 * leader as a parent. Members never heard from still get the Announce.
 *
 * @module
 */

import type { Announce, ControlMessage } from "../transfer/control_messages.ts";

/** Timing of an election, in milliseconds. */
export interface ElectionTiming {
  /** First retransmission delay. */
  readonly retryMs: number;
  /** Longest retransmission delay. */
  readonly maxRetryMs: number;
  /** How long the leader may take from LeaderAck to LeaderReady before the election fails. */
  readonly leaderTimeoutMs: number;
  /** Closed: the region has settled when no member answered for this long (default 1 s). */
  readonly settleQuietMs?: number;
  /** Closed: the region has settled at the latest this long after closing (default 10 s). */
  readonly settleMaxMs?: number;
}

/** Defaults of `ElectionTiming.settleQuietMs` and `settleMaxMs`. */
export const DEFAULT_SETTLE_QUIET_MS = 1_000;
export const DEFAULT_SETTLE_MAX_MS = 10_000;

/** Defaults: retry after 0.5 s doubling to 4 s; a leader has 10 min to fetch the blob. */
export const DEFAULT_ELECTION_TIMING: ElectionTiming = {
  retryMs: 500,
  maxRetryMs: 4000,
  leaderTimeoutMs: 600_000,
};

/** The states of an election. */
export type ElectionState = "announcing" | "leading" | "closed" | "failed";

/** A datagram to send to one member. */
export interface Outgoing {
  readonly nodeId: string;
  readonly message: ControlMessage;
}

interface Member {
  /** Heard a Bid (or anything) from it for this election. */
  answered: boolean;
  /** It acknowledged ElectionClosed. */
  closedAcked: boolean;
  /** It runs the target now. */
  done: boolean;
  nextSendAt: number;
  delay: number;
}

/** What the control plane knows about a member's address, for ElectionClosed. */
export interface LeaderAddress {
  readonly host: string;
  readonly p2pPort: number;
}

/** One election. `announce` is the message every member gets (it carries the manifest id). */
export class Election {
  readonly announce: Announce;
  readonly region: string;
  readonly timing: ElectionTiming;
  #state: ElectionState = "announcing";
  #leader: string | undefined;
  #leaderAddress: LeaderAddress | undefined;
  #leaderSeen = false;
  #leaderDeadline = Infinity;
  #leaderNextAck = 0;
  #leaderAckDelay: number;
  #members = new Map<string, Member>();
  /** Timeline of the election's milestones (ms since epoch). */
  readonly timeline: {
    announced?: number;
    firstBid?: number;
    leaderReady?: number;
    /** Closed and settled: the members' ElectionClosed goes out. */
    settled?: number;
    /** When it failed. */
    failed?: number;
  } = {};
  /** When a member last answered for the first time (settling). */
  #lastAnsweredAt = -Infinity;
  /** Members with `answered` set. */
  #answeredCount = 0;
  #failure: string | undefined;
  /** Members whose bids do not count (leaders of earlier, failed elections). */
  readonly #excluded: ReadonlySet<string>;

  constructor(
    announce: Announce,
    region: string,
    timing: ElectionTiming = DEFAULT_ELECTION_TIMING,
    excludedLeaders: ReadonlySet<string> = new Set(),
  ) {
    this.announce = announce;
    this.region = region;
    this.timing = timing;
    this.#excluded = excludedLeaders;
    this.#leaderAckDelay = timing.retryMs;
  }

  get manifestId(): string {
    return this.announce.manifestId;
  }
  get state(): ElectionState {
    return this.#state;
  }
  get leader(): string | undefined {
    return this.#leader;
  }
  get leaderAddress(): LeaderAddress | undefined {
    return this.#leaderAddress;
  }
  /** Why the election failed, if it did. */
  get failure(): string | undefined {
    return this.#failure;
  }
  /** Node ids of the members. */
  get members(): string[] {
    return [...this.#members.keys()];
  }
  /**
   * Members that have answered this election (a Bid, an acknowledgement, a
   * report) or run its target, in the order they joined: the ones that can
   * take part in its swarm.
   */
  get answeredMembers(): string[] {
    return [...this.#members].filter(([, m]) => m.answered || m.done).map(([id]) => id);
  }
  /** How many members have answered (`answeredMembers.length`, without copying them). */
  get answeredCount(): number {
    return this.#answeredCount;
  }
  /** Node ids of the members, without copying them (do not change members while iterating). */
  memberIds(): IterableIterator<string> {
    return this.#members.keys();
  }
  /** How many members (without copying their ids). */
  get memberCount(): number {
    return this.#members.size;
  }
  /** How many members are not done yet (without copying their ids). */
  get pendingCount(): number {
    let n = 0;
    for (const m of this.#members.values()) if (!m.done) n++;
    return n;
  }
  /** Members not done yet. */
  get pending(): string[] {
    return [...this.#members].filter(([, m]) => !m.done).map(([id]) => id);
  }
  isMember(nodeId: string): boolean {
    return this.#members.has(nodeId);
  }

  /** Adds a member (idempotent); it is contacted at the next `tick`. */
  addMember(nodeId: string, now: number): void {
    if (this.#members.has(nodeId)) return;
    this.#members.set(nodeId, {
      answered: false,
      closedAcked: false,
      done: false,
      nextSendAt: now,
      delay: this.timing.retryMs,
    });
  }

  /** Removes a member (it left the scope or another election covers it). */
  removeMember(nodeId: string): void {
    if (this.#members.get(nodeId)?.answered) this.#answeredCount--;
    this.#members.delete(nodeId);
  }

  /** A Bid: the first one from a member wins. Returns what to send. */
  onBid(nodeId: string, now: number): Outgoing[] {
    const member = this.#members.get(nodeId);
    if (!member) return [];
    this.#answer(member, now);
    if (this.#state === "announcing" && this.#eligible(nodeId)) {
      this.#state = "leading";
      this.#leader = nodeId;
      this.timeline.firstBid = now;
      this.#leaderDeadline = now + this.timing.leaderTimeoutMs;
      this.#leaderNextAck = now + this.#leaderAckDelay;
      return [{ nodeId, message: { type: "leaderAck", manifestId: this.manifestId } }];
    }
    if (this.#state === "leading" && nodeId === this.#leader) {
      // The leader bid again: our LeaderAck was lost.
      return [{ nodeId, message: { type: "leaderAck", manifestId: this.manifestId } }];
    }
    if (this.#state === "closed" && !member.done && this.#settle(now)) {
      // A late bidder (its ElectionClosed was lost): tell it now.
      return [{ nodeId, message: this.#closedMessage() }];
    }
    return [];
  }

  /** Any sign of life from the leader for this election (a status report) stops the LeaderAck repeats. */
  onLeaderAlive(nodeId: string): void {
    if (nodeId === this.#leader) this.#leaderSeen = true;
  }

  /** LeaderReady from the leader: the election closes. Returns what to send. */
  onLeaderReady(nodeId: string, address: LeaderAddress, now: number): Outgoing[] {
    if (nodeId !== this.#leader) return [];
    if (this.#state === "leading") {
      this.#state = "closed";
      this.#leaderAddress = address;
      this.#leaderSeen = true;
      this.timeline.leaderReady = now;
      for (const member of this.#members.values()) {
        member.nextSendAt = now;
        member.delay = this.timing.retryMs;
      }
    }
    if (this.#state !== "closed") return [];
    // The leader retransmits LeaderReady until it hears ElectionClosed: answer each one.
    return [{ nodeId, message: this.#closedMessage() }];
  }

  /** ClosedAck from a member. */
  onClosedAck(nodeId: string, now: number): void {
    const member = this.#members.get(nodeId);
    if (member) {
      this.#answer(member, now);
      member.closedAcked = true;
    }
  }

  /** The member runs the target (from its status report or heartbeat). */
  onDone(nodeId: string, now: number): void {
    const member = this.#members.get(nodeId);
    if (member) {
      this.#answer(member, now);
      member.done = true;
    }
    if (nodeId === this.#leader) this.#leaderSeen = true;
  }

  /** The member answered the announce without bidding (e.g. it is busy or already up to date). */
  onAnswered(nodeId: string, now: number): void {
    const member = this.#members.get(nodeId);
    if (member) this.#answer(member, now);
  }

  /** Marks the election failed (e.g. the leader went silent); the caller elects again. */
  fail(reason: string, now: number = Date.now()): void {
    if (this.#state === "closed" || this.#state === "failed") return;
    this.#state = "failed";
    this.#failure = reason;
    this.timeline.failed = now;
  }

  /** Nobody is in it and nobody bid: it started nothing (a phantom once its members moved on). */
  get empty(): boolean {
    return this.#members.size === 0 && this.#state === "announcing";
  }

  /** Whether every member is done. */
  get complete(): boolean {
    return [...this.#members.values()].every((m) => m.done);
  }

  /** Advances the clock: returns the retransmissions now due, and fails a leader past its deadline. */
  tick(now: number): Outgoing[] {
    const out: Outgoing[] = [];
    if (this.#state === "announcing") {
      if (this.timeline.announced === undefined) this.timeline.announced = now;
      for (const [nodeId, member] of this.#members) {
        if (member.answered || member.done || now < member.nextSendAt) continue;
        out.push({ nodeId, message: this.announce });
        this.#backOff(member, now);
      }
    } else if (this.#state === "leading") {
      if (now >= this.#leaderDeadline) {
        this.fail(
          `leader ${this.#leader} sent no LeaderReady within ${this.timing.leaderTimeoutMs} ms`,
          now,
        );
        return out;
      }
      if (!this.#leaderSeen && now >= this.#leaderNextAck) {
        out.push({
          nodeId: this.#leader!,
          message: { type: "leaderAck", manifestId: this.manifestId },
        });
        this.#leaderAckDelay = Math.min(this.#leaderAckDelay * 2, this.timing.maxRetryMs);
        this.#leaderNextAck = now + this.#leaderAckDelay;
      }
    } else if (this.#state === "closed") {
      const settled = this.#settle(now);
      for (const [nodeId, member] of this.#members) {
        // The leader has the blob; it is told again only if it restarted or failed (rewind).
        if (member.done || (nodeId === this.#leader && member.answered)) continue;
        if (now < member.nextSendAt) continue;
        // Until the region settles, the others' ElectionClosed waits (see the module).
        const held = !settled && nodeId !== this.#leader;
        if (held && member.answered) continue;
        // A member never heard from may not know the election (it restarted, or every
        // announce was lost): it gets the Announce (with the ElectionClosed once settled).
        if (!member.answered) out.push({ nodeId, message: this.announce });
        if (!held) out.push({ nodeId, message: this.#closedMessage() });
        this.#backOff(member, now, member.closedAcked ? 2 : 1);
      }
    }
    return out;
  }

  /**
   * Restarts a member's retransmissions after `delayMs` (it came back after a
   * restart, so whatever it was told before is forgotten; or its update failed
   * and it is to try again). A rewound leader of a closed election is told
   * again too.
   */
  rewind(nodeId: string, now: number, delayMs = 0): void {
    const member = this.#members.get(nodeId);
    if (!member || member.done) return;
    if (member.answered) this.#answeredCount--;
    member.answered = false;
    member.closedAcked = false;
    member.nextSendAt = now + delayMs;
    member.delay = this.timing.retryMs;
  }

  /** Whether the closed election has settled (and from then on it has). */
  #settle(now: number): boolean {
    if (this.timeline.settled !== undefined) return true;
    if (this.#state !== "closed") return false;
    const closedAt = this.timeline.leaderReady ?? now;
    const quietMs = this.timing.settleQuietMs ?? DEFAULT_SETTLE_QUIET_MS;
    const maxMs = this.timing.settleMaxMs ?? DEFAULT_SETTLE_MAX_MS;
    const everyone = this.#answeredCount >= this.#members.size;
    if (everyone || now - this.#lastAnsweredAt >= quietMs || now - closedAt >= maxMs) {
      this.timeline.settled = now;
      return true;
    }
    return false;
  }

  #answer(member: Member, now: number): void {
    if (!member.answered) {
      member.answered = true;
      this.#answeredCount++;
      this.#lastAnsweredAt = now;
      if (this.#answeredCount >= this.#members.size) this.#settle(now);
    }
  }

  /** Excluded members may still lead when no one else pending could. */
  #eligible(nodeId: string): boolean {
    if (!this.#excluded.has(nodeId)) return true;
    return [...this.#members].every(([id, m]) => m.done || this.#excluded.has(id));
  }

  #backOff(member: Member, now: number, factor = 1): void {
    member.nextSendAt = now + member.delay * factor;
    member.delay = Math.min(member.delay * 2, this.timing.maxRetryMs);
  }

  #closedMessage(): ControlMessage {
    return {
      type: "electionClosed",
      manifestId: this.manifestId,
      leaderNodeId: this.#leader!,
      // The leader alone; the control plane gives each member its own swarm sources
      // (swarm_plan.ts) and the piece list when it sends this.
      sources: [{
        nodeId: this.#leader!,
        host: this.#leaderAddress!.host,
        p2pPort: this.#leaderAddress!.p2pPort,
      }],
      pieceListDigest: null,
    };
  }
}
