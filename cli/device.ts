/**
 * `poolboy device`: the devices a control plane knows — list them (and those
 * pending enrolment), remove one, make an enrolment token, accept a pending
 * device (issue 14).
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import type {
  DeviceAccepted,
  DeviceList,
  DeviceRemoved,
  EnrollmentTokenInfo,
} from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import {
  apiTarget,
  countOption,
  durationOption,
  TOKEN_OPTION_HELP,
  tokenOptions,
} from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const DEVICE_HELP = `poolboy device — the devices a control plane knows

Usage: poolboy device list --control-plane ADDR [--token T] [--json]
       poolboy device remove --control-plane ADDR [--token T] [--json] ID
       poolboy device enroll-token --control-plane ADDR [--token T] [--uses N] [--expires T] [--json]
       poolboy device accept --control-plane ADDR [--token T] --key-id HEX [--json] ID

list          every device: region, online or not, how long since it was heard
              from, then the devices pending enrolment, each with its key id
              (role viewer or above)
remove        forgets device ID: its registry entry, its enrolled key, its progress
              in every rollout and its history; the audit log keeps the removal
              (role admin). It must enrol again to take part.
enroll-token  makes an enrolment token (printed once; the control plane keeps only
              its hash) for poolboy agent --enroll TOKEN: each device that starts
              with it is enrolled, --uses N times (default 1), until --expires
              (default 1h) (role admin)
accept        enrols device ID, pending since it asked without a token, if its key
              is --key-id (role admin); it pins the first control-plane key it is
              then given. The first request under an ID is the one pending: a
              later one does not replace it (remove it to start again)

Options:
  --control-plane ADDR  the control plane: 100.64.0.1 (API port 7402), IP:PORT or http://IP:PORT
  --uses N              enroll-token: how many devices it enrols (default 1)
  --expires T           enroll-token: how long it works, e.g. 30m, 1h (default 1h)
  --key-id HEX          accept: the pending key's id as device list shows it (at
                        least its first 16 hex digits; compare it with the device's)
${TOKEN_OPTION_HELP}
  --json                print the answer as JSON
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused (unknown device; 401: no, unknown or
revoked token; 403: the token's role is too low; 409: accept with a key id not
the pending key's), 3 the control plane cannot be reached.`;

/** Runs `device`. */
export async function deviceCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("device", args, {
    "control-plane": { type: "string" },
    uses: { type: "string" },
    expires: { type: "string" },
    "key-id": { type: "string" },
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
      for (const p of list.pending ?? []) {
        println(
          `${p.nodeId.padEnd(16)} ${p.region.padEnd(10)} PENDING key ${
            p.keyId.slice(0, 16)
          } asked to enrol ${
            Math.round((Date.now() - p.requested) / 1000)
          } s ago (poolboy device accept --key-id ${p.keyId.slice(0, 16)} ${p.nodeId})`,
        );
      }
    }
    return 0;
  }
  if (action === "enroll-token") {
    if (rest.length > 0) {
      throw new UsageError(`device enroll-token takes no arguments, got "${rest[0]}"`);
    }
    const made = await callApi<EnrollmentTokenInfo>(
      apiTarget("device", values),
      "POST",
      "/v1/enrollment-tokens",
      JSON.stringify({
        uses: countOption("uses", values.uses, 1),
        expiresMs: durationOption("expires", values.expires, 3_600_000),
      }),
    );
    if (values.json) printJson(made);
    else {
      println(made.token);
      println(
        `(shown once: enrols ${made.uses} device(s) until ${
          new Date(made.expires).toISOString()
        }; poolboy agent --enroll TOKEN)`,
      );
    }
    return 0;
  }
  if (action === "accept") {
    if (rest.length !== 1) {
      throw new UsageError("device accept takes one device ID (see poolboy device --help)");
    }
    const keyId = values["key-id"];
    if (keyId === undefined || !/^[0-9a-fA-F]{16,64}$/.test(keyId)) {
      throw new UsageError(
        "device accept needs --key-id HEX: at least the first 16 hex digits of the pending key's id, as poolboy device list shows it",
      );
    }
    const accepted = await callApi<DeviceAccepted>(
      apiTarget("device", values),
      "POST",
      `/v1/devices/${encodeURIComponent(rest[0])}/accept`,
      JSON.stringify({ keyId: keyId.toLowerCase() }),
    );
    if (values.json) printJson(accepted);
    else println(`device ${accepted.nodeId} enrolled`);
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
      ? "device needs an action: list, remove, enroll-token or accept (see poolboy device --help)"
      : `device: unknown action "${action}" (list, remove, enroll-token or accept)`,
  );
}
