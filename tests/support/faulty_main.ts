/**
 * Test-only entry point: `deno run tests/support/faulty_main.ts FAULTS_JSON
 * <poolboy args>` runs the poolboy CLI (mod.ts `main`) with the transport's
 * fault injection set from FAULTS_JSON (transfer/faults.ts, plus an optional
 * `seed`). The shipped binary has no way to set faults; only tests use this.
 *
 * @module
 */

import { main } from "../../mod.ts";
import { removeAllPending } from "../../codec/atomic_file.ts";
import { seedFaults, setTransportFaults, type TransportFaults } from "../../transfer/faults.ts";

const [json, ...args] = Deno.args;
const faults = JSON.parse(json) as TransportFaults & { seed?: number };
if (faults.seed !== undefined) seedFaults(faults.seed);
delete faults.seed;
setTransportFaults(faults);
const interrupted = (code: number) => () => {
  removeAllPending();
  Deno.exit(code);
};
Deno.addSignalListener("SIGINT", interrupted(130));
Deno.addSignalListener("SIGTERM", interrupted(143));
Deno.exit(await main(args));
