/**
 * Control messages: the UDP datagrams between the control plane and agents.
 *
 * Wire format: one CBOR array per datagram (cbor-x),
 * `[PROTOCOL, type, ...fields, senderSeq, signature]`, at most `MAX_DATAGRAM`
 * (1200) bytes — under Tailscale's 1280-byte MTU. `PROTOCOL` is 4 (2 added
 * the release documents' digests to Announce and the name rule; 4 gave
 * ElectionClosed its swarm sources and piece list; 3 made every
 * datagram authenticated: `senderSeq`, an unsigned integer that strictly grows
 * per sender, `Date.now() * 1000 + n`, and `signature`, 64 bytes of Ed25519
 * by the sender over every byte of the datagram before the signature element
 * — the decoder knows where that element begins). Fields are positional, per
 * type: Announce, Bid, LeaderAck, LeaderReady, ElectionClosed, ClosedAck,
 * Heartbeat, Status (codes 1-8). Digests are 32-byte byte strings, sizes and
 * ports unsigned integers, ids, names and hosts text of at most 128
 * characters. Specification: docs/spec/control-messages-v1.md (each message's
 * fields, the CBOR subset, what a receiver drops, test vectors).
 *
 * `decodeControlMessage` validates everything and throws
 * `MalformedMessageError` on anything else: a datagram from the network is
 * never trusted. Before cbor-x sees a datagram, `checkShape` walks its CBOR
 * structure and admits only what this format uses — unsigned integers,
 * float64 (cbor-x's encoding of integers above 2^32), byte strings (optionally
 * tag 64), text, definite-length arrays nested at most 4 deep, null — and
 * requires it to end exactly at the datagram's end. (cbor-x spends ~12 s of
 * CPU on the one-byte datagram `9f`, an unterminated indefinite array: the
 * guard is not optional.)
 *
 * @module
 */

import { decode, encode } from "cbor-x/encode";
import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { ProtocolError } from "../kernel/errors.ts";
import { isName, NAME_RULE } from "../kernel/names.ts";

/** Version of this message format (first element of every datagram). */
export const PROTOCOL = 4;
/** Bytes of an Ed25519 signature, the last element of every datagram. */
export const SIGNATURE_LENGTH = 64;
/** Largest datagram sent or accepted. */
export const MAX_DATAGRAM = 1200;
/** Longest id, model name, version or host, in characters. */
export const MAX_NAME = 128;
/** IP address literals in hosts: v4 dotted quads or v6 (hex digits and colons). */
const HOST_PATTERN = /^(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f:]{2,39})$/;
/** Most sources in one ElectionClosed. */
export const MAX_SOURCES = 4;
/**
 * Stripes of a swarm download: piece i is in stripe s = i mod 2. A member with two or more
 * sources asks `sources[s]` for it first, then `sources[2]`, `sources[3]`, … in order, never the
 * other stripe's first source; with one source, it asks that one for every piece.
 */
export const SWARM_STRIPES = 2;
/** Longest ticket in ElectionClosed, in bytes. */
export const MAX_TICKET_BYTES = 512;
/** Longest status detail, in characters. */
export const MAX_DETAIL = 256;

/** Agent states reported in `status` messages. */
export const STATUS_STATES = [
  "downloading",
  "downloaded",
  "applied",
  "active",
  "failed",
  "up-to-date",
] as const;
export type StatusState = (typeof STATUS_STATES)[number];

export interface Announce {
  readonly type: "announce";
  readonly manifestId: string;
  readonly model: string;
  readonly version: string;
  readonly targetDigest: Uint8Array;
  readonly targetSize: number;
  /** The base the blob is a patch against, or null if the blob is the whole target. */
  readonly baseDigest: Uint8Array | null;
  readonly blobDigest: Uint8Array;
  readonly blobSize: number;
  readonly cpHost: string;
  readonly cpP2pPort: number;
  /**
   * BLAKE3 of the signed release manifest (docs/spec/release-v1.md), a blob
   * the control plane's blob server serves; null for an unsigned release.
   */
  readonly releaseDigest: Uint8Array | null;
  /** BLAKE3 of the delegation that names the manifest's key, also a blob; null with no release. */
  readonly delegationDigest: Uint8Array | null;
}
export interface Bid {
  readonly type: "bid";
  readonly manifestId: string;
  readonly nodeId: string;
}
export interface LeaderAck {
  readonly type: "leaderAck";
  readonly manifestId: string;
}
export interface LeaderReady {
  readonly type: "leaderReady";
  readonly manifestId: string;
  readonly nodeId: string;
  readonly p2pPort: number;
}
/** A member of an election that may serve its blob: where its blob server listens. */
export interface SwarmSource {
  readonly nodeId: string;
  readonly host: string;
  readonly p2pPort: number;
}

