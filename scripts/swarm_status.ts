/**
 * The status side of scripts/swarm-netns.sh (the throttled-links benchmark behind
 * `deno task bench:swarm`): watches the control plane's `GET /v1/status` from the
 * operator's namespace and turns what it saw into one result record.
 *
 * Modes (one per call; answers on stdout, progress and failures on stderr):
 * - `publish FROM` (stdin: `poolboy publish --json`): prints `DIGEST SIZE PATCH`, PATCH
 *   the size of the patch from version FROM, or `-`.
 * - `rollout` (stdin: `poolboy rollout --json`): prints the rollout id.
 * - `wait-online --url URL --devices N --timeout S`: polls until N devices are online.
 * - `wait-done --url URL --model M --digest D --devices N --rollout ID --timeout S
 *   [--progress]`: polls until N devices are `active` in rollout ID and run D; prints
 *   the last status report as JSON. A rollout that halts, is aborted or superseded ends
 *   the wait at once, and so does a stall (STALL_MS without a new done device nor a byte
 *   served by the control plane or any device: e.g. every device left has failed for
 *   good); then, as on a timeout, it prints one line saying why and exits 1.
 * - `snapshot --url URL`: prints one status report as JSON.
 * - `result --before F --after F --end F ...`: the `SwarmResult` JSON of one run.
 *
 * Network modes read POOLBOY_TOKEN (a deployer's API token). Every poll has a
 * deadline and every wait a timeout; answers are parsed as untrusted JSON.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { RolloutReport, StatusReport } from "../controlplane/api_types.ts";
import { InvalidArgumentError, UsageError } from "../kernel/errors.ts";

/** One poll's deadline. */
const POLL_TIMEOUT_MS = 5_000;
/** Between polls (done times come from the control plane's clock, not from the polls). */
const POLL_INTERVAL_MS = 1_000;
/** Between progress lines of `wait-done --progress`. */
const PROGRESS_EVERY_MS = 10_000;
/** No progress for this long ends `wait-done` (rows, control-plane and device served bytes). */
const STALL_MS = 90_000;
/** Largest status answer read (a few hundred devices fit many times over). */
const MAX_STATUS_BYTES = 32 * 1024 * 1024;

/** What one run of swarm-netns.sh measured (the line `swarm-netns: result {...}`). */
export interface SwarmResult {
  readonly devices: number;
  readonly rate: string;
  readonly delay: string;
  /** false: the kernel has no sch_netem, the links were rate-limited only. */
  readonly delayApplied: boolean;
  readonly cpShaped: boolean;
  readonly patchBytes: number;
  readonly rolloutId: number;
  /** Rollout start → each device reported v2 active (control plane clock), ascending. */
  readonly doneMs: number[];
  readonly doneP50S: number;
  readonly doneMaxS: number;
  /** Blob bytes the control plane served during the rollout (its own count). */
  readonly cpServedBytes: number;
  /** cpServedBytes ÷ patchBytes: 1.0 is one patch for the region. */
  readonly egressRatio: number;
  /** Bytes the control plane's eth0 sent meanwhile (blobs, datagrams, API answers, TCP). */
  readonly cpTxBytes: number;
  /** Bytes each device served to peers during the rollout (its blob server's count). */
  readonly uploads: Record<string, number>;
  readonly maxUploadBytes: number;
  /** Devices that served at least one byte to a peer. */
  readonly uploaders: number;
  /** Each election of the rollout: leader, state, failure. */
  readonly elections: { leader: string | null; state: string; failure: string | null }[];
  readonly cpu: {
    readonly cpus: number;
    /** Share of all CPUs busy between rollout and done, whoever used them (1.0 = saturated). */
    readonly busyShare: number;
    /** The control plane's and agents' CPU seconds ÷ (window × cpus): this fleet's share. */
    readonly fleetShare: number;
    /** Rollout → every device seen done, seconds (the CPU window). */
    readonly windowS: number;
    readonly cpCpuS: number;
    readonly agentsCpuS: number;
  };
}

