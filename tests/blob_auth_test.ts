/**
 * Blob servers serve only authenticated, enrolled devices (issue 14, blob
 * protocol version 2): the control plane's server serves a request signed by
 * an enrolled device's key on this connection and refuses everything else
 * with FORBIDDEN; an agent's server serves a follower that presents a ticket
 * of its pinned control plane for that blob and that node, unexpired, and a
 * request signed by the key in the ticket. Refused requests serve nothing.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Agent } from "../agent/agent.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { blake3 } from "../kernel/blake3.ts";
import { generateKey, type SigningKey } from "../release/keys.ts";
import { signTicket, TICKET_TTL_MS } from "../transfer/blob_auth.ts";
import { fetchSmallBlob } from "../transfer/blob_client.ts";
import {
  BlobStatus,
  decodeHello,
  decodeResponseHeader,
  encodeRequest,
  HELLO_SIZE,
  RESPONSE_HEADER_SIZE,
  signRequest,
} from "../transfer/blob_protocol.ts";
import type { BlobServer } from "../transfer/blob_server.ts";
import {
  encodeControlMessage,
  MAX_DATAGRAM,
  openControlMessage,
} from "../transfer/control_messages.ts";
import { enrollDevice, fakeControlPlane, pinControlPlane } from "./support/identity.ts";

const HOST = "127.0.0.1";
const BLOB = new TextEncoder().encode("model bytes that only enrolled devices may download\n");
const DIGEST = blake3(BLOB);

async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  for (let filled = 0; filled < length;) {
    const n = await conn.read(out.subarray(filled));
    if (n === null) throw new Error(`closed after ${filled} of ${length} bytes`);
    filled += n;
  }
  return out;
}

/** One connection: reads the hello, sends what `request(nonce)` makes, returns the status and the nonce. */
async function exchange(
  server: BlobServer,
  request: (nonce: Uint8Array) => Promise<Uint8Array> | Uint8Array,
): Promise<{ status: number; nonce: Uint8Array; sent: Uint8Array }> {
  const conn = await Deno.connect({ hostname: server.hostname, port: server.port });
  try {
    const nonce = decodeHello(await readExactly(conn, HELLO_SIZE));
    const sent = await request(nonce);
    for (let done = 0; done < sent.length;) done += await conn.write(sent.subarray(done));
    const header = decodeResponseHeader(await readExactly(conn, RESPONSE_HEADER_SIZE));
    // Read to the end: the server closes only after it has counted what it served.
    await readExactly(conn, header.length);
    assert.equal(await conn.read(new Uint8Array(1)), null);
    return { status: header.status, nonce, sent };
  } finally {
    conn.close();
  }
}

/** Signed by `key` as `nodeId` for the connection's nonce. */
function signedBy(key: SigningKey, nodeId: string, ticket: Uint8Array | null = null) {
  return (nonce: Uint8Array) =>
    signRequest({ digest: DIGEST, offset: 0 }, nodeId, ticket, nonce, key.privateKey);
}

async function withControlPlane(
  fn: (cp: ControlPlane) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-blobauth-" });
  const cp = await ControlPlane.start({ bind: HOST, dataDir: dir, udpPort: 0, p2pPort: 0 });
  try {
    await Deno.writeFile(`${dir}/blob.tmp`, BLOB);
    await cp.store.importFile(`${dir}/blob.tmp`);
    await fn(cp);
  } finally {
    await cp.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the control plane's blob server serves an enrolled device whose request is signed by its enrolled key", async () => {
  await withControlPlane(async (cp) => {
    const key = await enrollDevice(cp, "jetson-1");
    const answer = await exchange(cp.blobServer, signedBy(key, "jetson-1"));
    assert.equal(answer.status, BlobStatus.OK);
    const bytes = await fetchSmallBlob({
      source: { hostname: HOST, port: cp.blobServer.port, label: "control-plane" },
      digest: DIGEST,
      maxBytes: 4096,
      deadlineMs: 10_000,
      credentials: { nodeId: "jetson-1", privateKey: key.privateKey },
    });
    assert.deepEqual(bytes, BLOB);
    assert.equal(cp.blobServer.forbidden, 0);
  });
});