export interface ElectionClosed {
  readonly type: "electionClosed";
  readonly manifestId: string;
  /** The election's leader (it holds the whole verified blob). */
  readonly leaderNodeId: string;
  /**
   * Where this member downloads the blob's pieces from: 1 to `MAX_SOURCES`
   * members of the election (the leader or other members, each of which
   * serves the pieces it has verified). Piece i is asked of
   * `sources[i mod SWARM_STRIPES]` first, then of the sources after the first
   * `SWARM_STRIPES` (see `SWARM_STRIPES`).
   */
  readonly sources: readonly SwarmSource[];
  /**
   * BLAKE3 of the blob's piece list (transfer/piece_list.ts), a blob the
   * control plane serves; null when the blob is fetched whole.
   */
  readonly pieceListDigest: Uint8Array | null;
  /**
   * The control plane's ticket for this follower (transfer/blob_auth.ts):
   * what the leader's blob server admits it with. Absent (null on the wire)
   * when there is none.
   */
  readonly ticket?: Uint8Array;
}
export interface ClosedAck {
  readonly type: "closedAck";
  readonly manifestId: string;
  readonly nodeId: string;
}
export interface Heartbeat {
  readonly type: "heartbeat";
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  readonly udpPort: number;
  readonly p2pPort: number;
  /** Digests of the blobs this agent holds and serves. */
  readonly held: readonly Uint8Array[];
  /** The active model version per model: [model, digest]. */
  readonly active: readonly (readonly [string, Uint8Array])[];
  /** Bytes its blob server has sent since the agent started. */
  readonly served: number;
  /** When the agent started (ms since the epoch): a new value means it restarted. */
  readonly startedAt: number;
}
export interface Status {
  readonly type: "status";
  readonly manifestId: string;
  readonly nodeId: string;
  readonly state: StatusState;
  readonly detail: string;
}

/** Any control message. */
export type ControlMessage =
  | Announce
  | Bid
  | LeaderAck
  | LeaderReady
  | ElectionClosed
  | ClosedAck
  | Heartbeat
  | Status;

/** A datagram that is not a valid control message (a peer broke the protocol). */
export class MalformedMessageError extends ProtocolError {}

const TYPE_CODES = {
  announce: 1,
  bid: 2,
  leaderAck: 3,
  leaderReady: 4,
  electionClosed: 5,
  closedAck: 6,
  heartbeat: 7,
  status: 8,
} as const satisfies Record<ControlMessage["type"], number>;

/** A datagram decoded, with what authenticates it. */
export interface OpenedMessage {
  readonly message: ControlMessage;
  /** The sender's sequence number (strictly grows per sender; its time part is `seq / 1000` ms). */
  readonly seq: number;
  readonly signature: Uint8Array;
  /** The bytes the signature covers: the datagram up to the signature element. */
  readonly signed: Uint8Array;
}

/**
 * Encodes a message with `seq` and `signature` (default: 64 zero bytes, which
 * no receiver accepts); throws `RangeError` if it would exceed `MAX_DATAGRAM`
 * bytes.
 */
export function encodeControlMessage(
  message: ControlMessage,
  seq = 0,
  signature: Uint8Array = new Uint8Array(SIGNATURE_LENGTH),
): Uint8Array {
  const fields = fieldsOf(message);
  const bytes = encode([
    PROTOCOL,
    TYPE_CODES[message.type],
    ...fields,
    seq,
    signature,
  ]) as Uint8Array;
  if (bytes.length > MAX_DATAGRAM) {
    throw new RangeError(
      `${message.type} message is ${bytes.length} bytes, over the ${MAX_DATAGRAM}-byte datagram limit`,
    );
  }
  // Validate what we send as strictly as what we receive.
  openControlMessage(bytes);
  return bytes;
}

/**
 * The identity an agent names as the receiver of what it sends to the
 * control plane (the control plane names each agent by its node id).
 */
export const CONTROL_PLANE_RECEIVER = "controlplane";

/** Domain tag that starts every signature input: ASCII "poolboy-control-v3". */
export const SIGNATURE_DOMAIN = new TextEncoder().encode("poolboy-control-v3");

