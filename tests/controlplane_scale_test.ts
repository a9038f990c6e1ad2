/**
 * The pieces that let one control plane hold thousands of devices (issue 15),
 * each without timing: election datagrams interleaved across elections, the
 * election book's one-pass membership index and its bounded past, device
 * datagrams verified concurrently but committed in arrival order, and the
 * socket's bounded send queue. Their effect at scale is measured by
 * `deno task bench:cp` (scripts/bench_controlplane.ts), not here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { interleave } from "../controlplane/control_plane.ts";
import { Election } from "../controlplane/election.ts";
import { ElectionBook, MAX_PAST_ELECTIONS } from "../controlplane/election_book.ts";
import { generateKey } from "../release/keys.ts";
import {
  type Announce,
  CONTROL_PLANE_RECEIVER,
  type ControlMessage,
  openControlMessage,
  signControlMessage,
  verifyControlMessage,
} from "../transfer/control_messages.ts";
import { ControlSocket, MAX_SEND_QUEUE } from "../transfer/control_socket.ts";
import { DatagramAuthenticator } from "../transfer/datagram_auth.ts";

const announce = (manifestId: string): Announce => ({
  type: "announce",
  manifestId,
  model: "resnet",
  version: "v2",
  targetDigest: new Uint8Array(32).fill(1),
  targetSize: 100,
  baseDigest: null,
  blobDigest: new Uint8Array(32).fill(1),
  blobSize: 100,
  cpHost: "127.0.0.1",
  cpP2pPort: 7401,
  releaseDigest: null,
  delegationDigest: null,
});

Deno.test("each tick's election datagrams go out one of each election at a time, each election's in its own order", () => {
  assert.deepEqual([...interleave([["a1", "a2", "a3"], [], ["b1"], ["c1", "c2"]])], [
    "a1",
    "b1",
    "c1",
    "a2",
    "c2",
    "a3",
  ]);
  assert.deepEqual([...interleave([])], []);
});

Deno.test("the election book's membership index names, for every member, the election memberOf names", () => {
  const book = new ElectionBook();
  const entries = ["eu|none", "us|none", "eu|held"].map((key, i) => {
    const entry = { election: new Election(announce(`r1.b1.e${i}`), key), rolloutId: 1, key };
    book.add(entry);
    return entry;
  });
  const other = {
    election: new Election(announce("r2.b1.e9"), "eu"),
    rolloutId: 2,
    key: "eu|none",
  };
  book.add(other);
  entries[0].election.addMember("a", 0);
  entries[0].election.addMember("b", 0);
  entries[1].election.addMember("c", 0);
  entries[2].election.addMember("b", 0); // in two: the first one found counts, as for memberOf
  other.election.addMember("d", 0);
  const index = book.membersOf(1);
  assert.deepEqual([...index.keys()].sort(), ["a", "b", "c"]);
  for (const nodeId of ["a", "b", "c"]) assert.equal(index.get(nodeId), book.memberOf(1, nodeId));
  assert.equal(book.membersOf(2).get("d"), other);
  assert.equal(book.membersOf(3).size, 0);
});

Deno.test("the election book keeps only the newest past elections, however many rollouts end", () => {
  const book = new ElectionBook();
  const total = MAX_PAST_ELECTIONS + 5;
  for (let i = 0; i < total; i++) {
    book.add({
      election: new Election(announce(`r${i}.b1.e1`), "eu"),
      rolloutId: i,
      key: "eu|none",
    });
    book.endRollout(i);
  }
  const kept = book.all();
  assert.equal(kept.length, MAX_PAST_ELECTIONS);
  assert.equal(kept[0].rolloutId, 5, "the oldest went first");
  assert.equal(kept.at(-1)!.rolloutId, total - 1);
});

Deno.test("datagrams of one sender verified concurrently are accepted when committed in arrival order; committed out of order, the older is a replay", async () => {
  const { key } = await generateKey("device");
  const seq = Date.now() * 1000;
  const signed = async (n: number) =>
    openControlMessage(
      await signControlMessage(
        { type: "bid", manifestId: "r1.b1.e1", nodeId: "eu-0" },
        seq + n,
        key.privateKey,
        CONTROL_PLANE_RECEIVER,
      ),
    );
  const [first, second, third] = await Promise.all([signed(1), signed(2), signed(3)]);
  const auth = new DatagramAuthenticator(CONTROL_PLANE_RECEIVER);
  const now = Date.now();
  const verdicts = await Promise.all(
    [first, second, third].map((d) => auth.verify("eu-0", key.publicKey, d, now)),
  );
  assert.deepEqual(verdicts, [null, null, null], "verifying records nothing");
  assert.equal(auth.commit("eu-0", first, verdicts[0]), true);
  assert.equal(auth.commit("eu-0", third, verdicts[2]), true);
  assert.equal(auth.commit("eu-0", second, verdicts[1]), false, "older than one accepted");
  assert.deepEqual(auth.drops, { unknownSender: 0, badSignature: 0, replayed: 1, stale: 0 });
  // A verdict that drops is counted at commit, and records nothing.
  assert.equal(auth.commit("eu-1", first, "badSignature"), false);
  assert.equal(auth.drops.badSignature, 1);
  assert.equal(await auth.accept("eu-0", key.publicKey, third, now), false, "a replay");
});

Deno.test("a socket asked to send more than its queue holds at once drops the rest and counts them; what it sends is signed and leaves in sequence order", async () => {
  const { key } = await generateKey("device");
  const receiver = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const socket = ControlSocket.open("127.0.0.1", 0, { signer: () => key.privateKey });
  const publicKey = await crypto.subtle.importKey(
    "raw",
    new Uint8Array(key.publicKey),
    {
      name: "Ed25519",
    },
    false,
    ["verify"],
  );
  try {
    const to = { hostname: "127.0.0.1", port: (receiver.addr as Deno.NetAddr).port };
    const extra = 10;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < MAX_SEND_QUEUE + extra; i++) {
      const message: ControlMessage = { type: "bid", manifestId: `m${i}`, nodeId: "eu-0" };
      sends.push(socket.send(message, to));
    }
    assert.equal(socket.counters.sendQueueFull, extra);
    assert.equal(socket.dropIfFull(), true, "still full until they leave");
    assert.equal(socket.counters.sendQueueFull, extra + 1);
    await Promise.all(sends);
    assert.equal(socket.counters.sent, MAX_SEND_QUEUE);
    assert.equal(socket.dropIfFull(), false, "room again");
    let lastSeq = 0;
    for (let i = 0; i < 20; i++) {
      const [data] = await receiver.receive();
      const opened = openControlMessage(data);
      assert.ok(opened.seq > lastSeq, "in sequence order");
      lastSeq = opened.seq;
      assert.equal(await verifyControlMessage(opened, publicKey, CONTROL_PLANE_RECEIVER), true);
    }
  } finally {
    socket.close();
    receiver.close();
  }
});
