/**
 * Test-only hooks of the agent's lifecycle: with `crashAfterStep` set, the
 * process exits abruptly (no clean-up, as a kill or power cut would leave it)
 * right after that step of an update to `crashTarget` is persisted. Only
 * tests set it, through testkit/faulty_main.ts; the CLI has no flag.
 *
 * @module
 */

import type { Step } from "./lifecycle_state.ts";

/** The hooks; empty (the default) does nothing. */
export const testHooks: { crashAfterStep?: Step; crashTarget?: string } = {};

/** Exits at once if the hooks say to crash after `step` of an update to `target`. */
export function maybeCrash(step: Step, target: string | null): void {
  if (
    testHooks.crashAfterStep === step &&
    (!testHooks.crashTarget || testHooks.crashTarget === target)
  ) {
    Deno.exit(137);
  }
}
