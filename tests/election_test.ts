/**
 * The election state machine (controlplane/election.ts): first bid wins,
 * every handler is idempotent, retransmissions back off, a silent leader fails
 * the election.
 */

import assert from "node:assert/strict";
import type { Announce } from "../transfer/control_messages.ts";
import { Election, type Outgoing } from "../controlplane/election.ts";

const D = (n: number) => new Uint8Array(32).fill(n);
const ANNOUNCE: Announce = {
  type: "announce",
  manifestId: "r1.b1.e1",
  model: "resnet",
  version: "v2",
  targetDigest: D(2),
  targetSize: 1000,
  baseDigest: D(1),
  blobDigest: D(3),
  blobSize: 100,
  cpHost: "100.64.0.1",
  cpP2pPort: 7401,
  releaseDigest: null,
  delegationDigest: null,
};
const TIMING = { retryMs: 100, maxRetryMs: 400, leaderTimeoutMs: 5000 };
const ADDRESS = { host: "100.64.0.11", p2pPort: 7411 };

function election(members = ["a", "b", "c"]): Election {
  const e = new Election(ANNOUNCE, "eu", TIMING);
  for (const m of members) e.addMember(m, 0);
  return e;
}

const types = (out: Outgoing[]) => out.map((o) => `${o.message.type}>${o.nodeId}`).sort();

Deno.test("the first tick announces to every member, and nothing more until the retry is due", () => {
  const e = election();
  assert.deepEqual(types(e.tick(0)), ["announce>a", "announce>b", "announce>c"]);
  assert.deepEqual(e.tick(50), []);
  assert.deepEqual(types(e.tick(100)), ["announce>a", "announce>b", "announce>c"]);
});

Deno.test("announces back off exponentially up to the cap, only to members not heard from", () => {
  const e = election();
  const sentAt: number[] = [];
  for (let t = 0; t <= 2000; t += 10) if (e.tick(t).some((o) => o.nodeId === "a")) sentAt.push(t);
  // 0, +100, +200, +400, then every 400 (the cap).
  assert.deepEqual(sentAt.slice(0, 6), [0, 100, 300, 700, 1100, 1500]);
  e.onBid("a", 2000);
  assert.ok(!e.tick(5000).some((o) => o.nodeId === "a" && o.message.type === "announce"));
});

Deno.test("the first bid wins; later bids lose; a repeated bid from the leader gets LeaderAck again", () => {
  const e = election();
  e.tick(0);
  assert.deepEqual(types(e.onBid("b", 10)), ["leaderAck>b"]);
  assert.equal(e.state, "leading");
  assert.equal(e.leader, "b");
  assert.deepEqual(e.onBid("a", 11), []);
  assert.deepEqual(e.onBid("c", 12), []);
  assert.deepEqual(types(e.onBid("b", 13)), ["leaderAck>b"]);
  assert.equal(e.leader, "b");
});

Deno.test("bids from non-members are ignored", () => {
  const e = election();
  assert.deepEqual(e.onBid("stranger", 0), []);
  assert.equal(e.state, "announcing");
});

Deno.test("LeaderAck is repeated until the leader shows life", () => {
  const e = election();
  e.onBid("a", 0);
  assert.deepEqual(types(e.tick(100)), ["leaderAck>a"]);
  e.onLeaderAlive("a");
  assert.deepEqual(e.tick(1000), []);
});

