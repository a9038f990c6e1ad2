/**
 * `poolboy rollout`: starts rolling a published version out to the fleet, or
 * pauses, resumes or aborts a rollout.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import type { RolloutInfo } from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { apiTarget, nameOption, required, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { describeRollout, printJson, println } from "./output.ts";

export const ROLLOUT_HELP = `poolboy rollout — roll a published version out to the fleet

Usage: poolboy rollout --control-plane ADDR --model NAME --version V [--region R]
                       [--strategy all|canary|rolling] [--canary N|N%] [--batch K]
                       [--max-failures P%] [--token T] [--json]
       poolboy rollout pause|resume|abort --control-plane ADDR [--token T] ID

Every agent (or every agent of region R) that does not run V gets it: per
region and base version one agent is elected to fetch the patch from the
control plane and the others download it from that leader. A new rollout of a
model supersedes the unfinished ones whose scope overlaps (the same region, or
either is every region): rollouts to different regions run side by side. A
region (or fleet) with no device is refused. Prints the rollout id; follow it
with "poolboy status".

Strategies (devices are taken in the order of their node ids):
  all       every device at once (default)
  canary    the first --canary devices (a count, or a percentage of the scope;
            default 1); the rest once every canary runs V healthy
  rolling   batches of --batch devices (default 1); the next batch once the
            previous one runs V healthy
A rollout halts by itself when more than --max-failures of the current batch
(default 20%) failed (apply, verify or health check); "resume" lets it go on,
"abort" ends it. Devices that failed keep (or went back to) their version.

Options:
  --control-plane ADDR  the control plane: 100.64.0.1 (API port 7402), IP:PORT or http://IP:PORT
  --model NAME          a published model
  --version V           a published version of it
  --region R            only this region (default: every region)
${TOKEN_OPTION_HELP} (role deployer or above)
  --json                print the rollout as JSON
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused (unknown model, version or rollout; a
rollout that cannot be paused/resumed/aborted in its state; 401: no, unknown or
revoked token; 403: the token's role is too low), 3 I/O error.`;

/** Runs `rollout`. */
export async function rolloutCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("rollout", args, {
    "control-plane": { type: "string" },
    model: { type: "string" },
    version: { type: "string" },
    region: { type: "string" },
    strategy: { type: "string" },
    canary: { type: "string" },
    batch: { type: "string" },
    "max-failures": { type: "string" },
    ...tokenOptions,
  });
  if (values.help) {
    println(ROLLOUT_HELP);
    return 0;
  }
  const api = apiTarget("rollout", values);
  let rollout: RolloutInfo;
  const [action, id, ...extra] = positionals;
  if (action !== undefined) {
    if (action !== "pause" && action !== "resume" && action !== "abort") {
      throw new UsageError(`rollout: unknown action "${action}" (pause, resume or abort)`);
    }
    if (id === undefined || !/^[0-9]+$/.test(id) || extra.length > 0) {
      throw new UsageError(`rollout ${action} takes one rollout ID (see poolboy rollout --help)`);
    }
    rollout = await callApi<RolloutInfo>(api, "POST", `/v1/rollouts/${id}/${action}`);
  } else {
    const strategy = values.strategy ?? "all";
    if (!["all", "canary", "rolling"].includes(strategy)) {
      throw new UsageError(`--strategy: "${strategy}" is not all, canary or rolling`);
    }
    if (values.canary !== undefined && strategy !== "canary") {
      throw new UsageError("--canary goes with --strategy canary");
    }
    if (values.batch !== undefined && strategy !== "rolling") {
      throw new UsageError("--batch goes with --strategy rolling");
    }
    if (values.batch !== undefined && !/^[1-9][0-9]*$/.test(values.batch)) {
      throw new UsageError(`--batch: "${values.batch}" is not a whole number of at least 1`);
    }
    const body = {
      model: nameOption("model", required("rollout", "model", values.model)),
      version: nameOption("version", required("rollout", "version", values.version)),
      region: values.region === undefined ? undefined : nameOption("region", values.region),
      strategy,
      canary: values.canary,
      batch: values.batch === undefined ? undefined : Number(values.batch),
      maxFailures: values["max-failures"],
    };
    rollout = await callApi<RolloutInfo>(api, "POST", "/v1/rollouts", JSON.stringify(body));
  }
  if (values.json) printJson(rollout);
  else println(describeRollout(rollout));
  return 0;
}
