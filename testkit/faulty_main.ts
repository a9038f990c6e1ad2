/**
 * Test-only entry point: `deno run testkit/faulty_main.ts FAULTS_JSON
 * <poolboy args>` runs a poolboy command with faults injected. FAULTS_JSON
 * holds `TransportFaults` fields (transfer/faults.ts), an optional `seed` of
 * the datagram-drop sequence, and the agent's crash hook: `crashAfterStep`
 * (and optionally `crashTarget`) exits the process abruptly (code 137, no
 * clean-up, as a kill or power cut would leave it) right after that step of an
 * update is persisted.
 *
 * It builds a `FaultInjector` and the agent's hooks from that JSON and passes
 * them to `agentCommand` / `controlplaneCommand`; any other command runs as
 * mod.ts runs it. Nothing is global: the shipped binary (mod.ts) never passes
 * faults and has no flag for them.
 *
 * @module
 */

import { main, reportError } from "../mod.ts";
import { removeAllPending } from "../kernel/atomic_file.ts";
import { FaultInjector, type TransportFaults } from "../transfer/faults.ts";
import type { AgentHooks } from "../agent/agent.ts";
import type { Step } from "../agent/lifecycle_state.ts";

/** What FAULTS_JSON may hold. */
interface FaultsJson extends TransportFaults {
  seed?: number;
  crashAfterStep?: Step;
  crashTarget?: string;
}

/** Hooks that exit at once after `crashAfterStep` of an update to `crashTarget` (any if absent). */
function crashHooks(crashAfterStep: Step | undefined, crashTarget: string | undefined): AgentHooks {
  if (crashAfterStep === undefined) return {};
  return {
    afterStepPersisted: (step, target) => {
      if (step === crashAfterStep && (!crashTarget || crashTarget === target)) Deno.exit(137);
    },
  };
}

async function run(json: string, args: string[]): Promise<number> {
  const { seed, crashAfterStep, crashTarget, ...transport } = JSON.parse(json) as FaultsJson;
  const faults = new FaultInjector(transport, seed);
  const [command, ...rest] = args;
  try {
    if (command === "agent") {
      const { agentCommand } = await import("../cli/agent.ts");
      return await agentCommand(rest, { faults, hooks: crashHooks(crashAfterStep, crashTarget) });
    }
    if (command === "controlplane") {
      const { controlplaneCommand } = await import("../cli/controlplane.ts");
      return await controlplaneCommand(rest, { faults });
    }
  } catch (err) {
    return reportError(err);
  }
  return await main(args);
}

const [json, ...args] = Deno.args;
const interrupted = (code: number) => () => {
  removeAllPending();
  Deno.exit(code);
};
Deno.addSignalListener("SIGINT", interrupted(130));
Deno.addSignalListener("SIGTERM", interrupted(143));
Deno.exit(await run(json, args));
