/**
 * The UDP endpoint of the control protocol: sends and receives control
 * messages (transfer/control_messages.ts) as single datagrams.
 *
 * A datagram that does not decode is dropped and counted, never thrown: the
 * network is not trusted. Every datagram sent is signed (control messages
 * protocol 3) with the key `signer` gives for it, with a sequence number that
 * strictly grows (`Date.now() * 1000` or one more than the last, whichever is
 * larger), one datagram at a time, each signed when its turn comes, so that
 * they leave in that order. At most `MAX_SEND_QUEUE` datagrams wait to be signed and
 * sent: past it a send is dropped and counted (`sendQueueFull`), as the
 * network would drop it, and never queued without bound (every sender of the
 * protocol retransmits); received
 * datagrams come with their sequence number and signature, which the owner
 * (control plane or agent) checks against the sender it expects. A test can pass a `FaultInjector`
 * (transfer/faults.ts) that drops a share of datagrams in both directions;
 * without one (the CLI never passes one) nothing is dropped.
 *
 * @module
 */

import {
  CONTROL_PLANE_RECEIVER,
  type ControlMessage,
  encodeControlMessage,
  MAX_DATAGRAM,
  openControlMessage,
  type OpenedMessage,
  SIGNATURE_LENGTH,
  signatureInput,
} from "./control_messages.ts";

/** Most datagrams waiting to be signed and sent; past it a send is dropped and counted. */
export const MAX_SEND_QUEUE = 512;
import type { FaultInjector } from "./faults.ts";

/** Where a datagram came from or goes to. */
export interface UdpAddress {
  readonly hostname: string;
  readonly port: number;
}

/** A received, decoded message and its sender (its signature not yet checked). */
export interface Received {
  readonly message: ControlMessage;
  readonly from: UdpAddress;
  /** The message with its sequence number, signature and the bytes it signs. */
  readonly opened: OpenedMessage;
}

/**
 * The private key to sign an outgoing message with (an agent: its device key;
 * the control plane: its own), or undefined to send it unsigned (64 zero
 * bytes: every receiver drops it; tests of unauthenticated senders).
 */
export type Signer = (message: ControlMessage) => CryptoKey | undefined;

/** Counters of a socket, for status reports and tests. */
export interface SocketCounters {
  sent: number;
  received: number;
  /** Datagrams that did not decode as control messages. */
  malformed: number;
  /** Datagrams dropped by injected faults (tests only; both directions). */
  faultDropped: number;
  /** Sends that failed (e.g. unreachable host). */
  sendErrors: number;
  /** Sends dropped because `MAX_SEND_QUEUE` datagrams were already waiting. */
  sendQueueFull: number;
}

/** Options of `ControlSocket.open`. */
export interface ControlSocketOptions {
  /** Faults to inject (tests only): `udpDropRate` drops datagrams sent and received. */
  readonly faults?: FaultInjector;
  /** Signs what is sent (default: nothing is signed). */
  readonly signer?: Signer;
}

/** A bound UDP socket speaking control messages. */
export class ControlSocket {
  readonly #conn: Deno.DatagramConn;
  readonly #faults: FaultInjector | undefined;
  readonly hostname: string;
  readonly port: number;
  readonly counters: SocketCounters = {
    sent: 0,
    received: 0,
    malformed: 0,
    faultDropped: 0,
    sendErrors: 0,
    sendQueueFull: 0,
  };
  /** Datagrams waiting to be signed and sent. */
  #queued = 0;
  #closed = false;
  #signer: Signer | undefined;
  #lastSeq = 0;
  /** The last send: sends go one at a time, in sequence order. */
  #sending: Promise<void> = Promise.resolve();

  private constructor(
    conn: Deno.DatagramConn,
    faults: FaultInjector | undefined,
    signer: Signer | undefined,
  ) {
    this.#conn = conn;
    this.#faults = faults;
    this.#signer = signer;
    const addr = conn.addr as Deno.NetAddr;
    this.hostname = addr.hostname;
    this.port = addr.port;
  }

  /** Binds `hostname:port` (port 0: any free port). */
  static open(hostname: string, port: number, options: ControlSocketOptions = {}): ControlSocket {
    return new ControlSocket(
      Deno.listenDatagram({ transport: "udp", hostname, port }),
      options.faults,
      options.signer,
    );
  }

