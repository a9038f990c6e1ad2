/**
 * `poolboy rollback`: rolls a model back to an earlier version on the whole fleet.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import type { RolloutInfo } from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { controlPlaneUrl, nameOption, required } from "./fleet_args.ts";
import { describeRollout, printJson, println } from "./output.ts";

export const ROLLBACK_HELP = `poolboy rollback — put the fleet back on an earlier version of a model

Usage: poolboy rollback --control-plane URL --model NAME [--to V] [--json]

Starts a rollout of V (default: the version rolled out before the newest
rollout) to every device, superseding the current rollout. A device that still
holds V (agents keep the version they replaced) switches back locally and
downloads nothing; the others get the reverse patch by the usual election and
seeding path.

Options:
  --control-plane URL   e.g. http://100.64.0.1:7402
  --model NAME          the model
  --to V                the version to go back to
  --json                print the rollout as JSON
  -h, --help            this help

Exit codes: 0 started, 2 usage or refused (unknown model or version, nothing
to roll back to), 3 I/O error.`;

/** Runs `rollback`. */
export async function rollbackCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("rollback", args, {
    "control-plane": { type: "string" },
    model: { type: "string" },
    to: { type: "string" },
  });
  if (values.help) {
    println(ROLLBACK_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`rollback takes no arguments, got "${positionals[0]}"`);
  }
  const url = controlPlaneUrl("rollback", values["control-plane"]);
  const body = {
    model: nameOption("model", required("rollback", "model", values.model)),
    to: values.to === undefined ? undefined : nameOption("to", values.to),
  };
  const rollout = await callApi<RolloutInfo>(url, "POST", "/v1/rollback", JSON.stringify(body));
  if (values.json) printJson(rollout);
  else println(describeRollout(rollout));
  return 0;
}
