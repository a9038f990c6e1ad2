/**
 * `poolboy audit`: the control plane's audit log (GET /v1/audit), newest
 * first: who changed or tried to change what, and every refused call.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import type { AuditEntry, AuditList } from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { apiTarget, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const AUDIT_HELP = `poolboy audit — who did what on the control plane

Usage: poolboy audit --control-plane ADDR [--limit N] [--token T] [--json]

Prints the control plane's audit log, newest first: every call that changes
something (publish, rollout, pause/resume/abort, rollback, release documents)
with its answer, and every call refused for its token (401: none, malformed,
unknown or revoked; 403: too low a role). Each line: time, token name and role
(- when there was none), HTTP status, the call, what it was about, and the
reason. The log keeps its newest 100,000 entries.

Options:
  --control-plane ADDR  the control plane: 100.64.0.1 (API port 7402), IP:PORT or http://IP:PORT
  --limit N             how many entries (1-1000, default 100)
${TOKEN_OPTION_HELP} (role admin)
  --json                { entries: [{ at, token, role, action, target, status, reason }] }
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused (401: no, unknown or revoked token; 403:
the token is not an admin's), 3 the control plane cannot be reached.`;

/** Runs `audit`. */
export async function auditCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("audit", args, {
    "control-plane": { type: "string" },
    limit: { type: "string" },
    ...tokenOptions,
  });
  if (values.help) {
    println(AUDIT_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`audit takes no arguments, got "${positionals[0]}"`);
  }
  const api = apiTarget("audit", values);
  let query = "";
  if (values.limit !== undefined) {
    const n = /^[0-9]{1,4}$/.test(values.limit) ? Number(values.limit) : NaN;
    if (!(n >= 1 && n <= 1000)) {
      throw new UsageError(`--limit: "${values.limit}" is not a whole number from 1 to 1000`);
    }
    query = `?limit=${n}`;
  }
  const { entries } = await callApi<AuditList>(api, "GET", `/v1/audit${query}`);
  if (values.json) printJson({ entries });
  else if (entries.length === 0) println("the audit log is empty");
  else for (const entry of entries) println(formatAuditEntry(entry));
  return 0;
}

/** One line of the audit log (control characters, which no field should hold, shown as "?"). */
export function formatAuditEntry(e: AuditEntry): string {
  const who = e.token === null ? "-" : `${e.token} (${e.role ?? "?"})`;
  const line = `${new Date(e.at).toISOString()} ${who} ${e.status} ${e.action}${
    e.target === null ? "" : ` [${e.target}]`
  }: ${e.reason}`;
  // deno-lint-ignore no-control-regex
  return line.replace(/[\u0000-\u001f\u007f]/g, "?");
}
