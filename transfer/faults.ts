/**
 * Fault injection for tests of the transport: lost datagrams, dropped and
 * corrupted blob transfers. Nothing here is global: a test (or the test-only
 * entry point testkit/faulty_main.ts) builds a `FaultInjector` and hands it to
 * the sockets and servers it starts (`ControlSocket.open(…, { faults })`,
 * `BlobServer.start({ faults })`, `Agent.start({ faults })`,
 * `ControlPlane.start({ faults })`). Without one nothing is injected, and the
 * shipped CLI has no way to pass one.
 *
 * @module
 */

/** Faults to inject (plain options); every field absent means no fault of that kind. */
export interface TransportFaults {
  /** Probability in [0, 1] that a UDP datagram is dropped (see `FaultInjector.dropDatagram`). */
  udpDropRate?: number;
  /** A blob server closes the connection after sending this many body bytes of a response. */
  serveDropAfterBytes?: number;
  /** How many responses `serveDropAfterBytes` cuts short (default 1). */
  serveDropTimes?: number;
  /** A blob server flips one byte of the body it sends. */
  serveCorrupt?: boolean;
  /** How many responses `serveCorrupt` corrupts (default: every one). */
  serveCorruptTimes?: number;
  /** A blob server sends each response at most this fast (bytes per second). */
  serveBytesPerSecond?: number;
}

/** Seed of the drop sequence when none (or 0, which xorshift32 cannot use) is given. */
export const DEFAULT_FAULT_SEED = 0x2545f491;

/**
 * The faults of one process (or one test): the `TransportFaults` to apply, and
 * a deterministic pseudo-random sequence (xorshift32, its own state) that
 * decides which datagrams are lost: the same seed and calls drop the same
 * datagrams in every run.
 */
export class FaultInjector {
  /** The faults this injector applies (blob servers read the `serve…` ones). */
  readonly transport: Readonly<TransportFaults>;
  #state: number;

  constructor(transport: TransportFaults = {}, seed: number = DEFAULT_FAULT_SEED) {
    this.transport = { ...transport };
    this.#state = seed >>> 0 || DEFAULT_FAULT_SEED;
  }

  /** Whether to drop the next datagram: true with probability `udpDropRate` (absent: never). */
  dropDatagram(): boolean {
    const rate = this.transport.udpDropRate ?? 0;
    if (!(rate > 0)) return false;
    if (rate >= 1) return true;
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state / 2 ** 32 < rate;
  }
}