  /** Replaces the signer (an agent that enrols while it runs). */
  setSigner(signer: Signer | undefined): void {
    this.#signer = signer;
  }

  /** The next sequence number: above every earlier one, and about the time in microseconds. */
  nextSeq(): number {
    this.#lastSeq = Math.max(this.#lastSeq + 1, Date.now() * 1000);
    return this.#lastSeq;
  }

  /**
   * Whether the send queue is full (`MAX_SEND_QUEUE`); if so, a send is
   * counted as dropped (`sendQueueFull`): for a caller that would do costly
   * work (e.g. sign a ticket) for a datagram `send` would drop anyway.
   */
  dropIfFull(): boolean {
    if (this.#queued < MAX_SEND_QUEUE) return false;
    this.counters.sendQueueFull++;
    return true;
  }

  /**
   * Sends one message, signed; a send error is counted, not thrown (UDP is
   * best effort anyway), and so is a send past `MAX_SEND_QUEUE` waiting ones
   * (dropped before it is even encoded). The datagrams are signed and leave
   * one at a time, in sequence order. The signature is for `receiver` (an agent's node
   * id when the control plane sends; by default the control plane, where
   * agents send): no other receiver accepts it.
   */
  send(
    message: ControlMessage,
    to: UdpAddress,
    receiver: string = CONTROL_PLANE_RECEIVER,
  ): Promise<void> {
    if (this.dropIfFull()) return Promise.resolve();
    // Encoded now: an oversize message throws to the caller, as before.
    const key = this.#signer?.(message);
    const seq = this.nextSeq();
    const unsigned = encodeControlMessage(message, seq);
    this.#queued++;
    // Signed when its turn comes: each send yields to the event loop, so a long
    // queue does not hold up receiving (signing is synchronous work).
    const sent = this.#sending.then(async () => {
      try {
        const bytes = key === undefined ? unsigned : await signEncoded(unsigned, key, receiver);
        await this.#sendBytes(bytes, to);
      } finally {
        this.#queued--;
      }
    });
    this.#sending = sent.catch(() => {});
    return sent;
  }

  async #sendBytes(bytes: Uint8Array, to: UdpAddress): Promise<void> {
    if (this.#closed) return;
    if (this.#faults?.dropDatagram()) {
      this.counters.faultDropped++;
      return;
    }
    try {
      await this.#conn.send(bytes, { transport: "udp", hostname: to.hostname, port: to.port });
      this.counters.sent++;
    } catch {
      this.counters.sendErrors++;
    }
  }

  /** Received messages until the socket is closed; malformed datagrams are skipped and counted. */
  async *messages(): AsyncGenerator<Received> {
    while (!this.#closed) {
      let data: Uint8Array;
      let addr: Deno.Addr;
      try {
        [data, addr] = await this.#conn.receive(new Uint8Array(MAX_DATAGRAM + 1));
      } catch (err) {
        if (this.#closed) return;
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
          return;
        }
        // ICMP errors from an earlier send (e.g. connection refused) surface here: keep going.
        continue;
      }
      if (this.#faults?.dropDatagram()) {
        this.counters.faultDropped++;
        continue;
      }
      let opened: OpenedMessage;
      try {
        opened = openControlMessage(data);
      } catch {
        this.counters.malformed++;
        continue;
      }
      this.counters.received++;
      const from = addr as Deno.NetAddr;
      yield {
        message: opened.message,
        from: { hostname: from.hostname, port: from.port },
        opened,
      };
    }
  }

  /** Closes the socket; `messages()` ends. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Signs an encoded datagram (its 64 zero signature bytes) in place for `receiver`. */
async function signEncoded(
  bytes: Uint8Array,
  privateKey: CryptoKey,
  receiver: string,
): Promise<Uint8Array> {
  // The signed part: the datagram up to its signature element.
  const { signed } = openControlMessage(bytes);
  const signature = new Uint8Array(
    await crypto.subtle.sign(
      { name: "Ed25519" },
      privateKey,
      new Uint8Array(signatureInput(receiver, signed)),
    ),
  );
  bytes.set(signature, bytes.length - SIGNATURE_LENGTH);
  return bytes;
}
