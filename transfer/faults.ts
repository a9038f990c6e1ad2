/**
 * Fault injection for tests of the transport: lost datagrams, dropped and
 * corrupted blob transfers. This is a test hook, not a user option: the shipped
 * CLI never sets it, and with the object empty (the default) nothing is
 * injected. Tests set it (or pass their own `TransportFaults` to a
 * `BlobServer`) to check that the protocols survive the faults DESIGN.md lists.
 *
 * @module
 */

/** Faults to inject; every field absent means no fault of that kind. */
export interface TransportFaults {
  /** Probability in [0, 1] that a UDP datagram is dropped (see `shouldDrop`). */
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

/** Seed of `shouldDrop`'s sequence unless `seedFaults` gives another. */
const DEFAULT_SEED = 0x2545f491;
/** xorshift32 state of `shouldDrop`. */
let state = DEFAULT_SEED;

/** The process-wide faults; empty (no faults) unless a test sets them. */
export const transportFaults: TransportFaults = {};

/** Sets some faults (the others keep their values). */
export function setTransportFaults(faults: TransportFaults): void {
  Object.assign(transportFaults, faults);
}

/** Removes every fault and reseeds `shouldDrop` with its default seed. */
export function resetTransportFaults(): void {
  for (const key of Object.keys(transportFaults) as (keyof TransportFaults)[]) {
    delete transportFaults[key];
  }
  seedFaults(DEFAULT_SEED);
}

/** Restarts `shouldDrop`'s pseudo-random sequence from `seed` (0 is replaced by a fixed seed). */
export function seedFaults(seed: number): void {
  state = seed >>> 0 || DEFAULT_SEED;
}

/**
 * Whether to drop the next datagram: true with probability `rate` (default
 * `transportFaults.udpDropRate`, absent = never). Deterministic: a xorshift32
 * sequence, the same in every run for the same seed and calls.
 */
export function shouldDrop(rate: number = transportFaults.udpDropRate ?? 0): boolean {
  if (!(rate > 0)) return false;
  if (rate >= 1) return true;
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state / 2 ** 32 < rate;
}