/**
 * The bytes a signature is made over: `SIGNATURE_DOMAIN`, the receiver's
 * identity as a CBOR text string (an agent's node id, or
 * `CONTROL_PLANE_RECEIVER`), then the datagram up to its signature element.
 * The receiver is not sent: each receiver puts in its own identity, so a
 * datagram signed for one receiver does not verify at another.
 */
export function signatureInput(receiver: string, signed: Uint8Array): Uint8Array {
  const name = new TextEncoder().encode(receiver);
  const head = name.length < 24
    ? [0x60 + name.length]
    : name.length < 0x100
    ? [0x78, name.length]
    : [0x79, name.length >> 8, name.length & 0xff];
  if (name.length > 0xffff) throw new RangeError("receiver identity over 65535 bytes");
  const out = new Uint8Array(SIGNATURE_DOMAIN.length + head.length + name.length + signed.length);
  out.set(SIGNATURE_DOMAIN, 0);
  out.set(head, SIGNATURE_DOMAIN.length);
  out.set(name, SIGNATURE_DOMAIN.length + head.length);
  out.set(signed, SIGNATURE_DOMAIN.length + head.length + name.length);
  return out;
}

/**
 * Encodes `message` with `seq`, signed by `privateKey` (Ed25519, WebCrypto)
 * for `receiver` (see `signatureInput`).
 */
export async function signControlMessage(
  message: ControlMessage,
  seq: number,
  privateKey: CryptoKey,
  receiver: string,
): Promise<Uint8Array> {
  const bytes = encodeControlMessage(message, seq);
  const { signed } = openControlMessage(bytes);
  const signature = new Uint8Array(
    await crypto.subtle.sign(
      { name: "Ed25519" },
      privateKey,
      new Uint8Array(signatureInput(receiver, signed)),
    ),
  );
  // The signature element's content is the datagram's last 64 bytes.
  bytes.set(signature, bytes.length - SIGNATURE_LENGTH);
  return bytes;
}

/**
 * Whether `opened`'s signature is `publicKey`'s (an imported Ed25519 verify
 * key) over the datagram as signed for `receiver`: the identity of whoever
 * verifies it.
 */
export async function verifyControlMessage(
  opened: OpenedMessage,
  publicKey: CryptoKey,
  receiver: string,
): Promise<boolean> {
  try {
    return await crypto.subtle.verify(
      { name: "Ed25519" },
      publicKey,
      new Uint8Array(opened.signature),
      new Uint8Array(signatureInput(receiver, opened.signed)),
    );
  } catch {
    return false;
  }
}

/** Imports 32 raw Ed25519 public-key bytes to verify datagrams with. */
export async function importVerifyKey(raw: Uint8Array): Promise<CryptoKey> {
  return await crypto.subtle.importKey("raw", new Uint8Array(raw), { name: "Ed25519" }, false, [
    "verify",
  ]);
}

function fieldsOf(m: ControlMessage): unknown[] {
  switch (m.type) {
    case "announce":
      return [
        m.manifestId,
        m.model,
        m.version,
        m.targetDigest,
        m.targetSize,
        m.baseDigest,
        m.blobDigest,
        m.blobSize,
        m.cpHost,
        m.cpP2pPort,
        m.releaseDigest,
        m.delegationDigest,
      ];
    case "bid":
      return [m.manifestId, m.nodeId];
    case "leaderAck":
      return [m.manifestId];
    case "leaderReady":
      return [m.manifestId, m.nodeId, m.p2pPort];
    case "electionClosed":
      return [
        m.manifestId,
        m.leaderNodeId,
        m.sources.map((source) => [source.nodeId, source.host, source.p2pPort]),
        m.ticket ?? null,
        m.pieceListDigest,
      ];
    case "closedAck":
      return [m.manifestId, m.nodeId];
    case "heartbeat":
      return [
        m.nodeId,
        m.region,
        m.host,
        m.udpPort,
        m.p2pPort,
        [...m.held],
        m.active.map((a) => [a[0], a[1]]),
        m.served,
        m.startedAt,
      ];
    case "status":
      return [m.manifestId, m.nodeId, m.state, m.detail];
  }
}

/** Decodes and validates a datagram (its signature is not checked: see `openControlMessage`). */
export function decodeControlMessage(bytes: Uint8Array): ControlMessage {
  return openControlMessage(bytes).message;
}

