/**
 * A small, strict reader of the Prometheus text exposition format 0.0.4 for
 * tests, written apart from kernel/prometheus.ts (it must not share its
 * mistakes): every line is a `# HELP`, a `# TYPE` or a sample; each family has
 * exactly one HELP and one TYPE, both before its samples, and its samples
 * come together; label values are unescaped (only `\\`, `\"`, `\n`); a series
 * appears once; a histogram's buckets are increasing in `le`, cumulative, end
 * with `+Inf`, which equals `_count`, and every series has `_sum` and
 * `_count`. Anything else throws with the line's number.
 *
 * @module
 */

/** One sample line, read. */
export interface ParsedSample {
  /** The sample's name (for a histogram: with `_bucket`, `_sum` or `_count`). */
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** One family, read. */
export interface ParsedFamily {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  readonly samples: ParsedSample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABEL = "[a-zA-Z_][a-zA-Z0-9_]*";

function unescape(text: string, allowQuote: boolean, line: number): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== "\\") {
      out += c;
      continue;
    }
    const next = text[++i];
    if (next === "\\") out += "\\";
    else if (next === "n") out += "\n";
    else if (next === '"' && allowQuote) out += '"';
    else throw new Error(`line ${line}: bad escape \\${next ?? ""}`);
  }
  return out;
}

function parseValue(text: string, line: number): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/.test(text)) {
    throw new Error(`line ${line}: bad value ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** The labels of `{...}` (without the braces). */
function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  const re = new RegExp(`^(${LABEL})="((?:[^"\\\\\\n]|\\\\.)*)"(,|$)`);
  let rest = text;
  while (rest.length > 0) {
    const m = re.exec(rest);
    if (!m) throw new Error(`line ${line}: bad labels {${text}}`);
    if (m[1] in labels) throw new Error(`line ${line}: label ${m[1]} twice`);
    labels[m[1]] = unescape(m[2], true, line);
    rest = rest.slice(m[0].length);
    if (m[3] === "," && rest.length === 0) throw new Error(`line ${line}: trailing comma`);
  }
  return labels;
}

/** The family a sample name belongs to, given the family declared last. */
function owns(family: ParsedFamily, name: string): boolean {
  if (family.type !== "histogram") return name === family.name;
  return [`${family.name}_bucket`, `${family.name}_sum`, `${family.name}_count`].includes(name);
}

function seriesKey(labels: Record<string, string>, without?: string): string {
  return JSON.stringify(
    Object.keys(labels).filter((k) => k !== without).sort().map((k) => [k, labels[k]]),
  );
}

function checkHistogram(family: ParsedFamily): void {
  const series = new Map<
    string,
    { le: number[]; counts: number[]; sum?: number; count?: number }
  >();
  const of = (labels: Record<string, string>) => {
    const key = seriesKey(labels, "le");
    let s = series.get(key);
    if (!s) series.set(key, s = { le: [], counts: [] });
    return s;
  };
  for (const sample of family.samples) {
    const s = of(sample.labels);
    if (sample.name.endsWith("_bucket")) {
      if (!("le" in sample.labels)) throw new Error(`${family.name}: a bucket without le`);
      s.le.push(parseValue(sample.labels.le, 0));
      s.counts.push(sample.value);
    } else if (sample.name.endsWith("_sum")) s.sum = sample.value;
    else s.count = sample.value;
  }
  for (const [key, s] of series) {
    if (s.sum === undefined || s.count === undefined) {
      throw new Error(`${family.name} ${key}: _sum or _count missing`);
    }
    if (s.le.length === 0 || s.le[s.le.length - 1] !== Infinity) {
      throw new Error(`${family.name} ${key}: no +Inf bucket last`);
    }
    for (let i = 1; i < s.le.length; i++) {
      if (!(s.le[i] > s.le[i - 1])) throw new Error(`${family.name} ${key}: le not increasing`);
      if (s.counts[i] < s.counts[i - 1]) throw new Error(`${family.name} ${key}: not cumulative`);
    }
    if (s.counts[s.counts.length - 1] !== s.count) {
      throw new Error(`${family.name} ${key}: +Inf bucket is not _count`);
    }
  }
}

/** Every family of `text`, in order; throws at the first thing the format does not allow. */
export function parsePrometheusText(text: string): ParsedFamily[] {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("the text must end with a newline");
  const lines = text.length === 0 ? [] : text.slice(0, -1).split("\n");
  const families: ParsedFamily[] = [];
  const byName = new Map<
    string,
    { help?: string; type?: ParsedFamily["type"]; family?: ParsedFamily }
  >();
  const seen = new Set<string>();
  let current: ParsedFamily | undefined;
  const helpRe = new RegExp(`^# HELP (${NAME}) (.*)$`);
  const typeRe = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
  const sampleRe = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`);
  lines.forEach((line, index) => {
    const n = index + 1;
    let m = helpRe.exec(line);
    if (m) {
      const entry = byName.get(m[1]) ?? {};
      if (entry.help !== undefined) throw new Error(`line ${n}: second HELP for ${m[1]}`);
      if (entry.family && entry.family.samples.length > 0) {
        throw new Error(`line ${n}: HELP for ${m[1]} after its samples`);
      }
      entry.help = unescape(m[2], false, n);
      byName.set(m[1], entry);
      return;
    }
    m = typeRe.exec(line);
    if (m) {
      const entry = byName.get(m[1]) ?? {};
      if (entry.type !== undefined) throw new Error(`line ${n}: second TYPE for ${m[1]}`);
      if (entry.help === undefined) throw new Error(`line ${n}: TYPE of ${m[1]} before its HELP`);
      entry.type = m[2] as ParsedFamily["type"];
      entry.family = { name: m[1], help: entry.help, type: entry.type, samples: [] };
      byName.set(m[1], entry);
      families.push(entry.family);
      current = entry.family;
      return;
    }
    if (line.startsWith("#")) throw new Error(`line ${n}: unknown comment ${JSON.stringify(line)}`);
    m = sampleRe.exec(line);
    if (!m) throw new Error(`line ${n}: not a sample: ${JSON.stringify(line)}`);
    if (current === undefined || !owns(current, m[1])) {
      throw new Error(`line ${n}: sample ${m[1]} outside its family's HELP/TYPE block`);
    }
    const labels = parseLabels(m[2] ?? "", n);
    const key = `${m[1]}${seriesKey(labels)}`;
    if (seen.has(key)) throw new Error(`line ${n}: series ${key} twice`);
    seen.add(key);
    current.samples.push({ name: m[1], labels, value: parseValue(m[3], n) });
  });
  for (const [name, entry] of byName) {
    if (entry.type === undefined) throw new Error(`${name}: HELP without TYPE`);
  }
  for (const family of families) if (family.type === "histogram") checkHistogram(family);
  return families;
}

/** The value of the sample `name` with exactly `labels`; throws if there is none. */
export function valueOf(
  families: readonly ParsedFamily[],
  name: string,
  labels: Record<string, string> = {},
): number {
  const key = seriesKey(labels);
  for (const family of families) {
    for (const sample of family.samples) {
      if (sample.name === name && seriesKey(sample.labels) === key) return sample.value;
    }
  }
  throw new Error(`no sample ${name}${key}`);
}
