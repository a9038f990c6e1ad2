/**
 * The UDP endpoint of the control protocol: sends and receives control
 * messages (transfer/control_messages.ts) as single datagrams.
 *
 * A datagram that does not decode is dropped and counted, never thrown: the
 * network is not trusted. A test can pass a `FaultInjector`
 * (transfer/faults.ts) that drops a share of datagrams in both directions;
 * without one (the CLI never passes one) nothing is dropped.
 *
 * @module
 */

import {
  type ControlMessage,
  decodeControlMessage,
  encodeControlMessage,
  MAX_DATAGRAM,
} from "./control_messages.ts";
import type { FaultInjector } from "./faults.ts";

/** Where a datagram came from or goes to. */
export interface UdpAddress {
  readonly hostname: string;
  readonly port: number;
}

/** A received, decoded message and its sender. */
export interface Received {
  readonly message: ControlMessage;
  readonly from: UdpAddress;
}

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
}

/** Options of `ControlSocket.open`. */
export interface ControlSocketOptions {
  /** Faults to inject (tests only): `udpDropRate` drops datagrams sent and received. */
  readonly faults?: FaultInjector;
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
  };
  #closed = false;

  private constructor(conn: Deno.DatagramConn, faults: FaultInjector | undefined) {
    this.#conn = conn;
    this.#faults = faults;
    const addr = conn.addr as Deno.NetAddr;
    this.hostname = addr.hostname;
    this.port = addr.port;
  }

  /** Binds `hostname:port` (port 0: any free port). */
  static open(hostname: string, port: number, options: ControlSocketOptions = {}): ControlSocket {
    return new ControlSocket(
      Deno.listenDatagram({ transport: "udp", hostname, port }),
      options.faults,
    );
  }

  /** Sends one message; a send error is counted, not thrown (UDP is best effort anyway). */
  async send(message: ControlMessage, to: UdpAddress): Promise<void> {
    if (this.#closed) return;
    const bytes = encodeControlMessage(message);
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
      let message: ControlMessage;
      try {
        message = decodeControlMessage(data);
      } catch {
        this.counters.malformed++;
        continue;
      }
      this.counters.received++;
      const from = addr as Deno.NetAddr;
      yield { message, from: { hostname: from.hostname, port: from.port } };
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
