/**
 * `poolboy device`: the devices a control plane knows — list them, or remove
 * one (an admin's call). Device enrolment (issue 14) adds its subcommands here.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import type { DeviceList, DeviceRemoved } from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { apiTarget, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const DEVICE_HELP = `poolboy device — the devices a control plane knows

Usage: poolboy device list --control-plane URL [--token T] [--json]
       poolboy device remove --control-plane URL [--token T] [--json] ID

list     every device: region, online or not, how long since it was heard from
         (role viewer or above)
remove   forgets device ID: its registry entry, its progress in every rollout and
         its history; the audit log keeps the removal (role admin). A device
         that heartbeats again re-appears: devices do not enrol yet.

Options:
  --control-plane URL   e.g. http://100.64.0.1:7402
${TOKEN_OPTION_HELP}
  --json                print the answer as JSON
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused (unknown device; 401: no, unknown or
revoked token; 403: the token's role is too low), 3 the control plane cannot be
reached.`;

/** Runs `device`. */
export async function deviceCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("device", args, {
    "control-plane": { type: "string" },
    ...tokenOptions,
  });
  if (values.help) {
    println(DEVICE_HELP);
    return 0;
  }
  const [action, ...rest] = positionals;
  if (action === "list") {
    if (rest.length > 0) throw new UsageError(`device list takes no arguments, got "${rest[0]}"`);
    const list = await callApi<DeviceList>(apiTarget("device", values), "GET", "/v1/devices");
    if (values.json) printJson(list);
    else {
      for (const a of list.agents) {
        println(
          `${a.nodeId.padEnd(16)} ${a.region.padEnd(10)} ${
            a.online ? "online " : "OFFLINE"
          } ${a.host}, last heard ${Math.round(a.lastSeenMsAgo / 1000)} s ago`,
        );
      }
    }
    return 0;
  }
  if (action === "remove") {
    if (rest.length !== 1) {
      throw new UsageError("device remove takes one device ID (see poolboy device --help)");
    }
    const id = rest[0];
    const removed = await callApi<DeviceRemoved>(
      apiTarget("device", values),
      "DELETE",
      `/v1/devices/${encodeURIComponent(id)}`,
    );
    if (values.json) printJson(removed);
    else println(`device ${removed.nodeId} removed`);
    return 0;
  }
  throw new UsageError(
    action === undefined
      ? "device needs an action: list or remove (see poolboy device --help)"
      : `device: unknown action "${action}" (list or remove)`,
  );
}
