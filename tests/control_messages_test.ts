/**
 * Control messages: every type round-trips, every datagram fits in 1200 bytes
 * or is refused at encode time, and anything malformed from the network is
 * rejected with `MalformedMessageError`, never a crash.
 */

import assert from "node:assert/strict";
import { encode } from "cbor-x";
import { generateKey } from "../release/keys.ts";
import {
  CONTROL_PLANE_RECEIVER,
  type ControlMessage,
  decodeControlMessage,
  encodeControlMessage,
  importVerifyKey,
  MalformedMessageError,
  MAX_DATAGRAM,
  openControlMessage,
  PROTOCOL,
  signatureInput,
  signControlMessage,
  verifyControlMessage,
} from "../transfer/control_messages.ts";

const D1 = new Uint8Array(32).fill(1);
const D2 = new Uint8Array(32).fill(2);
const ID = "m-0123456789abcdef";

const EXAMPLES: ControlMessage[] = [
  {
    type: "announce",
    manifestId: ID,
    model: "resnet",
    version: "v2",
    targetDigest: D1,
    targetSize: 5 * 2 ** 30, // past 32 bits
    baseDigest: D2,
    blobDigest: D1,
    blobSize: 123,
    cpHost: "100.64.0.1",
    cpP2pPort: 7402,
    releaseDigest: D2,
    delegationDigest: D1,
  },
  {
    type: "announce",
    manifestId: ID,
    model: "resnet",
    version: "v2",
    targetDigest: D1,
    targetSize: 0,
    baseDigest: null,
    blobDigest: D1,
    blobSize: 0,
    cpHost: "127.0.0.1",
    cpP2pPort: 1,
    releaseDigest: null,
    delegationDigest: null,
  },
  { type: "bid", manifestId: ID, nodeId: "jetson-17" },
  { type: "leaderAck", manifestId: ID },
  { type: "leaderReady", manifestId: ID, nodeId: "jetson-17", p2pPort: 65535 },
  {
    type: "electionClosed",
    manifestId: ID,
    leaderNodeId: "jetson-17",
    sources: [
      { nodeId: "jetson-17", host: "100.64.3.4", p2pPort: 7402 },
      { nodeId: "jetson-19", host: "100.64.3.6", p2pPort: 7411 },
    ],
    pieceListDigest: D2,
  },
  { type: "closedAck", manifestId: ID, nodeId: "jetson-18" },
  {
    type: "heartbeat",
    nodeId: "jetson-18",
    region: "eu-west",
    host: "100.64.3.5",
    udpPort: 7401,
    p2pPort: 7402,
    held: [D1, D2],
    active: [["resnet", D1]],
    served: 5_000_000_000,
    startedAt: 1_795_000_000_000,
  },
  { type: "status", manifestId: ID, nodeId: "jetson-18", state: "failed", detail: "disk full" },
];

Deno.test("every message type round-trips and fits in a datagram", () => {
  for (const message of EXAMPLES) {
    const bytes = encodeControlMessage(message);
    assert.ok(bytes.length <= MAX_DATAGRAM, `${message.type}: ${bytes.length} bytes`);
    const back = decodeControlMessage(bytes);
    assert.deepEqual(normalize(back), normalize(message), message.type);
  }
});

Deno.test("a heartbeat that would exceed 1200 bytes is refused when encoding", () => {
  const held = Array.from({ length: 40 }, () => D1);
  assert.throws(
    () =>
      encodeControlMessage({
        type: "heartbeat",
        nodeId: "n",
        region: "r",
        host: "h",
        udpPort: 1,
        p2pPort: 2,
        held,
        active: [],
        served: 0,
        startedAt: 1,
      }),
    (err: unknown) => err instanceof RangeError && /1200-byte datagram limit/.test(err.message),
  );
});

Deno.test("a message that is invalid is refused when encoding too", () => {
  assert.throws(
    () => encodeControlMessage({ type: "leaderReady", manifestId: ID, nodeId: "n", p2pPort: 0 }),
    MalformedMessageError,
  );
  assert.throws(
    () => encodeControlMessage({ type: "bid", manifestId: "", nodeId: "n" }),
    MalformedMessageError,
  );
});

