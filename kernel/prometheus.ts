/**
 * The Prometheus text exposition format, version 0.0.4: a writer of metric
 * families (counters, gauges, histograms) to text, and a fixed-bucket
 * histogram to observe into. Shared by the control plane's `GET /metrics`
 * (controlplane/metrics.ts) and the agent's (agent/metrics_server.ts), which
 * never import each other. Pure: no clock, no I/O.
 *
 * What the writer guarantees, whatever it is given: every family has one
 * `# HELP` and one `# TYPE` line, before its samples; families come out in
 * the order given, samples of a family ordered by their labels; label values
 * and help texts are escaped as the format says (`\\`, `\"`, `\n`); a
 * histogram's buckets are cumulative, in increasing `le`, ending with
 * `le="+Inf"` equal to its `_count`. Metric and label names that the format
 * does not allow, a family named twice, or a label set repeated within a
 * family are a bug of the caller: `MetricsFormatError`.
 *
 * @module
 */

import { ExitCode, PoolboyError } from "./errors.ts";

/** The `Content-Type` of the text format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A metric family the format cannot express (a bug of the caller, never of the input). */
export class MetricsFormatError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.internal, undefined, 500);
  }
}

/** Labels of one sample: name → value (any text; escaped when written). */
export type Labels = Readonly<Record<string, string>>;

/** One sample of a counter or gauge. */
export interface Sample {
  readonly labels: Labels;
  readonly value: number;
}

/** A histogram's state: per bucket, the observations at most its bound (cumulative). */
export interface HistogramSnapshot {
  /** Upper bounds, increasing, finite (the +Inf bucket is implied). */
  readonly bounds: readonly number[];
  /** Observations ≤ `bounds[i]`, cumulative (so non-decreasing), one per bound. */
  readonly cumulative: readonly number[];
  readonly sum: number;
  readonly count: number;
}

/** One labelled series of a histogram family. */
export interface HistogramSeries {
  readonly labels: Labels;
  readonly histogram: HistogramSnapshot;
}

/** A metric family: its name, help text, type and samples. */
export type MetricFamily =
  | {
    readonly name: string;
    readonly help: string;
    readonly type: "counter" | "gauge";
    readonly samples: readonly Sample[];
  }
  | {
    readonly name: string;
    readonly help: string;
    readonly type: "histogram";
    readonly series: readonly HistogramSeries[];
  };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value as the format writes it between quotes. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** A help text as the format writes it after `# HELP name`. */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value: integers as digits, `NaN`, `+Inf`, `-Inf`, others as JavaScript writes them. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** `{a="x",b="y"}` for labels in name order; "" for none. `extra` goes last (a bucket's `le`). */
function labelText(labels: Labels, extra?: readonly [string, string]): string {
  const names = Object.keys(labels).sort();
  for (const n of names) {
    if (!LABEL_NAME.test(n) || n.startsWith("__") || n === "le") {
      throw new MetricsFormatError(`label name ${JSON.stringify(n)} is not allowed`);
    }
  }
  const parts = names.map((n) => `${n}="${escapeLabelValue(labels[n])}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

/** Orders samples by their label text; a repeated label set is a bug. */
function ordered<T extends { readonly labels: Labels }>(name: string, items: readonly T[]): T[] {
  const keyed = items.map((item) => ({ item, key: labelText(item.labels) }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (let i = 1; i < keyed.length; i++) {
    if (keyed[i].key === keyed[i - 1].key) {
      throw new MetricsFormatError(`${name}: the label set ${keyed[i].key || "{}"} is repeated`);
    }
  }
  return keyed.map((k) => k.item);
}

function checkHistogram(name: string, h: HistogramSnapshot): void {
  if (h.bounds.length !== h.cumulative.length) {
    throw new MetricsFormatError(
      `${name}: ${h.bounds.length} bounds, ${h.cumulative.length} counts`,
    );
  }
  for (let i = 0; i < h.bounds.length; i++) {
    if (!Number.isFinite(h.bounds[i]) || (i > 0 && h.bounds[i] <= h.bounds[i - 1])) {
      throw new MetricsFormatError(`${name}: bucket bounds must be finite and increasing`);
    }
    if ((i > 0 && h.cumulative[i] < h.cumulative[i - 1]) || h.cumulative[i] > h.count) {
      throw new MetricsFormatError(`${name}: bucket counts must be cumulative`);
    }
  }
}

/** The families as text, each line ending in "\n". */
export function renderPrometheus(families: readonly MetricFamily[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const family of families) {
    const { name } = family;
    if (!METRIC_NAME.test(name)) {
      throw new MetricsFormatError(`metric name ${JSON.stringify(name)} is not allowed`);
    }
    if (seen.has(name)) throw new MetricsFormatError(`metric family ${name} is named twice`);
    seen.add(name);
    lines.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`);
    if (family.type === "histogram") {
      for (const { labels, histogram: h } of ordered(name, family.series)) {
        checkHistogram(name, h);
        h.bounds.forEach((bound, i) => {
          lines.push(
            `${name}_bucket${labelText(labels, ["le", formatValue(bound)])} ${h.cumulative[i]}`,
          );
        });
        lines.push(`${name}_bucket${labelText(labels, ["le", "+Inf"])} ${h.count}`);
        lines.push(`${name}_sum${labelText(labels)} ${formatValue(h.sum)}`);
        lines.push(`${name}_count${labelText(labels)} ${h.count}`);
      }
    } else {
      for (const { labels, value } of ordered(name, family.samples)) {
        lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
      }
    }
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

/** A histogram with fixed bucket bounds, observed into as things happen. */
export class Histogram {
  readonly bounds: readonly number[];
  /** Observations in each bucket alone (not cumulative); the last is above every bound. */
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(bounds: readonly number[]) {
    for (let i = 0; i < bounds.length; i++) {
      if (!Number.isFinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
        throw new MetricsFormatError("histogram bounds must be finite and increasing");
      }
    }
    this.bounds = [...bounds];
    this.#counts = new Array(bounds.length + 1).fill(0);
  }

  /** Counts one observation (a NaN is ignored: it would poison the sum). */
  observe(value: number): void {
    if (Number.isNaN(value)) return;
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]) i++;
    this.#counts[i]++;
    this.#sum += value;
    this.#count++;
  }

  /** The state now, with cumulative bucket counts. */
  snapshot(): HistogramSnapshot {
    const cumulative: number[] = [];
    let running = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      running += this.#counts[i];
      cumulative.push(running);
    }
    return { bounds: this.bounds, cumulative, sum: this.#sum, count: this.#count };
  }
}

/** A histogram's snapshot of `values` at once (a state recomputed per scrape). */
export function histogramOf(
  bounds: readonly number[],
  values: Iterable<number>,
): HistogramSnapshot {
  const h = new Histogram(bounds);
  for (const v of values) h.observe(v);
  return h.snapshot();
}
