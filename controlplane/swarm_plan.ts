/**
 * Who downloads from whom inside one election (issue 15, docs/design.md "The swarm"): a pure
 * assignment of sources to members, so that a region's devices share the blob among themselves
 * and no device is asked to serve more than a few peers.
 *
 * Members are numbered by position: 0 is the leader (it holds the whole blob), then the others
 * in the order they joined. Member `k` (k ≥ 1) downloads from its parent in a `fanout`-ary tree
 * over positions, `⌊(k − 1) / fanout⌋`, then from its neighbours `k − 1` and `k + 1`. Pieces flow
 * down the tree while neighbours trade what they already have, so every member's uplink works
 * and the region's completion time grows with the tree's depth (log N), not with N. A member is
 * named as a source by at most `fanout + 2` others (its children and two neighbours); the leader
 * by `fanout + 1` at most. The leader's own list is itself: it downloads from the control plane.
 *
 * @module
 */

/** Children per member in the tree: the leader is the first source of this many members. */
export const DEFAULT_FANOUT = 4;

/** Most sources a member is given (the protocol allows 4: transfer/control_messages.ts). */
export const SOURCES_PER_MEMBER = 3;

/**
 * Positions member `position` downloads from, in order of preference, among `count` members
 * (positions 0 … count − 1). Throws `RangeError` on a position outside the election.
 */
export function sourcePositions(
  position: number,
  count: number,
  fanout: number = DEFAULT_FANOUT,
): number[] {
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`bad member count ${count}`);
  if (!Number.isSafeInteger(position) || position < 0 || position >= count) {
    throw new RangeError(`position ${position} is not one of ${count} members`);
  }
  if (!Number.isSafeInteger(fanout) || fanout < 1) throw new RangeError(`bad fanout ${fanout}`);
  if (position === 0) return [0];
  const sources = [Math.floor((position - 1) / fanout)];
  for (const neighbour of [position - 1, position + 1]) {
    if (neighbour >= 1 && neighbour < count && !sources.includes(neighbour)) {
      sources.push(neighbour);
    }
  }
  return sources.slice(0, SOURCES_PER_MEMBER);
}

/**
 * The members in swarm order: the leader first, then the others in the order given (the order
 * they joined the election).
 */
export function swarmOrder(leader: string, members: readonly string[]): string[] {
  return [leader, ...members.filter((id) => id !== leader)];
}

/**
 * The node ids `nodeId` downloads from: `sourcePositions` mapped through `order`
 * (`swarmOrder`), leaving out members `usable` refuses (offline, or with no known
 * address) and falling back to the leader when none is left. Undefined for a node
 * that is not in `order`.
 */
export function sourcesOf(
  nodeId: string,
  order: readonly string[],
  usable: (nodeId: string) => boolean,
  fanout: number = DEFAULT_FANOUT,
  index?: ReadonlyMap<string, number>,
): string[] | undefined {
  const position = index !== undefined ? index.get(nodeId) : order.indexOf(nodeId);
  if (position === undefined || position < 0) return undefined;
  const picked = sourcePositions(position, order.length, fanout)
    .map((p) => order[p])
    .filter((id) => id === order[0] || usable(id));
  return picked.length > 0 ? picked : [order[0]];
}