/** Decodes and validates a datagram, with its sequence number, signature and signed bytes. */
export function openControlMessage(bytes: Uint8Array): OpenedMessage {
  if (bytes.length > MAX_DATAGRAM) {
    throw new MalformedMessageError(`datagram of ${bytes.length} bytes exceeds ${MAX_DATAGRAM}`);
  }
  const starts = checkShape(bytes);
  let value: unknown;
  try {
    value = decode(bytes);
  } catch (err) {
    throw new MalformedMessageError(`not CBOR: ${err instanceof Error ? err.message : err}`);
  }
  if (!Array.isArray(value) || value.length < 2) {
    throw new MalformedMessageError("not a control message array");
  }
  const [protocol, code, ...f] = value;
  if (protocol !== PROTOCOL) throw new MalformedMessageError(`unknown protocol ${protocol}`);
  if (f.length < 2) throw new MalformedMessageError("too few fields");
  const signature = f.pop();
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_LENGTH) {
    throw new MalformedMessageError(`expected a ${SIGNATURE_LENGTH}-byte signature last`);
  }
  const seq = f.pop();
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
    throw new MalformedMessageError("expected an unsigned sequence number before the signature");
  }
  const r = new FieldReader(f);
  let message: ControlMessage;
  switch (code) {
    case 1:
      message = {
        type: "announce",
        manifestId: r.name(),
        model: r.name(),
        version: r.name(),
        targetDigest: r.digest(),
        targetSize: r.uint(),
        baseDigest: r.optionalDigest(),
        blobDigest: r.digest(),
        blobSize: r.uint(),
        cpHost: r.host(),
        cpP2pPort: r.port(),
        releaseDigest: r.optionalDigest(),
        delegationDigest: r.optionalDigest(),
      };
      break;
    case 2:
      message = { type: "bid", manifestId: r.name(), nodeId: r.name() };
      break;
    case 3:
      message = { type: "leaderAck", manifestId: r.name() };
      break;
    case 4:
      message = { type: "leaderReady", manifestId: r.name(), nodeId: r.name(), p2pPort: r.port() };
      break;
    case 5: {
      const manifestId = r.name();
      const leaderNodeId = r.name();
      const sources = r.array((x): SwarmSource => {
        if (!Array.isArray(x) || x.length !== 3) {
          throw new MalformedMessageError("source entry is not [nodeId, host, p2pPort]");
        }
        const entry = new FieldReader(x);
        const source = { nodeId: entry.name(), host: entry.host(), p2pPort: entry.port() };
        entry.end();
        return source;
      });
      if (sources.length < 1 || sources.length > MAX_SOURCES) {
        throw new MalformedMessageError(`expected 1 to ${MAX_SOURCES} sources`);
      }
      const ticket = r.optionalBytes(MAX_TICKET_BYTES);
      const pieceListDigest = r.optionalDigest();
      const closed = {
        type: "electionClosed" as const,
        manifestId,
        leaderNodeId,
        sources,
        pieceListDigest,
      };
      message = ticket === null ? closed : { ...closed, ticket };
      break;
    }
    case 6:
      message = { type: "closedAck", manifestId: r.name(), nodeId: r.name() };
      break;
    case 7:
      message = {
        type: "heartbeat",
        nodeId: r.name(),
        region: r.name(),
        host: r.host(),
        udpPort: r.port(),
        p2pPort: r.port(),
        held: r.array((x) => FieldReader.digestOf(x)),
        active: r.array((x) => {
          if (!Array.isArray(x) || x.length !== 2) {
            throw new MalformedMessageError("active entry is not [model, digest]");
          }
          return [FieldReader.nameOf(x[0]), FieldReader.digestOf(x[1])] as const;
        }),
        served: r.uint(),
        startedAt: r.uint(),
      };
      break;
    case 8: {
      const manifestId = r.name();
      const nodeId = r.name();
      const state = r.name();
      if (!(STATUS_STATES as readonly string[]).includes(state)) {
        throw new MalformedMessageError(`unknown status state "${state}"`);
      }
      const detail = r.text(MAX_DETAIL);
      message = { type: "status", manifestId, nodeId, state: state as StatusState, detail };
      break;
    }
    default:
      throw new MalformedMessageError(`unknown message type ${code}`);
  }
  r.end();
  const signed = bytes.subarray(0, starts[starts.length - 1]);
  return { message, seq, signature, signed };
}

/** Most array nesting a control message uses (heartbeat → active → entry), plus one. */
const MAX_DEPTH = 4;

/**
 * Throws unless `bytes` is exactly one CBOR item made of the kinds this format
 * uses (see the module doc); returns where each element of the top-level
 * array begins. Linear in the datagram's length.
 */
