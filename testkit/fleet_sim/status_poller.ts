/**
 * Polls the control plane's status API (`GET /v1/status`) every `periodMs`
 * while a rollout runs and records each call's latency (failures counted
 * apart), so the simulator can report its percentiles; the latest report is
 * kept for the progress lines. One call at a time; latencies are bounded.
 *
 * @module
 */

import type { StatusReport } from "../../controlplane/api_types.ts";

/** Most latencies kept (one per 250 ms: over an hour). */
const MAX_SAMPLES = 20_000;

/** A running poller. */
export class StatusPoller {
  readonly latenciesMs: number[] = [];
  failures = 0;
  latest: StatusReport | undefined;
  readonly #stop = new AbortController();
  readonly #running: Promise<void>;

  constructor(url: string, token: string, periodMs = 250) {
    this.#running = this.#loop(url, token, periodMs);
  }

  async #loop(url: string, token: string, periodMs: number): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      const started = performance.now();
      try {
        const r = await fetch(`${url}/v1/status`, {
          headers: { authorization: `Bearer ${token}` },
          signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)]),
        });
        const text = await r.text();
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        const took = performance.now() - started;
        if (this.latenciesMs.length < MAX_SAMPLES) this.latenciesMs.push(took);
        this.latest = JSON.parse(text) as StatusReport;
      } catch {
        if (signal.aborted) break;
        this.failures++;
      }
      const wait = periodMs - (performance.now() - started);
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          }, { once: true });
        });
      }
    }
  }

  /** Stops polling and waits for the call in flight. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#running;
  }
}

/** The p-th percentile (0-100) of `values` by nearest rank; null when empty. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}
