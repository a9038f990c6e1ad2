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
