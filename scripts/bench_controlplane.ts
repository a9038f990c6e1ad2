/**
 * `deno task bench:cp --devices N [--json]`: how the real control plane holds
 * a large fleet. Starts the control plane process on 127.179.0.1 as
 * `deno task controlplane` runs it (the same V8 flags; its admin token made
 * with `poolboy token create` through testkit/fleet_harness.ts), then 1–2 load processes
 * (scripts/cp_load.ts) that enrol N device keys (`POST /v1/enroll`, one
 * token with N uses) and send authenticated Heartbeats from N distinct
 * loopback addresses (127.180.0.1 onwards), one per device every
 * `--interval` (default 10 s; the control plane runs with
 * `--agent-timeout 30s`). After every device has been heard from it measures
 * a steady phase (`--steady`, default 20 s), then publishes a small model and
 * rolls it out to every region (the simulated devices bid, the first bidder
 * leads and reports ready at once, everyone reports the target active) and
 * measures until the rollout is done (or `--rollout-timeout`).
 *
 * Measured: the control plane's peak RSS (VmHWM, decimal MB) and CPU seconds
 * (/proc), its UDP socket's kernel receive queue and kernel drops
 * (/proc/PID/net/udp: a growing backlog shows here), its own datagram
 * counters, the latency of `GET /v1/status` polled every 250 ms (p50/p99 per
 * phase; `--status-view summary`, the default, polls `?view=summary`, `full`
 * the whole report as before), the reconcile tick's duration if the status report has it
 * (`controlPlane.tick`), how long after the rollout every election of every
 * region had closed, and when the rollout was done.
 *
 * Run it in a private network namespace so that nobody else's 127.x
 * addresses clash: `unshare -n bash -c 'ip link set lo up; deno task bench:cp --devices 10000'`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { StatusReport, StatusSummary } from "../controlplane/api_types.ts";
import { PORTS, runPoolboy } from "../testkit/fleet_harness.ts";
import type { LoadConfig, LoadStats } from "./cp_load.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const CP_HOST = "127.179.0.1";
const MB = 1_000_000;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    devices: { type: "string", default: "1000" },
    regions: { type: "string", default: "20" },
    interval: { type: "string", default: "10" },
    steady: { type: "string", default: "20" },
    "rollout-timeout": { type: "string", default: "120" },
    loads: { type: "string", default: "2" },
    "status-view": { type: "string", default: "summary" },
    "cp-v8-flags": { type: "string", default: "--max-semi-space-size=1,--max-old-space-size=160" },
    json: { type: "boolean" },
    keep: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`deno task bench:cp [--devices 1000] [--regions 20] [--interval 10] [--steady 20]
                    [--rollout-timeout 120] [--loads 2] [--status-view summary|full]
                    [--cp-v8-flags F] [--json] [--keep]

Starts the real control plane and --loads load processes simulating --devices
devices (own key, own 127.180.x.y address, enrolled with POST /v1/enroll,
authenticated heartbeats every --interval seconds) over --regions regions;
measures a steady phase of --steady seconds, then a rollout to every region
until it is done. Prints the control plane's peak RSS, CPU, UDP backlog and
drops, status API latency (p50/p99, polled every 250 ms: GET /v1/status?view=summary,
or the whole report with --status-view full) and election/rollout times.
--cp-v8-flags: the control plane's V8 flags (default those of deno task controlplane,
--max-semi-space-size=1,--max-old-space-size=160). Run it in a private network namespace:
  unshare -n bash -c 'ip link set lo up; deno task bench:cp --devices 10000'`);
  Deno.exit(0);
}

function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`bench:cp: --${name} "${text}" is not a positive number`);
    Deno.exit(2);
  }
  return n;
}

const devices = Math.floor(positive("devices", values.devices));
const regions = Math.floor(positive("regions", values.regions));
const intervalMs = positive("interval", values.interval) * 1000;
const steadyMs = positive("steady", values.steady) * 1000;
const rolloutTimeoutMs = positive("rollout-timeout", values["rollout-timeout"]) * 1000;
const loads = Math.min(Math.floor(positive("loads", values.loads)), devices);
const statusView = values["status-view"];
const cpV8Flags = values["cp-v8-flags"];
if (!/^--[a-z0-9-]+(=[0-9]+)?(,--[a-z0-9-]+(=[0-9]+)?)*$/.test(cpV8Flags)) {
  console.error(`bench:cp: --cp-v8-flags "${cpV8Flags}": --flag[=N],...`);
  Deno.exit(2);
}
if (statusView !== "summary" && statusView !== "full") {
  console.error(`bench:cp: --status-view "${statusView}": summary or full`);
  Deno.exit(2);
}
if (devices > 60_000) {
  console.error("bench:cp: --devices: at most 60000");
  Deno.exit(2);
}

function progress(line: string): void {
  console.error(`bench:cp: ${line}`);
}

// --- /proc readings of the control plane ---

interface ProcSample {
  readonly rssMB: number;
  readonly hwmMB: number;
  readonly cpuS: number;
  /** Bytes queued in the UDP socket's receive buffer. */
  readonly rxQueue: number;
  /** Datagrams the kernel dropped at the socket (its buffer was full). */
  readonly kernelDrops: number;
}