Deno.test("the control plane's blob server answers FORBIDDEN and serves nothing to a request without a signature, of an unknown node, signed by another key, or replayed on a new connection", async () => {
  await withControlPlane(async (cp) => {
    const key = await enrollDevice(cp, "jetson-1");
    const { key: stranger } = await generateKey("device");

    // A version-1 request: no node id, no signature.
    const unsigned = await exchange(
      cp.blobServer,
      () => encodeRequest({ digest: DIGEST, offset: 0 }),
    );
    assert.equal(unsigned.status, BlobStatus.FORBIDDEN);
    // A node the control plane has not enrolled, signing with its own key.
    const unknown = await exchange(cp.blobServer, signedBy(stranger, "jetson-99"));
    assert.equal(unknown.status, BlobStatus.FORBIDDEN);
    // An enrolled node's id, signed by another key.
    const forged = await exchange(cp.blobServer, signedBy(stranger, "jetson-1"));
    assert.equal(forged.status, BlobStatus.FORBIDDEN);
    // Genuine request bytes captured on one connection, replayed on another.
    const genuine = await exchange(cp.blobServer, signedBy(key, "jetson-1"));
    assert.equal(genuine.status, BlobStatus.OK);
    const servedBefore = cp.blobServer.bytesServed;
    const replayed = await exchange(cp.blobServer, () => genuine.sent);
    assert.equal(replayed.status, BlobStatus.FORBIDDEN);
    assert.equal(cp.blobServer.bytesServed, servedBefore);
    assert.equal(cp.blobServer.forbidden, 4);

    // fetchSmallBlob (documents) without credentials, or as an unknown node, gets nothing.
    for (
      const credentials of [undefined, { nodeId: "jetson-99", privateKey: stranger.privateKey }]
    ) {
      await assert.rejects(
        fetchSmallBlob({
          source: { hostname: HOST, port: cp.blobServer.port, label: "control-plane" },
          digest: DIGEST,
          maxBytes: 4096,
          deadlineMs: 10_000,
          credentials,
        }),
      );
    }
    assert.equal(cp.blobServer.bytesServed, servedBefore);
  });
});