Deno.test("LeaderReady closes the election; ElectionClosed goes to every follower until done", () => {
  const e = election();
  e.onBid("a", 0);
  e.onBid("b", 1);
  e.onBid("c", 2);
  assert.deepEqual(e.onLeaderReady("b", ADDRESS, 5), [], "only the leader can say ready");
  const reply = e.onLeaderReady("a", ADDRESS, 10);
  assert.deepEqual(types(reply), ["electionClosed>a"]);
  assert.equal(e.state, "closed");
  const closed = e.tick(10);
  assert.deepEqual(types(closed), ["electionClosed>b", "electionClosed>c"]);
  const message = closed[0].message;
  assert.ok(message.type === "electionClosed");
  assert.equal(message.leaderNodeId, "a");
  assert.deepEqual(
    message.sources,
    [{ nodeId: "a", ...ADDRESS }],
    "the leader, until the control plane swarms it",
  );
  assert.equal(message.pieceListDigest, null);
  // A repeated LeaderReady (our ElectionClosed to the leader was lost) is answered again.
  assert.deepEqual(types(e.onLeaderReady("a", ADDRESS, 20)), ["electionClosed>a"]);
  e.onDone("b", 100);
  assert.deepEqual(types(e.tick(110)), ["electionClosed>c"]);
  e.onDone("c", 200);
  e.onDone("a", 200);
  assert.deepEqual(e.tick(10_000), []);
  assert.ok(e.complete);
});

Deno.test("a member that acknowledged ElectionClosed is reminded less often until done", () => {
  const e = election(["a", "b"]);
  e.onBid("a", 0);
  e.onLeaderReady("a", ADDRESS, 0);
  e.tick(0);
  e.onClosedAck("b", 0);
  const sentAt: number[] = [];
  for (let t = 1; t <= 3000; t++) if (e.tick(t).length > 0) sentAt.push(t);
  assert.ok(sentAt.length > 0 && sentAt.length <= 6, `reminders at ${sentAt}`);
});

Deno.test("a late bid after the election settled is answered with ElectionClosed", () => {
  const e = election();
  e.onBid("a", 0);
  e.onLeaderReady("a", ADDRESS, 0);
  e.tick(1000); // no one answered for 1 s: settled
  assert.deepEqual(types(e.onBid("c", 1050)), ["electionClosed>c"]);
});

Deno.test("a closed election holds the others' ElectionClosed until every member answered", () => {
  const e = election();
  e.onBid("a", 0);
  assert.deepEqual(
    types(e.onLeaderReady("a", ADDRESS, 10)),
    ["electionClosed>a"],
    "the leader at once",
  );
  e.onBid("b", 20);
  assert.deepEqual(
    types(e.tick(30)),
    ["announce>c"],
    "b waits; c, never heard from, is announced to",
  );
  assert.deepEqual(types(e.onBid("c", 40)), ["electionClosed>c"], "the last one: settled");
  assert.deepEqual(types(e.tick(40)), ["electionClosed>b"]);
  assert.equal(e.timeline.settled, 40);
});

Deno.test("a closed election settles when no member answered for settleQuietMs, or at settleMaxMs", () => {
  const quiet = new Election(ANNOUNCE, "eu", { ...TIMING, settleQuietMs: 500, settleMaxMs: 3000 });
  for (const m of ["a", "b", "c"]) quiet.addMember(m, 0);
  quiet.onBid("a", 0);
  quiet.onLeaderReady("a", ADDRESS, 0);
  quiet.onBid("b", 100);
  assert.deepEqual(types(quiet.tick(599)), ["announce>c"]);
  assert.deepEqual(types(quiet.tick(600)), ["electionClosed>b"], "quiet for 500 ms");
  // Members keep answering, one every 400 ms: settled 3 s after closing.
  const busy = new Election(ANNOUNCE, "eu", { ...TIMING, settleQuietMs: 500, settleMaxMs: 3000 });
  const ids = Array.from({ length: 12 }, (_, i) => `m${i}`);
  for (const m of ids) busy.addMember(m, 0);
  busy.onBid("m0", 0);
  busy.onLeaderReady("m0", ADDRESS, 0);
  for (let i = 1; i < 8; i++) busy.onBid(ids[i], i * 400);
  assert.equal(busy.timeline.settled, undefined);
  busy.tick(2999);
  assert.equal(busy.timeline.settled, undefined);
  busy.tick(3000);
  assert.equal(busy.timeline.settled, 3000);
});

