/**
 * Idle timeouts for sockets: a watchdog that fires once nothing has happened
 * for a given time. The blob server and client `kick` it after every read or
 * write that made progress, and close the connection when it fires, which
 * ends the pending read or write. One timer per watchdog, re-armed lazily: a
 * transfer of many chunks does not create a timer per chunk.
 *
 * @module
 */

import { IoError } from "../kernel/errors.ts";

/** Thrown (by the code that owns a watchdog) when a peer stayed silent too long: an I/O failure. */
export class IdleTimeoutError extends IoError {}

/** Calls `onExpire` once, after `timeoutMs` without a `kick`. */
export class IdleWatchdog {
  readonly timeoutMs: number;
  readonly #onExpire: () => void;
  #last = performance.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expired = false;

  /** Starts watching now. */
  constructor(timeoutMs: number, onExpire: () => void) {
    this.timeoutMs = timeoutMs;
    this.#onExpire = onExpire;
    this.#arm(timeoutMs);
  }

  /** Whether the watchdog fired (or `expire` was called). */
  get expired(): boolean {
    return this.#expired;
  }

  /** Notes activity: the idle time starts again from now. */
  kick(): void {
    this.#last = performance.now();
  }

  /** Fires now (e.g. on abort), unless it already fired or was stopped. */
  expire(): void {
    if (this.#expired || this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#expired = true;
    this.#onExpire();
  }

  /** Stops watching; `onExpire` will not be called any more. */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(delayMs: number): void {
    this.#timer = setTimeout(() => this.#check(), delayMs);
  }

  #check(): void {
    this.#timer = undefined;
    const idle = performance.now() - this.#last;
    if (idle >= this.timeoutMs) {
      this.#expired = true;
      this.#onExpire();
    } else {
      this.#arm(Math.max(1, Math.ceil(this.timeoutMs - idle)));
    }
  }
}

/** Closes a resource, ignoring "already closed". */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

/** A minimum transfer rate: at least `bytesPerSecond` over every `windowMs`. `bytesPerSecond` 0 turns it off. */
export interface MinRate {
  readonly bytesPerSecond: number;
  readonly windowMs: number;
}

/** The default minimum rate of blob transfers: 64 KiB/s over 10 s. */
export const DEFAULT_MIN_RATE: MinRate = { bytesPerSecond: 64 * 1024, windowMs: 10_000 };

/** Checks of a `RateWatchdog` per window: it fires at most `windowMs / RATE_TICKS` late. */
export const RATE_TICKS = 10;

/**
 * Calls `onExpire` once when fewer than `bytesPerSecond × windowMs / 1000`
 * bytes were `count`ed during the last `windowMs` (judged once the watchdog is
 * `windowMs` old, then every `windowMs / RATE_TICKS`). A peer that trickles a
 * byte now and then keeps an `IdleWatchdog` quiet, not this one.
 */
export class RateWatchdog {
  readonly rate: MinRate;
  readonly #onExpire: () => void;
  readonly #buckets = new Array<number>(RATE_TICKS).fill(0);
  readonly #threshold: number;
  #tick = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #expired = false;

  /** Starts watching now; does nothing if `rate.bytesPerSecond` is 0. */
  constructor(rate: MinRate, onExpire: () => void) {
    this.rate = rate;
    this.#onExpire = onExpire;
    this.#threshold = rate.bytesPerSecond * rate.windowMs / 1000;
    if (rate.bytesPerSecond > 0 && rate.windowMs > 0) {
      this.#timer = setInterval(() => this.#check(), Math.max(1, rate.windowMs / RATE_TICKS));
    }
  }

  /** Whether the watchdog fired. */
  get expired(): boolean {
    return this.#expired;
  }

  /** Notes `n` bytes moved. */
  count(n: number): void {
    this.#buckets[this.#tick % RATE_TICKS] += n;
  }

  /** Stops watching; `onExpire` will not be called any more. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #check(): void {
    this.#tick++;
    if (this.#tick >= RATE_TICKS) {
      const moved = this.#buckets.reduce((sum, n) => sum + n, 0);
      if (moved < this.#threshold) {
        this.stop();
        this.#expired = true;
        this.#onExpire();
        return;
      }
    }
    this.#buckets[this.#tick % RATE_TICKS] = 0;
  }
}