/** Parses untrusted JSON text as an object, or throws. */
function parseObject(text: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(`${what}: not JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`${what}: not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** A status report, checked for the fields this script reads. */
function asStatus(text: string, what: string): StatusReport {
  const o = parseObject(text, what);
  const cp = o.controlPlane as { served?: unknown } | undefined;
  if (!Array.isArray(o.agents) || !Array.isArray(o.rollouts) || typeof cp?.served !== "number") {
    throw new InvalidArgumentError(`${what}: not a status report`);
  }
  return o as unknown as StatusReport;
}

/** One `GET /v1/status`, with a deadline and a size bound. */
async function fetchStatus(url: string): Promise<StatusReport> {
  const token = Deno.env.get("POOLBOY_TOKEN") ?? "";
  const response = await fetch(`${url}/v1/status`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(POLL_TIMEOUT_MS),
  });
  const text = await response.text();
  if (text.length > MAX_STATUS_BYTES) throw new InvalidArgumentError("status answer too large");
  if (!response.ok) {
    throw new InvalidArgumentError(`GET /v1/status: HTTP ${response.status} ${text.slice(0, 200)}`);
  }
  return asStatus(text, "GET /v1/status");
}

/** Polls until `done(status)` or the timeout; null on timeout. */
async function pollUntil(
  url: string,
  timeoutS: number,
  done: (s: StatusReport) => boolean,
  onPoll: (s: StatusReport | null, error: string) => void = () => {},
): Promise<StatusReport | null> {
  const deadline = Date.now() + timeoutS * 1000;
  while (Date.now() < deadline) {
    try {
      const status = await fetchStatus(url);
      onPoll(status, "");
      if (done(status)) return status;
    } catch (e) {
      onPoll(null, (e as Error).message);
    }
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
  return null;
}

/** The rollout `id` in a status report. */
function rolloutOf(status: StatusReport, id: number): RolloutReport | undefined {
  return status.rollouts.find((r) => r.id === id);
}

/** Rollout states that end a wait for it: it will not finish by itself. */
const STOPPED_STATES: ReadonlySet<string> = new Set(["halted", "aborted", "superseded"]);

/** What changes while a rollout makes progress: done rows and bytes served by anyone. */
function progressKey(s: StatusReport, model: string, digest: string, id: number): string {
  const served = s.agents.reduce((sum, a) => sum + a.served, 0);
  return `${doneRows(s, model, digest, id)} ${s.controlPlane.served} ${served}`;
}

/** Rollout rows of devices that run `digest` of `model` and are `active`. */
function doneRows(status: StatusReport, model: string, digest: string, id: number): number {
  const running = new Set(
    status.agents.filter((a) => a.active?.[model] === digest).map((a) => a.nodeId),
  );
  const rollout = rolloutOf(status, id);
  return (rollout?.agents ?? []).filter((a) => a.state === "active" && running.has(a.nodeId))
    .length;
}

/** A one-line account of a rollout's rows: `active 3, downloading 5`. */
function stateCounts(rollout: RolloutReport | undefined): string {
  const counts = new Map<string, number>();
  for (const a of rollout?.agents ?? []) counts.set(a.state, (counts.get(a.state) ?? 0) + 1);
  return [...counts].map(([s, n]) => `${s} ${n}`).join(", ") || "no rows yet";
}

/** The p-quantile (0..1) of ascending values, nearest rank. */
export function quantile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length)));
  return sorted[rank - 1];
}

