/**
 * What the commands print: lines and JSON on stdout (a reader that went away
 * is not an error), timestamped log lines on stderr, and the one-line
 * description of a rollout that rollout and rollback share.
 *
 * @module
 */

import type { RolloutInfo } from "../controlplane/api_types.ts";

/**
 * Writes a line to stdout. A reader that went away (`poolboy inspect p | head -1`)
 * is not an error: the rest of the output is dropped, as other tools do.
 */
export function println(line = ""): void {
  const bytes = new TextEncoder().encode(line + "\n");
  try {
    for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
  } catch (err) {
    if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
  }
}

/** Writes a value as pretty JSON on stdout. */
export function printJson(value: unknown): void {
  println(JSON.stringify(value, null, 2));
}

/** A timestamped log line on stderr. */
export function logLine(line: string): void {
  console.error(`${new Date().toISOString()} ${line}`);
}

/** One line about a rollout. */
export function describeRollout(r: RolloutInfo): string {
  const plan = r.strategy === "canary"
    ? `canary ${r.canary}${r.canaryPercent ? "%" : ""}`
    : r.strategy === "rolling"
    ? `rolling, batches of ${r.batch}`
    : "all at once";
  return `rollout ${r.id}: ${r.model} ${r.version} to ${r.region ?? "every region"}${
    r.rollback ? " (rollback)" : ""
  }, ${plan}, halts above ${Math.round(r.maxFailures * 100)}% failures: ${r.state}${
    r.reason ? ` (${r.reason})` : ""
  }`;
}
