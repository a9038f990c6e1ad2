/**
 * Who downloads from whom inside one election (issue 15, docs/design.md "The swarm"): a pure
 * assignment of sources to members, so that a region's devices pass the blob on among themselves
 * and no device is asked to serve more than a few peers.
 *
 * Members are numbered by position: 0 is the leader (it holds the whole blob), then the others
 * in the order they joined. Member `k` (k ≥ 1) downloads from its predecessors `k − 1`, `k − 2`
 * and `k − 3` (those that exist), in that order of preference. Every member takes the pieces in
 * order and serves each one as soon as it has verified it, so the blob streams down the line: a
 * member lags its predecessor by about one piece, each piece crosses each device's uplink about
 * once, and the region's last device finishes about `(N − 1) × piece time` after the first
 * follower — a small slope when pieces are small (the control plane cuts about 256 of them per
 * blob). Three predecessors, not one: a member whose nearest predecessor dies or stalls goes on
 * from the next. A member is named as a source by at most 3 others (its 3 successors); the
 * leader by members 1, 2 and 3 only. The leader's own list is itself: it downloads from the
 * control plane.
 *
 * @module
 */

/** Most sources a member is given (the protocol allows 4: transfer/control_messages.ts). */
export const SOURCES_PER_MEMBER = 3;

/**
 * Positions member `position` downloads from, in order of preference, among `count` members
 * (positions 0 … count − 1). Throws `RangeError` on a position outside the election.
 */
export function sourcePositions(position: number, count: number): number[] {
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`bad member count ${count}`);
  if (!Number.isSafeInteger(position) || position < 0 || position >= count) {
    throw new RangeError(`position ${position} is not one of ${count} members`);
  }
  if (position === 0) return [0];
  const sources: number[] = [];
  for (let p = position - 1; p >= 0 && sources.length < SOURCES_PER_MEMBER; p--) sources.push(p);
  return sources;
}

/**
 * The members in swarm order: the leader first, then the others in the order given (the order
 * they joined the election).
 */
export function swarmOrder(leader: string, members: readonly string[]): string[] {
  return [leader, ...members.filter((id) => id !== leader)];
}

/** How far back `sourcesOf` looks for usable predecessors before it settles for the leader. */
export const MAX_LOOKBACK = 64;

/**
 * The node ids `nodeId` downloads from: its nearest `SOURCES_PER_MEMBER` predecessors in
 * `order` (`swarmOrder`) that `usable` accepts (it refuses the offline, or those with no known
 * address), looking back at most `MAX_LOOKBACK` positions, then the leader (always usable) if
 * there is still room. Undefined for a node that is not in `order`; the leader's list is itself.
 */
export function sourcesOf(
  nodeId: string,
  order: readonly string[],
  usable: (nodeId: string) => boolean,
  index?: ReadonlyMap<string, number>,
): string[] | undefined {
  const position = index !== undefined ? index.get(nodeId) : order.indexOf(nodeId);
  if (position === undefined || position < 0) return undefined;
  if (position === 0) return [order[0]];
  const picked: string[] = [];
  const last = Math.max(1, position - MAX_LOOKBACK);
  for (let p = position - 1; p >= last && picked.length < SOURCES_PER_MEMBER; p--) {
    if (usable(order[p])) picked.push(order[p]);
  }
  if (picked.length < SOURCES_PER_MEMBER) picked.push(order[0]);
  return picked;
}