/** Builds the result of one run from the three status reports and the script's counters. */
export function buildResult(
  before: StatusReport,
  after: StatusReport,
  end: StatusReport,
  n: Readonly<Record<string, string>>,
): SwarmResult {
  const num = (name: string): number => {
    const v = Number(n[name]);
    if (!Number.isFinite(v)) throw new UsageError(`result: --${name} must be a number`);
    return v;
  };
  const patchBytes = num("patch-bytes");
  const rollout = after.rollouts.at(-1);
  if (!rollout) throw new InvalidArgumentError("result: no rollout in the status report");
  const doneMs = rollout.agents.filter((a) => a.state === "active")
    .map((a) => a.updated - rollout.created).sort((a, b) => a - b);
  const servedBefore = new Map(before.agents.map((a) => [a.nodeId, a.served]));
  const uploads: Record<string, number> = {};
  for (const a of end.agents) uploads[a.nodeId] = a.served - (servedBefore.get(a.nodeId) ?? 0);
  const uploadValues = Object.values(uploads);
  const cpServedBytes = end.controlPlane.served - before.controlPlane.served;
  // Optional (0: unknown), so that a result is built from an older helper's counters too.
  const windowMs = Number(n["window-ms"] ?? "0") || 0;
  const busy = num("busy-ticks");
  const total = num("total-ticks");
  return {
    devices: num("devices"),
    rate: n.rate ?? "",
    delay: n.delay ?? "",
    delayApplied: n.netem === "1",
    cpShaped: n["cp-shaped"] === "1",
    patchBytes,
    rolloutId: rollout.id,
    doneMs,
    doneP50S: quantile(doneMs, 0.5) / 1000,
    doneMaxS: (doneMs.at(-1) ?? 0) / 1000,
    cpServedBytes,
    egressRatio: patchBytes > 0 ? cpServedBytes / patchBytes : 0,
    cpTxBytes: num("cp-tx-bytes"),
    uploads,
    maxUploadBytes: Math.max(0, ...uploadValues),
    uploaders: uploadValues.filter((v) => v > 0).length,
    elections: rollout.elections.map((e) => ({
      leader: e.leader,
      state: e.state,
      failure: e.failure,
    })),
    cpu: {
      cpus: num("cpus"),
      busyShare: total > 0 ? busy / total : 0,
      fleetShare: windowMs > 0 && num("cpus") > 0
        ? (num("cp-cpu-ms") + num("agents-cpu-ms")) / (windowMs * num("cpus"))
        : 0,
      windowS: windowMs / 1000,
      cpCpuS: num("cp-cpu-ms") / 1000,
      agentsCpuS: num("agents-cpu-ms") / 1000,
    },
  };
}

/** Reads all of stdin as text (bounded). */
async function stdinText(): Promise<string> {
  const text = await new Response(Deno.stdin.readable).text();
  if (text.length > MAX_STATUS_BYTES) throw new InvalidArgumentError("stdin too large");
  return text;
}