Deno.test("malformed datagrams are refused with MalformedMessageError", () => {
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["not CBOR", new Uint8Array([0xff, 0xff, 0xff])],
    ["a map, not an array", encode({ a: 1 })],
    ["wrong protocol", encode([PROTOCOL + 1, 2, ID, "n"])],
    ["unknown type", encode([PROTOCOL, 99, ID])],
    ["too few fields", encode([PROTOCOL, 2, ID])],
    ["too many fields", encode([PROTOCOL, 2, ID, "n", "extra"])],
    [
      "digest of 31 bytes",
      encode([PROTOCOL, 1, ID, "m", "v", new Uint8Array(31), 1, null, D1, 1, "h", 1]),
    ],
    ["negative size", encode([PROTOCOL, 1, ID, "m", "v", D1, -1, null, D1, 1, "h", 1])],
    ["fractional size", encode([PROTOCOL, 1, ID, "m", "v", D1, 1.5, null, D1, 1, "h", 1])],
    ["port 70000", encode([PROTOCOL, 4, ID, "n", 70000])],
    ["name too long", encode([PROTOCOL, 2, ID, "n".repeat(129)])],
    ["id of wrong type", encode([PROTOCOL, 3, 12345])],
    ["unknown status", encode([PROTOCOL, 8, ID, "n", "exploded", ""])],
    ["detail too long", encode([PROTOCOL, 8, ID, "n", "failed", "x".repeat(257)])],
    ["bad active entry", encode([PROTOCOL, 7, "n", "r", "h", 1, 2, [], [["m"]]])],
    ["oversized datagram", new Uint8Array(MAX_DATAGRAM + 1)],
  ];
  for (const [name, bytes] of cases) {
    assert.throws(() => decodeControlMessage(bytes), MalformedMessageError, name);
  }
});

Deno.test("an ElectionClosed with no source, more than four, or a malformed source is refused", () => {
  const sig = new Uint8Array(64);
  const source = ["b", "100.64.0.2", 7411];
  const closed = (sources: unknown) => encode([PROTOCOL, 5, ID, "a", sources, null, null, 1, sig]);
  assert.equal(decodeControlMessage(closed([source])).type, "electionClosed", "the shape is right");
  const cases: [string, Uint8Array][] = [
    ["no source", closed([])],
    ["five sources", closed([source, source, source, source, source])],
    ["a source of two fields", closed([["b", "100.64.0.2"]])],
    ["a source of four fields", closed([[...source, 1]])],
    ["a source's host a name", closed([["b", "example.com", 7411]])],
    ["a source's node id a path", closed([["../x", "100.64.0.2", 7411]])],
    ["a source's port 0", closed([["b", "100.64.0.2", 0]])],
    ["sources not an array", closed("b")],
    [
      "a piece list digest of 31 bytes",
      encode([PROTOCOL, 5, ID, "a", [source], null, new Uint8Array(31), 1, sig]),
    ],
  ];
  for (const [name, bytes] of cases) {
    assert.throws(() => decodeControlMessage(bytes), MalformedMessageError, name);
  }
});

Deno.test("CBOR this format never uses is refused before cbor-x sees it", () => {
  const cases: [string, RegExp][] = [
    ["9f", /indefinite/], // unterminated indefinite array: cbor-x alone spins for seconds
    ["9f8080ff", /indefinite/],
    ["5f4101ff", /indefinite/],
    ["83010120", /major type 1/], // negative integer
    ["830101a0", /major type 5/], // map
    ["8201c11a00000000", /tag/], // tag 1 (date)
    ["8201f5", /simple/], // true
    ["8201fa3f800000", /simple value or float/], // float32
    ["9a00ffffff01", /array longer/],
    ["83010258ff00", /string longer/],
    ["82010100", /trailing/],
    ["820118", /truncated/],
    ["81818181818101", /too deep/],
  ];
  for (const [hex, why] of cases) {
    const bytes = new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
    assert.throws(() => decodeControlMessage(bytes), (err: unknown) => {
      assert.ok(err instanceof MalformedMessageError, `${hex}: ${err}`);
      assert.match(err.message, why, hex);
      return true;
    });
  }
});

Deno.test("random bytes never crash the decoder: they decode or are refused", () => {
  let seed = 42;
  for (let i = 0; i < 2000; i++) {
    const bytes = new Uint8Array(1 + (i % 64));
    for (let j = 0; j < bytes.length; j++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      bytes[j] = seed >>> 24;
    }
    try {
      decodeControlMessage(bytes);
    } catch (err) {
      assert.ok(err instanceof MalformedMessageError, `input ${i}: ${err}`);
    }
  }
});