/** An agent pinned to a stand-in control plane's key, holding BLOB. */
async function withLeader(
  fn: (leader: Agent, cpKey: SigningKey) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-blobauth-leader-" });
  const cp = await fakeControlPlane(HOST);
  await pinControlPlane(dir, "leader-1", cp.key);
  const leader = await Agent.start({
    nodeId: "leader-1",
    region: "eu",
    bind: HOST,
    dataDir: dir,
    controlPlane: { hostname: HOST, port: cp.socket.port },
    udpPort: 0,
    p2pPort: 0,
    heartbeatMs: 60_000,
    trust: { kind: "insecure" },
  });
  try {
    await Deno.writeFile(`${dir}/blob.tmp`, BLOB);
    await leader.store.importFile(`${dir}/blob.tmp`);
    await fn(leader, cp.key);
  } finally {
    await leader.close();
    cp.socket.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function ticketFor(
  cpKey: SigningKey,
  nodeId: string,
  device: SigningKey,
  fields: { digest?: Uint8Array; expires?: number } = {},
): Promise<Uint8Array> {
  return signTicket({
    manifestId: "r1.b1.e0123456789abcdef",
    digest: fields.digest ?? DIGEST,
    nodeId,
    publicKey: device.publicKey,
    expires: fields.expires ?? Date.now() + TICKET_TTL_MS,
  }, cpKey.privateKey);
}

Deno.test("a leader's blob server serves a follower whose ticket from the pinned control plane names the blob and the follower", async () => {
  await withLeader(async (leader, cpKey) => {
    const { key: follower } = await generateKey("device");
    const ticket = await ticketFor(cpKey, "jetson-2", follower);
    const answer = await exchange(leader.blobServer, signedBy(follower, "jetson-2", ticket));
    assert.equal(answer.status, BlobStatus.OK);
    assert.equal(leader.blobServer.forbidden, 0);
  });
});

Deno.test("a leader's blob server answers FORBIDDEN and serves nothing without a valid ticket: none, for another blob, for another node, expired, signed by another control plane, or a replayed request", async () => {
  await withLeader(async (leader, cpKey) => {
    const { key: follower } = await generateKey("device");
    const { key: other } = await generateKey("device");
    const { key: rogueCp } = await generateKey("controlplane");
    const refusals: [string, (nonce: Uint8Array) => Promise<Uint8Array> | Uint8Array][] = [
      ["version 1, unsigned", () => encodeRequest({ digest: DIGEST, offset: 0 })],
      ["signed, no ticket", signedBy(follower, "jetson-2")],
      [
        "a ticket for another blob",
        signedBy(
          follower,
          "jetson-2",
          await ticketFor(cpKey, "jetson-2", follower, { digest: blake3(new Uint8Array([1])) }),
        ),
      ],
      [
        "another node's ticket",
        signedBy(follower, "jetson-2", await ticketFor(cpKey, "jetson-3", follower)),
      ],
      [
        "an expired ticket",
        signedBy(
          follower,
          "jetson-2",
          await ticketFor(cpKey, "jetson-2", follower, { expires: Date.now() - 1 }),
        ),
      ],
      [
        "a ticket signed by another control plane",
        signedBy(follower, "jetson-2", await ticketFor(rogueCp, "jetson-2", follower)),
      ],
      [
        "a request signed by a key other than the ticket's",
        signedBy(other, "jetson-2", await ticketFor(cpKey, "jetson-2", follower)),
      ],
    ];
    for (const [what, request] of refusals) {
      const answer = await exchange(leader.blobServer, request);
      assert.equal(answer.status, BlobStatus.FORBIDDEN, what);
    }
    assert.equal(leader.blobServer.bytesServed, 0);
    assert.equal(leader.blobServer.forbidden, refusals.length);

    // A genuine request's bytes replayed on a new connection.
    const genuine = await exchange(
      leader.blobServer,
      signedBy(follower, "jetson-2", await ticketFor(cpKey, "jetson-2", follower)),
    );
    assert.equal(genuine.status, BlobStatus.OK);
    const servedBefore = leader.blobServer.bytesServed;
    const replayed = await exchange(leader.blobServer, () => genuine.sent);
    assert.equal(replayed.status, BlobStatus.FORBIDDEN);
    assert.equal(leader.blobServer.bytesServed, servedBefore);
  });
});

Deno.test("ElectionClosed with a ticket, a piece list and one source of the longest names stays within the 1200-byte datagram limit", async () => {
  const { key: cpKey } = await generateKey("controlplane");
  const { key: device } = await generateKey("device");
  const longest = "n".repeat(128);
  const ticket = await signTicket({
    manifestId: longest,
    digest: DIGEST,
    nodeId: longest,
    publicKey: device.publicKey,
    expires: Date.now() + TICKET_TTL_MS,
  }, cpKey.privateKey);
  const bytes = encodeControlMessage({
    type: "electionClosed",
    manifestId: longest,
    leaderNodeId: longest,
    sources: [{ nodeId: longest, host: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", p2pPort: 65535 }],
    pieceListDigest: DIGEST,
    ticket,
  }, Number.MAX_SAFE_INTEGER);
  assert.ok(bytes.length <= MAX_DATAGRAM, `${bytes.length} bytes`);
  const opened = openControlMessage(bytes).message;
  assert.equal(opened.type, "electionClosed");
  assert.deepEqual(opened.type === "electionClosed" ? opened.ticket : undefined, ticket);
});