/** Runs one mode; returns the exit code. */
async function main(args: string[]): Promise<number> {
  const [mode, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      devices: { type: "string" },
      timeout: { type: "string" },
      model: { type: "string" },
      digest: { type: "string" },
      rollout: { type: "string" },
      progress: { type: "boolean" },
      before: { type: "string" },
      after: { type: "string" },
      end: { type: "string" },
      "patch-bytes": { type: "string" },
      rate: { type: "string" },
      delay: { type: "string" },
      netem: { type: "string" },
      "cp-shaped": { type: "string" },
      "cp-tx-bytes": { type: "string" },
      "busy-ticks": { type: "string" },
      "total-ticks": { type: "string" },
      cpus: { type: "string" },
      "window-ms": { type: "string" },
      "cp-cpu-ms": { type: "string" },
      "agents-cpu-ms": { type: "string" },
    },
  });
  const url = values.url ?? "";
  const timeoutS = Number(values.timeout ?? "60");
  const devices = Number(values.devices ?? "0");
  switch (mode) {
    case "publish": {
      const o = parseObject(await stdinText(), "publish");
      const version = o.version as { digest?: unknown; size?: unknown } | undefined;
      const patches = Array.isArray(o.patches)
        ? o.patches as { from?: unknown; size?: unknown }[]
        : [];
      const patch = patches.find((p) => p.from === (positionals[0] ?? ""));
      console.log(
        `${String(version?.digest)} ${String(version?.size)} ${
          typeof patch?.size === "number" ? patch.size : "-"
        }`,
      );
      return 0;
    }
    case "rollout": {
      const o = parseObject(await stdinText(), "rollout");
      if (typeof o.id !== "number") throw new InvalidArgumentError("rollout: no id");
      console.log(o.id);
      return 0;
    }
    case "wait-online": {
      let online = 0;
      const status = await pollUntil(url, timeoutS, (s) => {
        online = s.agents.filter((a) => a.online).length;
        return online >= devices;
      });
      if (!status) console.error(`wait-online: ${online}/${devices} online after ${timeoutS} s`);
      return status ? 0 : 1;
    }
    case "wait-done": {
      const model = values.model ?? "";
      const digest = values.digest ?? "";
      const id = Number(values.rollout);
      const start = Date.now();
      let lastLine = 0;
      let last: StatusReport | null = null;
      let lastError = "";
      let servedAtStart: number | null = null;
      let key = "";
      let keySince = Date.now();
      let stalled = false;
      const status = await pollUntil(
        url,
        timeoutS,
        (s) => {
          const k = progressKey(s, model, digest, id);
          if (k !== key) [key, keySince] = [k, Date.now()];
          stalled = Date.now() - keySince >= STALL_MS;
          return doneRows(s, model, digest, id) >= devices ||
            STOPPED_STATES.has(rolloutOf(s, id)?.state ?? "") || stalled;
        },
        (s, error) => {
          if (s) last = s;
          if (s && servedAtStart === null) servedAtStart = s.controlPlane.served;
          lastError = error;
          if (values.progress && Date.now() - lastLine >= PROGRESS_EVERY_MS && s) {
            lastLine = Date.now();
            const t = ((Date.now() - start) / 1000).toFixed(0);
            console.error(
              `swarm-netns:   ${t} s: ${doneRows(s, model, digest, id)}/${devices} done; ${
                stateCounts(rolloutOf(s, id))
              }; control plane served ${s.controlPlane.served - (servedAtStart ?? 0)} bytes since`,
            );
          }
        },
      );
      const stopped = status !== null && doneRows(status, model, digest, id) < devices;
      if (!status || stopped) {
        const s: StatusReport | null = last;
        const rollout = s ? rolloutOf(s, id) : undefined;
        const created = rollout?.created ?? 0;
        const doneMs = (rollout?.agents ?? []).filter((a) => a.state === "active")
          .map((a) => a.updated - created).sort((a, b) => a - b);
        const elections = (rollout?.elections ?? []).map((e) =>
          `${e.state}${e.failure ? ` (${e.failure})` : ""} leader ${e.leader}`
        );
        const why = !stopped
          ? `timeout after ${timeoutS} s`
          : STOPPED_STATES.has(rollout?.state ?? "")
          ? `rollout ${rollout?.state}: ${rollout?.reason}`
          : `stalled: no device done and no byte served for ${STALL_MS / 1000} s`;
        const line = `${why}; ${s ? doneRows(s, model, digest, id) : 0}/${devices} done (at ${
          doneMs.map((ms) => (ms / 1000).toFixed(1)).join(", ") || "-"
        } s); ${stateCounts(rollout)}; elections: ${elections.join("; ") || "none"}${
          lastError ? `; last error ${lastError}` : ""
        }`;
        console.error(`wait-done: ${line}`);
        console.log(line);
        return 1;
      }
      console.log(JSON.stringify(status));
      return 0;
    }
    case "snapshot":
      console.log(JSON.stringify(await fetchStatus(url)));
      return 0;
    case "result": {
      const read = async (name: "before" | "after" | "end") => {
        const path = values[name];
        if (!path) throw new UsageError(`result: --${name} FILE is required`);
        return asStatus(await Deno.readTextFile(path), path);
      };
      const counters: Record<string, string> = {};
      for (const [k, v] of Object.entries(values)) if (typeof v === "string") counters[k] = v;
      const result = buildResult(await read("before"), await read("after"), await read("end"), {
        ...counters,
      });
      console.log(JSON.stringify(result));
      return 0;
    }
    default:
      throw new UsageError(`swarm_status: unknown mode ${mode ?? "(none)"}`);
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`swarm_status: ${(e as Error).message}`);
    Deno.exit(e instanceof UsageError ? 2 : 1);
  }
}
