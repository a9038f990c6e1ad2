/**
 * Summarises V8 CPU profiles (`deno run --cpu-prof --cpu-prof-dir=DIR ...`
 * writes one `.cpuprofile` per thread) by self time per function: where an
 * encode or apply spends its time, thread by thread.
 *
 * Usage: deno run --allow-read scripts/profile_summary.ts FILE.cpuprofile... [--top 20]
 *
 * @module
 */

import { parseArgs } from "node:util";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Self time in microseconds per "function file:line", and the total. */
export function selfTimes(profile: Profile): { total: number; byFunction: Map<string, number> } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const byFunction = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    if (node === undefined) continue;
    const dt = profile.timeDeltas[i] ?? 0;
    const f = node.callFrame;
    const file = f.url.split("/").slice(-2).join("/");
    const key = `${f.functionName || "(anonymous)"} ${file}${f.url ? `:${f.lineNumber + 1}` : ""}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + dt);
    total += dt;
  }
  return { total, byFunction };
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { top: { type: "string", default: "20" } },
    allowPositionals: true,
  });
  const top = Math.max(1, Math.min(1000, Number(values.top) || 20));
  for (const file of positionals) {
    const { total, byFunction } = selfTimes(JSON.parse(await Deno.readTextFile(file)));
    console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled`);
    const sorted = [...byFunction.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [name, us] of sorted) {
      const pct = total > 0 ? (100 * us / total).toFixed(1) : "0.0";
      console.log(`${pct.padStart(6)}%  ${(us / 1e6).toFixed(2).padStart(8)} s  ${name}`);
    }
  }
}
