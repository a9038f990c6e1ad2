/**
 * Test-only entry point: `deno run testkit/faulty_main.ts FAULTS_JSON
 * <poolboy args>` runs the poolboy CLI (mod.ts `main`) with the transport's
 * fault injection set from FAULTS_JSON (transfer/faults.ts, plus an optional
 * `seed`) and the agent's crash hooks (agent/test_hooks.ts: `crashAfterStep`,
 * `crashTarget`). The shipped binary has no way to set faults; only tests use this.
 *
 * @module
 */

import { main } from "../mod.ts";
import { removeAllPending } from "../kernel/atomic_file.ts";
import { seedFaults, setTransportFaults, type TransportFaults } from "../transfer/faults.ts";
import { testHooks } from "../agent/test_hooks.ts";
import type { Step } from "../agent/lifecycle_state.ts";

const [json, ...args] = Deno.args;
const faults = JSON.parse(json) as TransportFaults & {
  seed?: number;
  crashAfterStep?: Step;
  crashTarget?: string;
};
if (faults.seed !== undefined) seedFaults(faults.seed);
testHooks.crashAfterStep = faults.crashAfterStep;
testHooks.crashTarget = faults.crashTarget;
delete faults.seed;
delete faults.crashAfterStep;
delete faults.crashTarget;
setTransportFaults(faults);
const interrupted = (code: number) => () => {
  removeAllPending();
  Deno.exit(code);
};
Deno.addSignalListener("SIGINT", interrupted(130));
Deno.addSignalListener("SIGTERM", interrupted(143));
Deno.exit(await main(args));