const CLK_TCK = 100;

/**
 * Reads /proc/PID/{status,stat,net/udp} through `cat`: Deno grants /proc/PID
 * of another process only with --allow-all.
 */
async function procFiles(pid: number): Promise<[string, string, string]> {
  const out = await new Deno.Command("cat", {
    args: [`/proc/${pid}/status`, `/proc/${pid}/stat`, `/proc/${pid}/net/udp`],
    stdout: "piped",
    stderr: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const statStart = text.indexOf(`${pid} (`, text.indexOf("VmHWM"));
  const udpStart = text.indexOf("  sl ", statStart);
  return [text.slice(0, statStart), text.slice(statStart, udpStart), text.slice(udpStart)];
}

async function procSample(pid: number): Promise<ProcSample> {
  const [status, stat, udp] = await procFiles(pid);
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuS = (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  const local = `${hexAddress(CP_HOST)}:${PORTS.cpUdp.toString(16).toUpperCase().padStart(4, "0")}`;
  let rxQueue = 0;
  let kernelDrops = 0;
  for (const line of udp.split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[1] !== local) continue;
    rxQueue = parseInt(cols[4].split(":")[1], 16);
    kernelDrops = Number(cols.at(-1));
  }
  return {
    rssMB: kb("VmRSS") * 1024 / MB,
    hwmMB: kb("VmHWM") * 1024 / MB,
    cpuS,
    rxQueue,
    kernelDrops,
  };
}

/** An IPv4 address as /proc/net/udp spells it (little-endian hex). */
function hexAddress(ip: string): string {
  return ip.split(".").reverse().map((b) => Number(b).toString(16).toUpperCase().padStart(2, "0"))
    .join("");
}

// --- load processes ---

interface Load {
  readonly child: Deno.ChildProcess;
  readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  ready: Promise<void>;
  stats: LoadStats | undefined;
}

function startLoad(config: LoadConfig): Load {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--config=${ROOT}deno.json`,
      "--allow-net=127.0.0.0/8",
      `${ROOT}scripts/cp_load.ts`,
      JSON.stringify(config),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { promise: ready, resolve: resolveReady, reject: rejectReady } = Promise
    .withResolvers<void>();
  const load: Load = { child, writer: child.stdin.getWriter(), ready, stats: undefined };
  void (async () => {
    let buffered = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const value = JSON.parse(line) as { ready?: number; stats?: LoadStats };
        if (value.ready !== undefined) resolveReady();
        if (value.stats !== undefined) load.stats = value.stats;
      }
    }
    rejectReady(new Error("a load process exited before it was ready"));
  })();
  return load;
}

// --- the control plane process ---

/** The control plane under test: a child process, its API and its admin token. */
interface ControlPlaneProcess {
  readonly child: Deno.ChildProcess;
  readonly url: string;
  readonly token: string;
  api<T>(method: string, path: string, body?: BodyInit): Promise<T>;
  stop(): Promise<void>;
}

/** `poolboy ARGS`; its stdout, or throws with its stderr. */
async function poolboy(args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await runPoolboy(args, env);
  if (r.code !== 0) throw new Error(`poolboy ${args[0]} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * Starts `poolboy controlplane` on `data` with the V8 flags and permissions of
 * `deno task controlplane` (stderr to `data.log`) and waits for its API.
 */
async function startControlPlane(data: string, args: string[]): Promise<ControlPlaneProcess> {
  await Deno.mkdir(data, { recursive: true });
  const { token } = JSON.parse(
    await poolboy([
      "token",
      "create",
      "--data",
      data,
      "--role",
      "admin",
      "--name",
      "bench",
      "--json",
      "--quiet",
    ]),
  ) as { token: string };
  const log = await Deno.open(`${data}.log`, { write: true, create: true, append: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--config=${ROOT}deno.json`,
      `--v8-flags=${cpV8Flags}`,
      "--allow-read",
      "--allow-write",
      "--allow-net=127.0.0.0/8",
      `${ROOT}mod.ts`,
      "controlplane",
      "--bind",
      CP_HOST,
      "--data",
      data,
      ...args,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logged = child.stderr.pipeTo(log.writable).catch(() => {});
  const url = `http://${CP_HOST}:${PORTS.cpHttp}`;
  const api = async <T>(method: string, path: string, body?: BodyInit): Promise<T> => {
    const r = await fetch(`${url}${path}`, {
      method,
      body,
      headers: { authorization: `Bearer ${token}` },
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
    return JSON.parse(text) as T;
  };
  const deadline = Date.now() + 30_000;
  while (true) {
    const up = await fetch(`${url}/health`).then(async (r) => {
      await r.body?.cancel();
      return r.ok;
    }, () => false);
    if (up) break;
    if (Date.now() > deadline) throw new Error("the control plane's API did not answer in 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    url,
    token,
    api,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
      await logged;
    },
  };
}

// --- the run ---

interface PhaseStats {
  seconds: number;
  cpuS: number;
  cpuPercent: number;
  statusP50Ms: number;
  statusP99Ms: number;
  statusMaxMs: number;
  statusRequests: number;
  statusBytes: number;
  datagramsPerS: number;
  rxQueueMaxBytes: number;
  kernelDrops: number;
  tickMaxMs: number | null;
  tickMeanMs: number | null;
  loadLagMaxMs: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

interface TickInfo {
  readonly count: number;
  readonly totalMs: number;
  readonly maxMs: number;
}

/** What the bench reads of a status answer, whichever view it polled. */
interface Polled {
  readonly received: number;
  readonly tick: TickInfo | undefined;
  readonly online: number;
  readonly rollouts: readonly {
    readonly id: number;
    readonly state: string;
    readonly created: number;
    readonly finished: number | null;
    /** Each election's LeaderReady time (undefined: not yet). */
    readonly leaderReady: readonly (number | undefined)[];
    /** Agents on the target. */
    readonly done: number;
  }[];
}

function fromFull(report: StatusReport): Polled {
  return {
    received: report.drops.received ?? 0,
    tick: (report.controlPlane as { tick?: TickInfo }).tick,
    online: report.agents.filter((a) => a.online).length,
    rollouts: report.rollouts.map((r) => ({
      id: r.id,
      state: r.state,
      created: r.created,
      finished: r.finished,
      leaderReady: r.elections.map((e) => e.timeline.leaderReady),
      done: r.agents.filter((a) => a.state === "active").length,
    })),
  };
}

function fromSummary(summary: StatusSummary): Polled {
  return {
    received: summary.drops.received ?? 0,
    tick: summary.controlPlane.tick,
    online: summary.devices.online,
    rollouts: summary.rollouts.map((r) => ({
      id: r.id,
      state: r.state,
      created: r.created,
      finished: r.finished,
      leaderReady: r.elections.map((e) => e.timeline.leaderReady),
      done: r.agentStates.active ?? 0,
    })),
  };
}

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

const dir = await Deno.makeTempDir({ prefix: "poolboy-bench-cp-" });
let cp: ControlPlaneProcess | undefined;
const started: Load[] = [];
try {
  progress(`control plane on ${CP_HOST} (data in ${dir})`);
  cp = await startControlPlane(`${dir}/cp`, [
    "--agent-timeout",
    `${Math.max(30, (3 * intervalMs) / 1000)}s`,
  ]);
  const f = cp;
  const pid = f.child.pid;
  const { token } = await f.api<{ token: string }>(
    "POST",
    "/v1/enrollment-tokens",
    JSON.stringify({ uses: devices, expiresMs: 3_600_000 }),
  );
  const enrolStart = Date.now();
  const per = Math.ceil(devices / loads);
  for (let k = 0; k < loads; k++) {
    const first = k * per;
    const count = Math.min(per, devices - first);
    if (count <= 0) break;
    started.push(startLoad({
      cpHost: CP_HOST,
      cpUdpPort: PORTS.cpUdp,
      apiUrl: f.url,
      enrollToken: token,
      first,
      count,
      regions,
      intervalMs,
      enrollConcurrency: 4,
    }));
  }
  await Promise.all(started.map((l) => l.ready));
  const enrolS = (Date.now() - enrolStart) / 1000;
  const afterEnrol = await procSample(pid);
  progress(
    `${devices} devices enrolled in ${round(enrolS)} s; heartbeating every ${intervalMs / 1000} s`,
  );
  // Everyone heard from at least once before the steady phase.
  await new Promise((r) => setTimeout(r, intervalMs + 2000));

  const get = async (): Promise<{ ms: number; bytes: number; report: Polled }> => {
    const t0 = performance.now();
    const r = await fetch(`${f.url}/v1/status${statusView === "summary" ? "?view=summary" : ""}`, {
      headers: { authorization: `Bearer ${f.token}` },
    });
    const text = await r.text();
    const ms = performance.now() - t0;
    if (!r.ok) throw new Error(`GET /v1/status: HTTP ${r.status} ${text.slice(0, 200)}`);
    const report = statusView === "summary"
      ? fromSummary(JSON.parse(text) as StatusSummary)
      : fromFull(JSON.parse(text) as StatusReport);
    return { ms, bytes: text.length, report };
  };

  /** Polls status every 250 ms while `until` says go on; the phase's numbers. */
  const phase = async (
    name: string,
    until: (report: Polled, elapsedMs: number) => boolean,
  ): Promise<{ stats: PhaseStats; last: Polled }> => {
    progress(`phase ${name}`);
    const begin = Date.now();
    const before = await procSample(pid);
    const first = await get();
    const received0 = first.report.received;
    const tick0 = first.report.tick;
    const latencies: number[] = [];
    let last = first.report;
    let bytes = first.bytes;
    let rxQueueMax = 0;
    let loadLag = 0;
    let kernelDrops = before.kernelDrops;
    while (true) {
      const t = Date.now();
      const s = await get();
      latencies.push(s.ms);
      last = s.report;
      bytes = s.bytes;
      const p = await procSample(pid);
      rxQueueMax = Math.max(rxQueueMax, p.rxQueue);
      kernelDrops = p.kernelDrops;
      for (const l of started) loadLag = Math.max(loadLag, l.stats?.lagMaxMs ?? 0);
      if (!until(last, Date.now() - begin)) break;
      await new Promise((r) => setTimeout(r, Math.max(0, 250 - (Date.now() - t))));
    }
    const after = await procSample(pid);
    const seconds = (Date.now() - begin) / 1000;
    const sorted = latencies.sort((a, b) => a - b);
    const tick1 = last.tick;
    const ticks = tick0 && tick1 ? tick1.count - tick0.count : 0;
    return {
      last,
      stats: {
        seconds: round(seconds),
        cpuS: round(after.cpuS - before.cpuS, 2),
        cpuPercent: round((100 * (after.cpuS - before.cpuS)) / seconds),
        statusP50Ms: round(percentile(sorted, 50)),
        statusP99Ms: round(percentile(sorted, 99)),
        statusMaxMs: round(sorted.at(-1) ?? NaN),
        statusRequests: sorted.length,
        statusBytes: bytes,
        datagramsPerS: round((last.received - received0) / seconds),
        rxQueueMaxBytes: rxQueueMax,
        kernelDrops: kernelDrops - before.kernelDrops,
        tickMaxMs: tick1 ? round(tick1.maxMs, 2) : null,
        tickMeanMs: tick0 && tick1 && ticks > 0
          ? round((tick1.totalMs - tick0.totalMs) / ticks, 2)
          : null,
        loadLagMaxMs: loadLag,
      },
    };
  };

  const steady = await phase("steady", (_r, elapsed) => elapsed < steadyMs);
  const afterSteady = await procSample(pid);
  const online = steady.last.online;

  // A rollout to every region: one election per region (nothing installed: the whole file).
  const model = `${dir}/model.bin`;
  const bytes = new Uint8Array(256 * 1024);
  for (let i = 0; i < bytes.length; i += 65_536) {
    crypto.getRandomValues(bytes.subarray(i, i + 65_536));
  }
  await Deno.writeFile(model, bytes);
  await poolboy(
    [
      "publish",
      "--control-plane",
      f.url,
      "--model",
      "bench",
      "--version",
      "v1",
      "--unsigned",
      model,
    ],
    { POOLBOY_TOKEN: f.token },
  );
  const rollout = await f.api<{ id: number }>(
    "POST",
    "/v1/rollouts",
    JSON.stringify({ model: "bench", version: "v1" }),
  );
  const created = Date.now();
  const rolled = await phase("rollout", (report, elapsed) => {
    const r = report.rollouts.find((x) => x.id === rollout.id);
    return r?.state === "running" && elapsed < rolloutTimeoutMs;
  });
  const r = rolled.last.rollouts.find((x) => x.id === rollout.id)!;
  const closedAt = r.leaderReady;
  const allClosed = closedAt.length > 0 && closedAt.every((t) => t !== undefined);
  const electionsClosedS = allClosed
    ? round((Math.max(...(closedAt as number[])) - r.created) / 1000, 2)
    : null;
  const done = r.done;
  const peak = await procSample(pid);
  const result = {
    devices,
    regions,
    heartbeatIntervalS: intervalMs / 1000,
    enrolS: round(enrolS),
    online,
    cpPeakRssMB: round(peak.hwmMB),
    /** The peak so far once every device had enrolled, and after the steady phase. */
    cpPeakRssAfterEnrolMB: round(afterEnrol.hwmMB),
    cpPeakRssAfterSteadyMB: round(afterSteady.hwmMB),
    cpRssMB: round(peak.rssMB),
    cpCpuS: round(peak.cpuS, 1),
    statusView,
    cpV8Flags,
    steady: steady.stats,
    rollout: {
      ...rolled.stats,
      state: r.state,
      elections: r.leaderReady.length,
      electionsClosedS,
      doneS: r.finished === null ? null : round((r.finished - r.created) / 1000, 2),
      wallS: round((Date.now() - created) / 1000, 1),
      done,
    },
  };
  if (values.json) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    const row = (name: string, s: PhaseStats) =>
      `${name.padEnd(8)} ${String(s.cpuPercent).padStart(6)}% ${
        String(s.statusP50Ms).padStart(8)
      } ${String(s.statusP99Ms).padStart(8)} ${String(s.datagramsPerS).padStart(8)} ${
        String(s.rxQueueMaxBytes).padStart(9)
      } ${String(s.kernelDrops).padStart(6)} ${String(s.tickMeanMs ?? "-").padStart(7)} ${
        String(s.tickMaxMs ?? "-").padStart(7)
      } ${String(Math.round(s.statusBytes / 1000)).padStart(7)}`;
    console.log(
      `devices ${devices} (${online} online), regions ${regions}, heartbeat every ${
        intervalMs / 1000
      } s; enrolment ${result.enrolS} s`,
    );
    console.log(
      `control plane: peak RSS ${result.cpPeakRssMB} MB (${result.cpPeakRssAfterEnrolMB} after enrolment, ${result.cpPeakRssAfterSteadyMB} after steady), CPU ${result.cpCpuS} s in all; status polled: ${statusView}`,
    );
    console.log(
      "phase       CPU  st.p50ms st.p99ms  dgram/s rxq.max B  drops tick.ms tick.max  st.kB",
    );
    console.log(row("steady", steady.stats));
    console.log(row("rollout", rolled.stats));
    console.log(
      `rollout: ${r.state}, ${r.leaderReady.length} elections, all closed after ${
        electionsClosedS ?? "-"
      } s, done after ${result.rollout.doneS ?? "-"} s (${done}/${devices} active)`,
    );
  }
} finally {
  for (const l of started) {
    await l.writer.close().catch(() => {});
    try {
      l.child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await l.child.status;
  }
  await cp?.stop();
  if (values.keep) progress(`kept ${dir}`);
  else await Deno.remove(dir, { recursive: true });
}
