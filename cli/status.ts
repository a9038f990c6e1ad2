/**
 * `poolboy status`: the fleet as the control plane sees it.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { formatBytes } from "../kernel/units.ts";
import type { StatusReport } from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { apiTarget, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const STATUS_HELP = `poolboy status — agents, versions and rollouts of a fleet

Usage: poolboy status --control-plane URL [--token T] [--json]

Shows each agent (region, online, the version it runs, bytes it served to
peers), each rollout with every agent's state in it and each election (leader,
blob, state), and the bytes the control plane itself served.

Options:
  --control-plane URL   e.g. http://100.64.0.1:7402
${TOKEN_OPTION_HELP} (role viewer or above)
  --json                the whole report as JSON (GET /v1/status)
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused (401: no, unknown or revoked token; 403: the
token's role is too low), 3 the control plane cannot be reached.`;

/** Runs `status`. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("status", args, {
    "control-plane": { type: "string" },
    ...tokenOptions,
  });
  if (values.help) {
    println(STATUS_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`status takes no arguments, got "${positionals[0]}"`);
  }
  const api = apiTarget("status", values);
  const report = await callApi<StatusReport>(api, "GET", "/v1/status");
  if (values.json) printJson(report);
  else for (const line of formatStatus(report)) println(line);
  return 0;
}

/** The human-readable status report. */
export function formatStatus(report: StatusReport): string[] {
  const versionName = new Map(report.versions.map((v) => [v.digest, `${v.model} ${v.version}`]));
  const name = (digest: string) => versionName.get(digest) ?? digest.slice(0, 16);
  const lines = [
    `control plane (boot ${report.boot}): served ${formatBytes(report.controlPlane.served)}`,
  ];
  lines.push("", `versions (${report.versions.length}):`);
  for (const v of report.versions) {
    const release = v.signed ? `signed, counter ${v.counter}` : "unsigned";
    lines.push(
      `  ${v.model} ${v.version}: ${formatBytes(v.size)}, blake3 ${v.digest}, ${release}`,
    );
  }
  for (const p of report.patches) {
    lines.push(`  patch ${name(p.base)} → ${name(p.target)}: ${formatBytes(p.size)}`);
  }
  lines.push("", `agents (${report.agents.length}):`);
  for (const a of report.agents) {
    const models = Object.values(a.active).map(name).join(", ") || "no model";
    lines.push(
      `  ${a.nodeId.padEnd(16)} ${a.region.padEnd(10)} ${
        a.online ? "online " : "OFFLINE"
      } ${models}; served ${formatBytes(a.served)}`,
    );
  }
  lines.push("", `rollouts (${report.rollouts.length}):`);
  for (const r of report.rollouts) {
    const done = r.agents.filter((a) => a.state === "active").length;
    lines.push(
      `  #${r.id} ${r.model} ${r.version} → ${
        r.region ?? "all regions"
      }: ${r.state}, ${done}/${r.agents.length} agents active [${r.strategy}${
        r.rollback ? ", rollback" : ""
      }]${r.reason ? ` (${r.reason})` : ""}`,
    );
    for (const e of r.elections) {
      lines.push(
        `    election ${e.manifestId} ${e.region}: ${e.state}${
          e.leader ? `, leader ${e.leader}` : ""
        }, ${e.base ? "patch" : "whole file"} ${
          formatBytes(e.blobSize)
        }, ${e.pending.length}/${e.members.length} pending${e.failure ? ` (${e.failure})` : ""}`,
      );
    }
    for (const a of r.agents) {
      if (a.state !== "active") {
        lines.push(`    ${a.nodeId}: ${a.state}${a.detail ? ` ${a.detail}` : ""}`);
      }
    }
  }
  return lines;
}
