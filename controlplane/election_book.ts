/**
 * The control plane's elections: the live ones by manifest id, the finished
 * ones kept for the status report (the newest `MAX_PAST_ELECTIONS`), and the leaders of failed elections, which
 * do not lead the next election of the same (rollout, region, base) again.
 * In memory only: after a restart, elections are run again from the rollouts.
 *
 * @module
 */

import type { Election } from "./election.ts";

/** A live or past election, with the rollout and the (region, base) key it serves. */
export interface ElectionEntry {
  readonly election: Election;
  readonly rolloutId: number;
  /** `region|base`, `region|none` (whole file) or `region|held` (switch locally). */
  readonly key: string;
}

/** Most past elections kept for the status report; the oldest are forgotten first. */
export const MAX_PAST_ELECTIONS = 1000;

/** Every election of this control plane's run. */
export class ElectionBook {
  readonly #live = new Map<string, ElectionEntry>();
  /** Elections of failed, finished or superseded rollouts, kept for the status report. */
  readonly #past: ElectionEntry[] = [];
  /** Leaders of failed elections, per (rollout, key). */
  readonly #excluded = new Map<string, Set<string>>();
  #seq = 0;

  /**
   * A new manifest id: unique across restarts through the boot counter, and
   * unguessable through its 16 random hex digits (a device cannot bid for an
   * election before it is announced to it). It starts with `r<rollout>`, which
   * agents count failures by.
   */
  nextManifestId(rolloutId: number, boot: number): string {
    const random = Array.from(
      crypto.getRandomValues(new Uint8Array(8)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    return `r${rolloutId}.b${boot}.e${++this.#seq}.${random}`;
  }

  /** Leaders that do not lead an election of (rollout, key) again. */
  excluded(rolloutId: number, key: string): ReadonlySet<string> {
    return this.#excluded.get(`${rolloutId}|${key}`) ?? new Set<string>();
  }

  add(entry: ElectionEntry): void {
    this.#live.set(entry.election.manifestId, entry);
  }

  /** The live election with this manifest id. */
  get(manifestId: string): ElectionEntry | undefined {
    return this.#live.get(manifestId);
  }

  /** The live elections. */
  live(): IterableIterator<ElectionEntry> {
    return this.#live.values();
  }

  /** Past elections, then live ones. */
  all(): ElectionEntry[] {
    return [...this.#past, ...this.#live.values()];
  }

  /** The live election of (rollout, key). */
  find(rolloutId: number, key: string): ElectionEntry | undefined {
    for (const entry of this.#live.values()) {
      if (entry.rolloutId === rolloutId && entry.key === key) return entry;
    }
    return undefined;
  }

  /**
   * Every member of a rollout's live elections, with the election that
   * `memberOf` would give for it: one pass over the members, for a caller
   * that asks about every agent.
   */
  membersOf(rolloutId: number): Map<string, ElectionEntry> {
    const out = new Map<string, ElectionEntry>();
    for (const entry of this.#live.values()) {
      if (entry.rolloutId !== rolloutId) continue;
      for (const nodeId of entry.election.memberIds()) {
        if (!out.has(nodeId)) out.set(nodeId, entry);
      }
    }
    return out;
  }

  /** The live election of a rollout that `nodeId` is a member of. */
  memberOf(rolloutId: number, nodeId: string): ElectionEntry | undefined {
    for (const entry of this.#live.values()) {
      if (entry.rolloutId === rolloutId && entry.election.isMember(nodeId)) return entry;
    }
    return undefined;
  }

  /** Ends a rollout's live elections (kept as past ones). */
  endRollout(rolloutId: number): void {
    for (const [manifestId, entry] of this.#live) {
      if (entry.rolloutId === rolloutId) {
        this.#remember(entry);
        this.#live.delete(manifestId);
      }
    }
  }

  /**
   * Forgets a rollout's live elections that nobody is in and nobody bid for
   * (their members moved to another election, went offline or were removed):
   * they moved nothing, so they are neither kept nor shown.
   */
  forgetEmpty(rolloutId: number): void {
    for (const [manifestId, entry] of this.#live) {
      if (entry.rolloutId === rolloutId && entry.election.empty) this.#live.delete(manifestId);
    }
  }

  /** A failed election: its leader is excluded next time, and the next reconcile elects again. */
  retire(entry: ElectionEntry): void {
    const { election } = entry;
    if (election.leader) {
      const key = `${entry.rolloutId}|${entry.key}`;
      const excluded = this.#excluded.get(key) ?? new Set<string>();
      excluded.add(election.leader);
      this.#excluded.set(key, excluded);
    }
    this.#live.delete(election.manifestId);
    this.#remember(entry);
  }

  #remember(entry: ElectionEntry): void {
    this.#past.push(entry);
    if (this.#past.length > MAX_PAST_ELECTIONS) {
      this.#past.splice(0, this.#past.length - MAX_PAST_ELECTIONS);
    }
  }
}
