/**
 * What a device remembers of the signed releases it installed, as the text of
 * `DATA/trust.json` (format 1): the highest delegation version seen and, per
 * model, the highest release counter installed and its target. Pure: parsing,
 * formatting and merging; agent/trust_file.ts reads and writes the file.
 *
 * ```json
 * { "format": 1, "delegationVersion": 2,
 *   "counters": { "resnet": { "counter": 7, "target": "<64 hex digits>" } } }
 * ```
 *
 * The memory only grows: `mergeMemory` keeps, for each model, the higher
 * counter, and the higher delegation version. Forgetting it (a reset) would
 * let an older signed release in again, so a damaged file is an error, never
 * an empty memory.
 *
 * @module
 */

import { isName } from "../kernel/names.ts";
import type { TrustMemory } from "../release/trust_policy.ts";

/** The format of `trust.json` this agent reads and writes. */
export const TRUST_FORMAT = 1;

const HEX64 = /^[0-9a-f]{64}$/;

/** The memory in `text`, or why `text` is not a trust file of format 1. */
export function parseTrustMemory(
  text: string,
): { readonly ok: true; readonly memory: TrustMemory } | {
  readonly ok: false;
  readonly why: string;
} {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, why: "not JSON" };
  }
  if (!isRecord(value)) return { ok: false, why: "not a JSON object" };
  if (value.format !== TRUST_FORMAT) {
    return { ok: false, why: `format ${JSON.stringify(value.format)}, not ${TRUST_FORMAT}` };
  }
  if (!isCount(value.delegationVersion, 0)) {
    return { ok: false, why: "delegationVersion is not a whole number" };
  }
  if (!isRecord(value.counters)) return { ok: false, why: "counters is not an object" };
  const counters: Record<string, { counter: number; target: string }> = {};
  for (const [model, entry] of Object.entries(value.counters)) {
    if (!isName(model)) {
      return { ok: false, why: `counters names a bad model ${JSON.stringify(model)}` };
    }
    if (
      !isRecord(entry) || !isCount(entry.counter, 1) || typeof entry.target !== "string" ||
      !HEX64.test(entry.target)
    ) {
      return { ok: false, why: `counters.${model} is not { counter, target }` };
    }
    counters[model] = { counter: entry.counter, target: entry.target };
  }
  return { ok: true, memory: { delegationVersion: value.delegationVersion, counters } };
}

/** The text of `trust.json` for `memory`. */
export function formatTrustMemory(memory: TrustMemory): string {
  return JSON.stringify(
    {
      format: TRUST_FORMAT,
      delegationVersion: memory.delegationVersion,
      counters: memory.counters,
    },
    null,
    2,
  ) + "\n";
}

/**
 * `before` grown by `after`: the higher delegation version, and per model the
 * higher counter (on a tie, `after`'s entry). Nothing is ever lowered.
 */
export function mergeMemory(before: TrustMemory, after: TrustMemory): TrustMemory {
  const counters = { ...before.counters };
  for (const [model, entry] of Object.entries(after.counters)) {
    const previous = counters[model];
    if (!previous || entry.counter >= previous.counter) counters[model] = entry;
  }
  return {
    delegationVersion: Math.max(before.delegationVersion, after.delegationVersion),
    counters,
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown, min: number): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min;
}
