/**
 * `poolboy rollout`: starts rolling a published version out to the fleet.
 *
 * @module
 */

import { UsageError } from "../codec/errors.ts";
import type { RolloutRow } from "../controlplane/state_db.ts";
import { parseCommand, printJson, println } from "./args.ts";
import { callApi } from "./api_client.ts";
import { controlPlaneUrl, nameOption, required } from "./fleet_args.ts";

export const ROLLOUT_HELP = `poolboy rollout — roll a published version out to the fleet

Usage: poolboy rollout --control-plane URL --model NAME --version V [--region R] [--json]

Every agent (or every agent of region R) that does not run V gets it: per
region and base version one agent is elected to fetch the patch from the
control plane and the others download it from that leader. A new rollout of a
model supersedes the running one. Prints the rollout id; follow it with
"poolboy status".

Options:
  --control-plane URL   e.g. http://100.64.0.1:7402
  --model NAME          a published model
  --version V           a published version of it
  --region R            only this region (default: every region)
  --json                print the rollout as JSON
  -h, --help            this help

Exit codes: 0 started, 2 usage or refused (unknown model or version), 3 I/O error.`;

/** Runs `rollout`. */
export async function rolloutCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("rollout", args, {
    "control-plane": { type: "string" },
    model: { type: "string" },
    version: { type: "string" },
    region: { type: "string" },
  });
  if (values.help) {
    println(ROLLOUT_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`rollout takes no arguments, got "${positionals[0]}"`);
  }
  const url = controlPlaneUrl("rollout", values["control-plane"]);
  const body = {
    model: nameOption("model", required("rollout", "model", values.model)),
    version: nameOption("version", required("rollout", "version", values.version)),
    region: values.region === undefined ? undefined : nameOption("region", values.region),
  };
  const rollout = await callApi<RolloutRow>(url, "POST", "/v1/rollouts", JSON.stringify(body));
  if (values.json) printJson(rollout);
  else {
    println(
      `rollout ${rollout.id}: ${rollout.model} ${rollout.version} to ${
        rollout.region ?? "every region"
      }`,
    );
  }
  return 0;
}