/** Byte strings compare by content whatever their Uint8Array subclass. */
function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return [...value];
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}

Deno.test("the test vectors of docs/spec/control-messages-v1.md are what the encoder writes and the decoder reads", () => {
  const fromHex = (hex: string) => new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
  const D = (n: number) => new Uint8Array(32).fill(n);
  const digest = (n: number) => `d8405820${n.toString(16).padStart(2, "0").repeat(32)}`;
  const announce: ControlMessage = {
    type: "announce",
    manifestId: "r1.b1.e1",
    model: "resnet",
    version: "v2",
    targetDigest: D(2),
    targetSize: 1000,
    baseDigest: null,
    blobDigest: D(2),
    blobSize: 1000,
    cpHost: "100.64.0.1",
    cpP2pPort: 7401,
    releaseDigest: D(3),
    delegationDigest: D(4),
  };
  // Every datagram ends with its sender's sequence number (1 here) and a 64-byte signature
  // (zeros here: encodeControlMessage's default, which no receiver accepts).
  const tail = "01" + "d8405840" + "00".repeat(64);
  const announceHead = "900401" + "6872312e62312e6531" + "667265736e6574" + "627632" +
    digest(2) + "1903e8" + "f6" + digest(2) + "1903e8" + "6a3130302e36342e302e31" + "191ce9";
  const vectors: [ControlMessage, string][] = [
    [
      { type: "bid", manifestId: "r1.b1795000000000.e1", nodeId: "jetson-17" },
      "860402" + "7472312e62313739353030303030303030302e6531" + "696a6574736f6e2d3137" + tail,
    ],
    [
      {
        type: "status",
        manifestId: "r1.b1.e1",
        nodeId: "n1",
        state: "failed",
        detail: "disk full",
      },
      "880408" + "6872312e62312e6531" + "626e31" + "666661696c6564" + "696469736b2066756c6c" +
      tail,
    ],
    [
      {
        type: "heartbeat",
        nodeId: "n1",
        region: "eu",
        host: "100.64.0.17",
        udpPort: 7410,
        p2pPort: 7411,
        held: [D(1)],
        active: [["resnet", D(1)]],
        served: 5_000_000_000,
        startedAt: 1_795_000_000_000,
      },
      "8d0407" + "626e31" + "626575" + "6b3130302e36342e302e3137" + "191cf2" + "191cf3" +
      "81" + digest(1) + "81" + "82" + "667265736e6574" + digest(1) +
      "fb41f2a05f20000000" + "fb427a1ee565e00000" + tail,
    ],
    [
      {
        type: "electionClosed",
        manifestId: "r1.b1.e1",
        leaderNodeId: "n1",
        sources: [{ nodeId: "n1", host: "100.64.0.17", p2pPort: 7411 }],
        pieceListDigest: D(5),
      },
      "890405" + "6872312e62312e6531" + "626e31" + "81" + "83" + "626e31" +
      "6b3130302e36342e302e3137" + "191cf3" + "f6" + digest(5) + tail,
    ],
    [announce, announceHead + digest(3) + digest(4) + tail],
    [{ ...announce, releaseDigest: null, delegationDigest: null }, announceHead + "f6f6" + tail],
  ];
  for (const [message, hex] of vectors) {
    const bytes = encodeControlMessage(message, 1);
    assert.equal([...bytes].map((b) => b.toString(16).padStart(2, "0")).join(""), hex);
    assert.deepEqual(decodeControlMessage(fromHex(hex)), message);
  }
  // Protocol 1 datagrams (the vectors before the release documents) are refused, and
  // protocol 2 ones (before datagrams were signed), and protocol 3 ones (before the swarm).
  assert.throws(
    () => decodeControlMessage(fromHex("860302" + vectors[0][1].slice(6))),
    MalformedMessageError,
  );
  assert.throws(
    () => decodeControlMessage(fromHex("840102" + vectors[0][1].slice(6, -tail.length))),
    MalformedMessageError,
  );
  assert.throws(
    () => decodeControlMessage(fromHex("840202" + vectors[0][1].slice(6, -tail.length))),
    MalformedMessageError,
  );
});

