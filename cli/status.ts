/**
 * `poolboy status`: the fleet as the control plane sees it. It asks for the
 * summary first (`GET /v1/status?view=summary`, small whatever the fleet's
 * size); a fleet of at most `FULL_REPORT_UP_TO` devices is then shown in full
 * (`GET /v1/status`) as it always was, a larger one as counts (`--full` asks
 * for the whole report anyway, `--summary` for the counts).
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { formatBytes } from "../kernel/units.ts";
import type {
  DeviceInfo,
  ElectionReport,
  ElectionTransfer,
  StatusReport,
  StatusSummary,
} from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { apiTarget, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

/** Fleets of at most this many devices are shown in full unless `--summary`. */
export const FULL_REPORT_UP_TO = 200;
const FULL_REPORT_UP_TO_TEXT = String(FULL_REPORT_UP_TO);

export const STATUS_HELP = `poolboy status — agents, versions and rollouts of a fleet

Usage: poolboy status --control-plane ADDR [--token T] [--json] [--summary | --full]

Shows each agent, by region then node id (online, the version it runs, bytes
it served to peers in all, across its restarts, and when it was last heard
from), each rollout (started, finished, how long it took) with every agent's
state in it and each election (leader, what it moves: patch, whole file or a
local switch, started and how long it took), and the bytes the control plane
itself served. A legend line says what each state means. Times are UTC; the
--json fields are listed in docs/status-json.md. A fleet of more
than ${FULL_REPORT_UP_TO_TEXT} devices is shown as counts: devices online and offline by region,
each rollout's agents by state, each election's members (GET /v1/status?view=summary;
GET /v1/devices?offset=N&limit=M lists the devices page by page).

Options:
  --control-plane ADDR  the control plane: 100.64.0.1 (API port 7402), IP:PORT or http://IP:PORT
${TOKEN_OPTION_HELP} (role viewer or above)
  --json                the whole report as JSON (GET /v1/status); with --summary
                        the summary's JSON
  --summary             counts only, whatever the fleet's size
  --full                the whole report, whatever the fleet's size
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused (401: no, unknown or revoked token; 403: the
token's role is too low), 3 the control plane cannot be reached.`;

/** Runs `status`. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("status", args, {
    "control-plane": { type: "string" },
    summary: { type: "boolean" },
    full: { type: "boolean" },
    ...tokenOptions,
  });
  if (values.help) {
    println(STATUS_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`status takes no arguments, got "${positionals[0]}"`);
  }
  if (values.summary && values.full) throw new UsageError("status: --summary or --full, not both");
  const api = apiTarget("status", values);
  if (values.full || (values.json && !values.summary)) {
    return printReport(await callApi<StatusReport>(api, "GET", "/v1/status"), values.json);
  }
  const answer = await callApi<StatusSummary | StatusReport>(api, "GET", "/v1/status?view=summary");
  // A control plane without the summary answers with the whole report.
  if (!isSummary(answer)) return printReport(answer, values.json);
  if (!values.summary && answer.devices.total <= FULL_REPORT_UP_TO) {
    return printReport(await callApi<StatusReport>(api, "GET", "/v1/status"), values.json);
  }
  if (values.json) printJson(answer);
  else for (const line of formatSummary(answer)) println(line);
  return 0;
}

function isSummary(answer: StatusSummary | StatusReport): answer is StatusSummary {
  return "view" in answer && answer.view === "summary";
}

function printReport(report: StatusReport, json: boolean | undefined): number {
  if (json) printJson(report);
  else for (const line of formatStatus(report)) println(line);
  return 0;
}

/** One line that says what each state in the report means. */
export const STATE_LEGEND =
  "states: waiting = not admitted yet (canary/rolling), pending = in its region's election, leader = fetching for its region, downloading/downloaded/applied = updating, active = runs the version, failed = refused or broke (its reason follows), offline = silent; elections: announcing -> leading -> closed (or failed)";

/** A time as UTC, to the second: `2026-11-30 02:50:01Z`. */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.[0-9]+Z$/, "Z");
}

