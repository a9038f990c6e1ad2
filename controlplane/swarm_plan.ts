/**
 * Who downloads from whom inside one election (issue 15, docs/design.md "The swarm"): a pure
 * assignment of sources to members, so that a region's devices pass the blob on among themselves,
 * no device uploads much more than it downloads, and a region's completion time grows with the
 * logarithm of its size.
 *
 * **Two interleaved trees.** A blob's pieces form `SWARM_STRIPES` (2) stripes: the even pieces and
 * the odd ones (transfer/control_messages.ts). When the control plane first needs an election's
 * sources it makes a plan: the leader is position 0, the members it has heard from are positions
 * 1 … m in the order they joined. Stripe 0 flows down a binary heap over 1 … m (the parent of
 * position k is ⌊k/2⌋, position 1's is the leader); stripe 1 down the same heap over the reversed
 * numbering j = m + 1 − k (the parent of j is ⌊j/2⌋, j = 1's is the leader). A position with
 * children in one tree (k ≤ m/2 in stripe 0's, k ≥ m/2 + 1 in stripe 1's) is a leaf in the other,
 * so each member passes half the blob on to at most two children — it uploads about one blob, as
 * much as it downloads — and the leader half the blob to each of positions 1 and m. Both trees
 * are ⌈log2(m + 1)⌉ deep: with pieces taken in order and passed on as soon as verified, the last
 * device finishes about 2 · log2(m) piece times after the first, where a line of m devices needs
 * m.
 *
 * A member's sources, in order: its parent in stripe 0's tree (it serves the even pieces), its
 * parent in stripe 1's (the odd ones), then the leader. A parent that is not usable (offline) is
 * replaced by its nearest usable ancestor in that tree. A member asks each stripe's own source
 * first, then the sources after the first two, and the other stripe's source last
 * (transfer/control_messages.ts `SWARM_STRIPES`): so a stripe's fallback is always upstream of
 * it in its tree (the leader), never a member that waits for the same pieces from below — a
 * device that dies costs its children a stripe from the leader, not a wait. Members heard from
 * after the plan was made are appended behind it as a line: each takes its three nearest usable
 * predecessors, then the leader (all upstream). The plan's positions never change (members that
 * joined earlier keep their sources); when a member leaves the election the control plane makes
 * a new plan.
 *
 * @module
 */

import { MAX_SOURCES, SWARM_STRIPES } from "../transfer/control_messages.ts";

/** Most sources a member is given (the protocol's limit): a line member's 3 predecessors and the leader. */
export const SOURCES_PER_MEMBER = MAX_SOURCES;

/** Predecessors a member appended behind the plan (a line) downloads from. */
export const LINE_SOURCES = 3;

/** How far up a tree, or back along the line, a usable source is looked for. */
export const MAX_LOOKBACK = 64;

/** An election's swarm plan: positions, and how many of them form the two trees. */
export interface SwarmPlan {
  /** Node ids by position: the leader first. */
  readonly ids: readonly string[];
  /** Positions by node id. */
  readonly index: ReadonlyMap<string, number>;
  /** Positions 1 … `treeSize` form the trees; the ones after them the line behind. */
  readonly treeSize: number;
}

/**
 * The members in swarm order: the leader first, then the others in the order given (the order
 * they joined the election).
 */
export function swarmOrder(leader: string, members: readonly string[]): string[] {
  return [leader, ...members.filter((id) => id !== leader)];
}

/** A new plan: `leader` at position 0, every other member of `members` in the trees. */
export function planSwarm(leader: string, members: readonly string[]): SwarmPlan {
  const ids = swarmOrder(leader, members);
  return { ids, index: new Map(ids.map((id, i) => [id, i])), treeSize: ids.length - 1 };
}

/**
 * `plan` with the members of `members` it lacks appended behind it (in the order given), the
 * positions of the others unchanged; undefined when a member of the plan is no longer in
 * `members` (it left: make a new plan). The leader need not be in `members`.
 */