Deno.test("a signed datagram's signature covers every byte before the signature element: the sender's key verifies it, another key or one changed byte does not", async () => {
  const { key } = await generateKey("device");
  const { key: other } = await generateKey("device");
  const message: ControlMessage = { type: "bid", manifestId: ID, nodeId: "jetson-17" };
  const bytes = await signControlMessage(
    message,
    1_795_000_000_000_000,
    key.privateKey,
    CONTROL_PLANE_RECEIVER,
  );
  const opened = openControlMessage(bytes);
  assert.deepEqual(opened.message, message);
  assert.equal(opened.seq, 1_795_000_000_000_000);
  // The signature element is a tagged 64-byte string: 4 bytes of head, 64 of signature.
  assert.equal(opened.signed.length, bytes.length - 68);
  assert.ok(
    await verifyControlMessage(
      opened,
      await importVerifyKey(key.publicKey),
      CONTROL_PLANE_RECEIVER,
    ),
  );
  assert.ok(
    !(await verifyControlMessage(
      opened,
      await importVerifyKey(other.publicKey),
      CONTROL_PLANE_RECEIVER,
    )),
  );
  for (const at of [0, 5, opened.signed.length - 1, bytes.length - 1]) {
    const changed = bytes.slice();
    changed[at] ^= 1;
    let reopened;
    try {
      reopened = openControlMessage(changed);
    } catch {
      continue; // no longer a datagram at all
    }
    assert.ok(
      !(await verifyControlMessage(
        reopened,
        await importVerifyKey(key.publicKey),
        CONTROL_PLANE_RECEIVER,
      )),
      `byte ${at} changed`,
    );
  }
});

Deno.test("the signature input vectors of docs/spec/control-messages-v1.md: domain tag, receiver, datagram; signed for one receiver, it verifies at no other", async () => {
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const fromHex = (h: string) => new Uint8Array(h.match(/../g)!.map((x) => parseInt(x, 16)));
  const b64url = (b: Uint8Array) =>
    btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  // RFC 8032, section 7.1, TEST 1.
  const seed = fromHex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  const pub = fromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const privateKey = await crypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "Ed25519", d: b64url(seed), x: b64url(pub) },
    { name: "Ed25519" },
    false,
    ["sign"],
  );
  const publicKey = await importVerifyKey(pub);
  const cases: [ControlMessage, string, string, string][] = [
    [
      { type: "bid", manifestId: "r1.b1795000000000.e1", nodeId: "jetson-17" },
      CONTROL_PLANE_RECEIVER,
      "706f6f6c626f792d636f6e74726f6c2d7633" + "6c636f6e74726f6c706c616e65" +
      "8604027472312e62313739353030303030303030302e6531696a6574736f6e2d313701",
      "db1c49010840c3cb90c599a2d537b227ba1f78a0425a1c1a3f9213c75425b09d" +
      "a7af68bcaedfe3c5351d3b13a02b8f23b595eb723ff0e8c03c8e2d0441549c04",
    ],
    [
      { type: "leaderAck", manifestId: "r1.b1.e1" },
      "jetson-17",
      "706f6f6c626f792d636f6e74726f6c2d7633" + "696a6574736f6e2d3137" +
      "8504036872312e62312e653101",
      "3b0135e3043a51db5c6ead7922cc6d6a840d5ccb2e1463136e3cfbce145177a7" +
      "5885ad66e5e2ac09038f1bf0f4f397f403752312ef57376049a9a7d3c269cf07",
    ],
  ];
  for (const [message, receiver, input, signature] of cases) {
    const opened = openControlMessage(encodeControlMessage(message, 1));
    assert.equal(hex(signatureInput(receiver, opened.signed)), input);
    const bytes = await signControlMessage(message, 1, privateKey, receiver);
    assert.equal(hex(bytes.subarray(bytes.length - 64)), signature);
    const signed = openControlMessage(bytes);
    assert.ok(await verifyControlMessage(signed, publicKey, receiver));
    // The receiver is not sent: the datagram is the same length as unsigned.
    assert.equal(bytes.length, encodeControlMessage(message, 1).length);
    for (const other of ["jetson-18", "jetson-1", CONTROL_PLANE_RECEIVER, "jetson-17", ""]) {
      if (other === receiver) continue;
      assert.ok(!(await verifyControlMessage(signed, publicKey, other)), `verified at ${other}`);
    }
  }
});
