/**
 * Canonical JSON: the one byte string a signed document's `signed` value is
 * turned into before it is signed or verified (docs/spec/release-v1.md,
 * "Canonical form"). Objects with their keys sorted by UTF-16 code units,
 * no whitespace, strings as ECMAScript `JSON.stringify` writes them, numbers
 * only as safe integers; anything else (floats, -0, undefined, functions,
 * non-plain objects) is refused rather than silently changed.
 *
 * @module
 */

import { InvalidArgumentError } from "../kernel/errors.ts";

/** A value canonical JSON can carry. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

/** Deepest nesting accepted (documents here are 4 deep at most). */
export const MAX_DEPTH = 16;

/** The canonical text of `value`; throws `InvalidArgumentError` for what it cannot carry. */
export function canonicalJson(value: unknown): string {
  return write(value, 0);
}

/** The canonical bytes (UTF-8) of `value`: what a signature covers. */
export function canonicalBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}

function write(value: unknown, depth: number): string {
  if (depth > MAX_DEPTH) throw new InvalidArgumentError(`canonical JSON: nested over ${MAX_DEPTH}`);
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return JSON.stringify(value);
    case "number":
      if (!Number.isSafeInteger(value) || Object.is(value, -0)) {
        throw new InvalidArgumentError(
          `canonical JSON carries only safe integers, not ${String(value)}`,
        );
      }
      return String(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map((v) => write(v, depth + 1)).join(",")}]`;
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new InvalidArgumentError("canonical JSON carries only plain objects and arrays");
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort();
      return `{${
        keys.map((k) => `${JSON.stringify(k)}:${write(record[k], depth + 1)}`).join(",")
      }}`;
    }
    default:
      throw new InvalidArgumentError(`canonical JSON cannot carry a ${typeof value}`);
  }
}
