/**
 * poolboy's version: the one place it is written. `poolboy --version` (and
 * `poolboy COMMAND --version`) prints `versionLine()`.
 *
 * @module
 */

/** This release of poolboy (issue 16 of the project's history). */
export const VERSION = "0.19.0";

/** `poolboy <version> (deno <deno version>, <os>-<arch>)`, as `--version` prints it. */
export function versionLine(): string {
  return `poolboy ${VERSION} (deno ${Deno.version.deno}, ${Deno.build.os}-${Deno.build.arch})`;
}
