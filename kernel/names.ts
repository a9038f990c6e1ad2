/**
 * The one rule for names that reach the file system or a datagram: models,
 * versions, regions, node ids, device classes, token names. 1-128 ASCII
 * letters, digits, ".", "_" or "-", not starting with "." or "-" — so no name
 * is ever ".", "..", a hidden file, an option, or holds a path separator. The
 * API, the CLI, the control messages' decoder and the agent all apply it to
 * every name from outside.
 *
 * @module
 */

/** The name rule as a regular expression. */
export const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** The rule in words, for error messages. */
export const NAME_RULE = '1-128 letters, digits, ".", "_" or "-", not starting with "." or "-"';

/** Whether `value` is a string that follows the name rule. */
export function isName(value: unknown): value is string {
  return typeof value === "string" && NAME_PATTERN.test(value);
}