/** A duration: `850 ms`, `8.2 s`, `3 min 05 s`, `2 h 03 min`. */
export function formatDuration(ms: number): string {
  if (!(ms >= 0)) return "?";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, "0")} min`;
}

/** A rollout's start, end and how long it took (or has run, when the report says `now`). */
function rolloutTimes(
  r: { created: number; finished: number | null; state: string },
  now: number | undefined,
): string {
  const started = `started ${formatTime(r.created)}`;
  if (r.finished !== null) {
    return `${started}, ${r.state} ${formatTime(r.finished)} after ${
      formatDuration(r.finished - r.created)
    }`;
  }
  return now === undefined ? started : `${started}, running for ${formatDuration(now - r.created)}`;
}

/** What an election moves, as its line says it. */
function transferText(e: { transfer?: ElectionTransfer; base: string | null }): string {
  const transfer = e.transfer ?? (e.base ? "patch" : "wholeFile");
  return transfer === "patch" ? "patch" : transfer === "wholeFile" ? "whole file" : "local switch";
}

/** An election's start and end, when the control plane reports them. */
function electionTimes(
  e: { started?: number | null; finished?: number | null; state: string },
  now: number | undefined,
): string {
  if (e.started === undefined || e.started === null) return "";
  const started = `; started ${formatTime(e.started)}`;
  if (e.finished !== undefined && e.finished !== null) {
    return `${started}, ${e.state} after ${formatDuration(e.finished - e.started)}`;
  }
  return now === undefined ? started : `${started}, for ${formatDuration(now - e.started)}`;
}

/** An election's one line (the full report and the summary share it). */
function electionLine(
  e: Pick<
    ElectionReport,
    | "manifestId"
    | "region"
    | "state"
    | "leader"
    | "base"
    | "blobSize"
    | "failure"
    | "transfer"
    | "started"
    | "finished"
  >,
  pending: number,
  members: number,
  now: number | undefined,
): string {
  const moved = transferText(e);
  return `    election ${e.manifestId} ${e.region}: ${e.state}${
    e.leader ? `, leader ${e.leader}` : ""
  }, ${
    moved === "local switch"
      ? "local switch (nothing downloaded)"
      : `${moved} ${formatBytes(e.blobSize)}`
  }, ${pending}/${members} pending${e.failure ? ` (${e.failure})` : ""}${electionTimes(e, now)}`;
}

/** Regions listed one by one in the summary; more are counted. */
const SUMMARY_REGIONS = 50;

/** The human-readable summary: counts instead of lists. */
export function formatSummary(summary: StatusSummary): string[] {
  const lines = [
    `control plane (boot ${summary.boot}): served ${formatBytes(summary.controlPlane.served)}`,
  ];
  lines.push(...formatVersions(summary.versions, summary.patches));
  const d = summary.devices;
  const regions = Object.entries(d.byRegion);
  lines.push(
    "",
    `agents (${d.total}): ${d.online} online, ${d.offline} offline, in ${regions.length} regions`,
  );
  for (const [region, c] of regions.slice(0, SUMMARY_REGIONS)) {
    lines.push(`  ${region.padEnd(10)} ${c.total}: ${c.online} online, ${c.offline} offline`);
  }
  if (regions.length > SUMMARY_REGIONS) {
    lines.push(`  ... and ${regions.length - SUMMARY_REGIONS} more regions`);
  }
  lines.push("", `rollouts (${summary.rollouts.length}):`);
  if (summary.rollouts.length > 0) lines.push(`  ${STATE_LEGEND}`);
  for (const r of summary.rollouts) {
    const states = Object.entries(r.agentStates).map(([state, n]) => `${state} ${n}`).join(", ");
    lines.push(
      `  #${r.id} ${r.model} ${r.version} → ${r.region ?? "all regions"}: ${r.state}, ${
        r.agentStates.active ?? 0
      }/${r.agents} agents active [${r.strategy}${r.rollback ? ", rollback" : ""}]${
        r.reason ? ` (${r.reason})` : ""
      }`,
    );
    lines.push(`    ${rolloutTimes(r, summary.now)}`);
    if (states) lines.push(`    agents: ${states}`);
    for (const e of r.elections) lines.push(electionLine(e, e.pending, e.members, summary.now));
  }
  return lines;
}

/** The versions and patches part of both views. */
function formatVersions(
  versions: StatusReport["versions"],
  patches: StatusReport["patches"],
): string[] {
  const versionName = new Map(versions.map((v) => [v.digest, `${v.model} ${v.version}`]));
  const name = (digest: string) => versionName.get(digest) ?? digest.slice(0, 16);
  const lines = ["", `versions (${versions.length}):`];
  for (const v of versions) {
    const release = v.signed ? `signed, counter ${v.counter}` : "unsigned";
    lines.push(
      `  ${v.model} ${v.version}: ${formatBytes(v.size)}, blake3 ${v.digest}, ${release}`,
    );
  }
  for (const p of patches) {
    lines.push(`  patch ${name(p.base)} → ${name(p.target)}: ${formatBytes(p.size)}`);
  }
  return lines;
}

/** Devices in the order the status shows them: by region, then node id. */
function byRegionThenNode(a: DeviceInfo, b: DeviceInfo): number {
  if (a.region !== b.region) return a.region < b.region ? -1 : 1;
  return a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0;
}

/** The human-readable status report. */
export function formatStatus(report: StatusReport): string[] {
  const versionName = new Map(report.versions.map((v) => [v.digest, `${v.model} ${v.version}`]));
  const name = (digest: string) => versionName.get(digest) ?? digest.slice(0, 16);
  const lines = [
    `control plane (boot ${report.boot}): served ${formatBytes(report.controlPlane.served)}`,
  ];
  lines.push(...formatVersions(report.versions, report.patches));
  lines.push("", `agents (${report.agents.length}), by region then node id:`);
  for (const a of [...report.agents].sort(byRegionThenNode)) {
    const models = Object.values(a.active).map(name).join(", ") || "no model";
    lines.push(
      `  ${a.nodeId.padEnd(16)} ${a.region.padEnd(10)} ${
        a.online ? "online " : "OFFLINE"
      } ${models}; served ${formatBytes(a.served)}; last seen ${
        formatDuration(a.lastSeenMsAgo)
      } ago${a.lastSeen === undefined ? "" : ` (${formatTime(a.lastSeen)})`}`,
    );
  }
  lines.push("", `rollouts (${report.rollouts.length}):`);
  if (report.rollouts.length > 0) lines.push(`  ${STATE_LEGEND}`);
  for (const r of report.rollouts) {
    const done = r.agents.filter((a) => a.state === "active").length;
    lines.push(
      `  #${r.id} ${r.model} ${r.version} → ${
        r.region ?? "all regions"
      }: ${r.state}, ${done}/${r.agents.length} agents active [${r.strategy}${
        r.rollback ? ", rollback" : ""
      }]${r.reason ? ` (${r.reason})` : ""}`,
    );
    lines.push(`    ${rolloutTimes(r, report.now)}`);
    for (const e of r.elections) {
      lines.push(electionLine(e, e.pending.length, e.members.length, report.now));
    }
    for (const a of r.agents) {
      if (a.state !== "active") {
        lines.push(`    ${a.nodeId}: ${a.state}${a.detail ? ` (${a.detail})` : ""}`);
      }
    }
  }
  return lines;
}