export function extendPlan(plan: SwarmPlan, members: readonly string[]): SwarmPlan | undefined {
  const present = new Set(members);
  for (let p = 1; p < plan.ids.length; p++) if (!present.has(plan.ids[p])) return undefined;
  const added = members.filter((id) => !plan.index.has(id));
  if (added.length === 0) return plan;
  const ids = [...plan.ids, ...added];
  const index = new Map(plan.index);
  for (let p = plan.ids.length; p < ids.length; p++) index.set(ids[p], p);
  return { ids, index, treeSize: plan.treeSize };
}

/**
 * The parent of tree position `position` (1 … `treeSize`) in stripe `stripe`'s tree (0: the
 * heap over 1 … m, 1: the heap over the reversed numbering); 0 is the leader. Throws
 * `RangeError` outside the trees.
 */
export function parentPosition(position: number, treeSize: number, stripe: number): number {
  if (!Number.isSafeInteger(treeSize) || treeSize < 1) {
    throw new RangeError(`bad tree size ${treeSize}`);
  }
  if (!Number.isSafeInteger(position) || position < 1 || position > treeSize) {
    throw new RangeError(`position ${position} is not in a tree of ${treeSize}`);
  }
  if (stripe === 0) return position >> 1;
  if (stripe === 1) {
    const parent = (treeSize + 1 - position) >> 1;
    return parent === 0 ? 0 : treeSize + 1 - parent;
  }
  throw new RangeError(`stripe ${stripe} is not one of ${SWARM_STRIPES}`);
}

/**
 * Positions member `position` downloads from when every member is usable, in order of
 * preference, among `count` members of which `treeSize` (≤ count − 1) are in the trees.
 * Throws `RangeError` on a position outside the election.
 */
export function sourcePositions(position: number, count: number, treeSize = count - 1): number[] {
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`bad member count ${count}`);
  if (!Number.isSafeInteger(position) || position < 0 || position >= count) {
    throw new RangeError(`position ${position} is not one of ${count} members`);
  }
  return positionsOf(position, treeSize, () => true);
}

/**
 * The node ids `nodeId` downloads from under `plan` (see the module's description), with
 * members that `usable` refuses (offline, or no known address) replaced by their nearest usable
 * ancestor — or, behind the trees, the next predecessor back; the leader is always usable.
 * Undefined for a node that is not in the plan; the leader's list is itself.
 */
export function sourcesOf(
  nodeId: string,
  plan: SwarmPlan,
  usable: (nodeId: string) => boolean,
): string[] | undefined {
  const position = plan.index.get(nodeId);
  if (position === undefined) return undefined;
  return positionsOf(position, plan.treeSize, (p) => usable(plan.ids[p])).map((p) => plan.ids[p]);
}

function positionsOf(
  position: number,
  treeSize: number,
  usable: (position: number) => boolean,
): number[] {
  if (position === 0) return [0];
  const picked: number[] = [];
  const add = (p: number) => {
    if (!picked.includes(p) && picked.length < SOURCES_PER_MEMBER) picked.push(p);
  };
  if (position <= treeSize) {
    /** The nearest usable ancestor of tree position `p` in `stripe`'s tree. */
    const up = (p: number, stripe: number): number => {
      let q = parentPosition(p, treeSize, stripe);
      for (let steps = 1; q !== 0 && !usable(q); steps++) {
        q = steps >= MAX_LOOKBACK ? 0 : parentPosition(q, treeSize, stripe);
      }
      return q;
    };
    // Slot i serves stripe i: the leader fills the second slot when both parents are one member.
    const parents = Array.from({ length: SWARM_STRIPES }, (_, stripe) => up(position, stripe));
    for (const p of parents) add(p);
  } else {
    const last = Math.max(1, position - MAX_LOOKBACK);
    for (let p = position - 1; p >= last && picked.length < LINE_SOURCES; p--) {
      if (usable(p)) add(p);
    }
  }
  add(0);
  return picked;
}
