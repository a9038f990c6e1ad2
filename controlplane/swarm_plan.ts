/**
 * Who downloads from whom inside one election (issue 15, docs/design.md "The swarm"): a pure
 * assignment of sources to members, so that a region's devices pass the blob on among themselves,
 * no device uploads much more than it downloads, and a region's completion time grows with the
 * logarithm of its size.
 *
 * **Two interleaved trees.** A blob's pieces form `SWARM_STRIPES` (2) stripes: the even pieces and
 * the odd ones (transfer/control_messages.ts). The control plane numbers an election's members:
 * the leader is position 0, the members it has heard from are positions 1 … m in the order they
 * joined (a member heard from later gets the next position; no position ever changes). Stripe 0 flows down a binary heap over 1 … m (the parent of
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
 * first, then the sources after the first two, never the other stripe's
 * (transfer/control_messages.ts `SWARM_STRIPES`): so a stripe's fallback is always upstream of
 * it in its tree (the leader, then the control plane), never a member that waits for the same
 * pieces from below — a device that dies costs its children a stripe from the leader, not a
 * wait.
 *
 * **Members who join late.** A member's sources are computed with the m known when its
 * ElectionClosed is sent, and it keeps them; members heard from later are computed with a larger
 * m. Stripe 0's heap does not depend on m; stripe 1's does, but in every m a parent in stripe 1's
 * tree has a higher position than its child (and in stripe 0's a lower one), so sources computed
 * with different m never form a cycle: each stripe still flows from the leader. What a late m
 * costs is balance: a member may be an inner node of stripe 1's tree for the members sent early
 * and of stripe 0's for the ones sent late, passing on up to four halves (two blobs) instead of
 * two; its upload slots (agent `--upload-slots`) bound that, the excess asking the leader. When a
 * member leaves the election the control plane numbers the members again.
 *
 * @module
 */

import { SWARM_STRIPES } from "../transfer/control_messages.ts";

/** Most sources a member is given: its parent in each stripe's tree and the leader (≤ `MAX_SOURCES`). */
export const SOURCES_PER_MEMBER = SWARM_STRIPES + 1;

/** How far up a tree a usable source is looked for. */
export const MAX_LOOKBACK = 64;

/** An election's swarm plan: its members' positions. */
export interface SwarmPlan {
  /** Node ids by position: the leader first. */
  readonly ids: readonly string[];
  /** Positions by node id. */
  readonly index: ReadonlyMap<string, number>;
}

/**
 * The members in swarm order: the leader first, then the others in the order given (the order
 * they joined the election).
 */
export function swarmOrder(leader: string, members: readonly string[]): string[] {
  return [leader, ...members.filter((id) => id !== leader)];
}

/** A new plan: `leader` at position 0, the other members of `members` after it in their order. */
export function planSwarm(leader: string, members: readonly string[]): SwarmPlan {
  const ids = swarmOrder(leader, members);
  return { ids, index: new Map(ids.map((id, i) => [id, i])) };
}

/**
 * `plan` with the members of `members` it lacks given the next positions (in the order given),
 * the positions of the others unchanged; undefined when a member of the plan is no longer in
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
  return { ids, index };
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
 * preference, among `count` members (positions 0 … count − 1). Throws `RangeError` on a
 * position outside the election.
 */
export function sourcePositions(position: number, count: number): number[] {
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`bad member count ${count}`);
  if (!Number.isSafeInteger(position) || position < 0 || position >= count) {
    throw new RangeError(`position ${position} is not one of ${count} members`);
  }
  return positionsOf(position, count - 1, () => true);
}

/**
 * The node ids `nodeId` downloads from under `plan` (see the module's description), with
 * members that `usable` refuses (offline, or no known address) replaced by their nearest usable
 * ancestor; the leader is always usable. Undefined for a node that is not in the plan; the
 * leader's list is itself.
 */
export function sourcesOf(
  nodeId: string,
  plan: SwarmPlan,
  usable: (nodeId: string) => boolean,
): string[] | undefined {
  const position = plan.index.get(nodeId);
  if (position === undefined) return undefined;
  return positionsOf(position, plan.ids.length - 1, (p) => usable(plan.ids[p]))
    .map((p) => plan.ids[p]);
}

function positionsOf(
  position: number,
  treeSize: number,
  usable: (position: number) => boolean,
): number[] {
  if (position === 0) return [0];
  /** The nearest usable ancestor of `position` in `stripe`'s tree. */
  const up = (stripe: number): number => {
    let q = parentPosition(position, treeSize, stripe);
    for (let steps = 1; q !== 0 && !usable(q); steps++) {
      q = steps >= MAX_LOOKBACK ? 0 : parentPosition(q, treeSize, stripe);
    }
    return q;
  };
  // Slot i serves stripe i; the leader comes last, or second when both parents are one member.
  const picked: number[] = [];
  for (let stripe = 0; stripe < SWARM_STRIPES; stripe++) {
    const parent = up(stripe);
    if (!picked.includes(parent)) picked.push(parent);
  }
  if (!picked.includes(0)) picked.push(0);
  return picked;
}