Deno.test("a leader that never says ready fails the election at its deadline", () => {
  const e = election();
  e.onBid("a", 0);
  e.tick(4999);
  assert.equal(e.state, "leading");
  e.tick(5000);
  assert.equal(e.state, "failed");
  assert.match(e.failure!, /leader a sent no LeaderReady within 5000 ms/);
  assert.deepEqual(e.tick(6000), [], "a failed election sends nothing");
});

Deno.test("excluded members do not win while someone else can", () => {
  const e = new Election(ANNOUNCE, "eu", TIMING, new Set(["a"]));
  e.addMember("a", 0);
  e.addMember("b", 0);
  assert.deepEqual(e.onBid("a", 0), []);
  assert.equal(e.state, "announcing");
  assert.deepEqual(types(e.onBid("b", 1)), ["leaderAck>b"]);
  const alone = new Election(ANNOUNCE, "eu", TIMING, new Set(["a"]));
  alone.addMember("a", 0);
  assert.deepEqual(types(alone.onBid("a", 0)), ["leaderAck>a"], "the only member may lead");
});

Deno.test("rewind restarts a restarted member's messages from the beginning", () => {
  const e = election(["a", "b"]);
  e.onBid("a", 0);
  e.onLeaderReady("a", ADDRESS, 0);
  e.tick(0);
  e.onClosedAck("b", 0);
  e.rewind("b", 1);
  assert.deepEqual(types(e.tick(1)), ["announce>b", "electionClosed>b"], "settled already");
});

Deno.test("members never heard from get the Announce along with ElectionClosed once settled", () => {
  const e = election(["a", "b"]);
  e.onBid("a", 0);
  e.onLeaderReady("a", ADDRESS, 0);
  assert.deepEqual(types(e.tick(1000)), ["announce>b", "electionClosed>b"]);
  e.onClosedAck("b", 1000);
  assert.deepEqual(types(e.tick(10_000)), ["electionClosed>b"]);
});

Deno.test("every handler is idempotent: replaying all messages twice changes nothing", () => {
  const once = election();
  const twice = election();
  for (const e of [once, twice]) {
    const replay = e === twice ? 2 : 1;
    for (let i = 0; i < replay; i++) {
      e.onBid("c", 1);
      e.onBid("a", 2);
      e.onLeaderAlive("c");
      e.onLeaderReady("c", ADDRESS, 3);
      e.onClosedAck("a", 4);
      e.onDone("b", 5);
    }
  }
  for (const key of ["state", "leader", "pending", "members"] as const) {
    assert.deepEqual(twice[key], once[key], key);
  }
});

Deno.test("a rewound leader of a closed election is told again (it restarted or failed)", () => {
  const e = election(["a", "b"]);
  e.onBid("a", 0);
  e.onLeaderReady("a", ADDRESS, 0);
  assert.ok(
    !types(e.tick(0)).some((t) => t.endsWith(">a")),
    "the leader is not told what it knows",
  );
  e.rewind("a", 10, 100);
  assert.ok(!types(e.tick(50)).some((t) => t.endsWith(">a")), "not before the delay");
  assert.deepEqual(types(e.tick(110)).filter((t) => t.endsWith(">a")), [
    "announce>a",
    "electionClosed>a",
  ]);
});

Deno.test("answeredCount follows answers, rewinds and removals without copying the members", () => {
  const e = election(["a", "b", "c"]);
  assert.equal(e.answeredCount, 0);
  e.onBid("a", 0);
  e.onAnswered("b", 1);
  e.onAnswered("b", 2);
  assert.equal(e.answeredCount, 2);
  assert.equal(e.answeredCount, e.answeredMembers.length);
  e.rewind("b", 3);
  assert.equal(e.answeredCount, 1);
  e.removeMember("a");
  assert.equal(e.answeredCount, 0);
  e.onDone("c", 4);
  assert.deepEqual(e.answeredMembers, ["c"]);
  assert.equal(e.answeredCount, 1);
});