function checkShape(bytes: Uint8Array): number[] {
  let at = 0;
  const starts: number[] = [];
  const fail = (why: string): never => {
    throw new MalformedMessageError(`not a control message: ${why} at byte ${at}`);
  };
  const argument = (info: number): number => {
    if (info < 24) return info;
    const width = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
    if (width === 0) fail("indefinite or reserved length");
    if (at + width > bytes.length) fail("truncated length");
    let value = 0;
    for (let i = 0; i < width; i++) value = value * 256 + bytes[at++];
    return value;
  };
  const item = (depth: number): void => {
    if (at >= bytes.length) fail("truncated item");
    const initial = bytes[at++];
    const major = initial >> 5;
    const info = initial & 31;
    switch (major) {
      case 0:
        argument(info);
        return;
      case 2:
      case 3: {
        const length = argument(info);
        if (length > bytes.length - at) fail("string longer than the datagram");
        at += length;
        return;
      }
      case 4: {
        if (depth >= MAX_DEPTH) fail("arrays nested too deep");
        const count = argument(info);
        if (count > bytes.length - at) fail("array longer than the datagram");
        for (let i = 0; i < count; i++) {
          if (depth === 0) starts.push(at);
          item(depth + 1);
        }
        return;
      }
      case 6: // tag 64 (uint8 typed array) around a byte string, as cbor-x writes Uint8Array
        if (argument(info) !== 64 || at >= bytes.length || bytes[at] >> 5 !== 2) {
          fail("unexpected tag");
        }
        item(depth);
        return;
      case 7:
        if (initial === 0xf6) return; // null
        if (initial === 0xfb && at + 8 <= bytes.length) {
          at += 8;
          return;
        }
        return fail("unexpected simple value or float");
      default:
        fail(`unexpected CBOR major type ${major}`);
    }
  };
  item(0);
  if (at !== bytes.length) fail("trailing bytes");
  if (starts.length === 0) fail("not an array");
  return starts;
}

class FieldReader {
  #fields: unknown[];
  #at = 0;

  constructor(fields: unknown[]) {
    this.#fields = fields;
  }

  #next(): unknown {
    if (this.#at >= this.#fields.length) throw new MalformedMessageError("too few fields");
    return this.#fields[this.#at++];
  }

  end(): void {
    if (this.#at !== this.#fields.length) throw new MalformedMessageError("too many fields");
  }

  /** A name that may reach a file system: the kernel's name rule (kernel/names.ts). */
  static nameOf(x: unknown): string {
    if (!isName(x)) throw new MalformedMessageError(`expected a name of ${NAME_RULE}`);
    return x;
  }

  /** An IP address literal (v4 dotted quad or v6), never a name. */
  host(): string {
    const x = this.#next();
    if (typeof x !== "string" || !HOST_PATTERN.test(x)) {
      throw new MalformedMessageError("expected an IP address");
    }
    return x;
  }

  static digestOf(x: unknown): Uint8Array {
    if (!(x instanceof Uint8Array) || x.length !== DIGEST_LENGTH) {
      throw new MalformedMessageError(`expected a ${DIGEST_LENGTH}-byte digest`);
    }
    return x;
  }

  name(): string {
    return FieldReader.nameOf(this.#next());
  }

  text(max: number): string {
    const x = this.#next();
    if (typeof x !== "string" || x.length > max) {
      throw new MalformedMessageError(`expected text of at most ${max} characters`);
    }
    return x;
  }

  digest(): Uint8Array {
    return FieldReader.digestOf(this.#next());
  }

  optionalBytes(max: number): Uint8Array | null {
    const x = this.#next();
    if (x === null) return null;
    if (!(x instanceof Uint8Array) || x.length > max) {
      throw new MalformedMessageError(`expected a byte string of at most ${max} bytes, or null`);
    }
    return x;
  }

  optionalDigest(): Uint8Array | null {
    const x = this.#next();
    return x === null ? null : FieldReader.digestOf(x);
  }

  uint(): number {
    const x = this.#next();
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) {
      throw new MalformedMessageError("expected an unsigned integer");
    }
    return x;
  }

  port(): number {
    const x = this.uint();
    if (x < 1 || x > 65535) throw new MalformedMessageError(`port ${x} out of range`);
    return x;
  }

  array<T>(item: (x: unknown) => T): T[] {
    const x = this.#next();
    if (!Array.isArray(x)) throw new MalformedMessageError("expected an array");
    return x.map(item);
  }
}
