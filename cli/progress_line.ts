/**
 * The terminal renderer of progress (kernel/progress.ts): bytes done / total,
 * MB/s and ETA on one line of stderr.
 *
 * The renderer draws only when stderr is a terminal and not asked to be quiet,
 * and only once the work has taken more than a second; it redraws at most ten
 * times a second and clears its line when done.
 *
 * @module
 */

import type { ProgressCallback } from "../kernel/progress.ts";
import { formatBytes, megabytesPerSecond } from "../kernel/units.ts";

/** Draws a progress line on stderr. */
export class ProgressLine {
  readonly #label: string;
  readonly #enabled: boolean;
  readonly #started = performance.now();
  #lastDraw = 0;
  #drawn = false;

  constructor(label: string, options: { quiet?: boolean } = {}) {
    this.#label = label;
    this.#enabled = !options.quiet && Deno.stderr.isTerminal();
  }

  /** A callback for the codec's `onProgress`. */
  get callback(): ProgressCallback {
    return (done, total) => this.update(done, total);
  }

  /** Records progress; draws if due. */
  update(done: number, total: number): void {
    if (!this.#enabled) return;
    const now = performance.now();
    const elapsed = now - this.#started;
    if (elapsed < 1000 || now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const rate = megabytesPerSecond(done, elapsed);
    const percent = total > 0 ? (100 * done) / total : 100;
    const etaSeconds = rate > 0 ? (total - done) / 1e6 / rate : 0;
    const line = `${this.#label}: ${formatBytes(done)} / ${formatBytes(total)} (${
      percent.toFixed(1)
    }%)  ${rate.toFixed(0)} MB/s  ETA ${formatDuration(etaSeconds)}`;
    Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[2K${line}`));
    this.#drawn = true;
  }

  /** Clears the line if one was drawn. */
  done(): void {
    if (this.#drawn) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[2K"));
    this.#drawn = false;
  }
}

/** `1h02m`, `3m05s`, `42s`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}
