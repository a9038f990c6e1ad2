/**
 * `deno task fleet`: a local fleet on loopback, end to end, with a timeline.
 *
 * Starts a control plane and N agents (real `deno run` processes, through
 * testkit/fleet_harness.ts) spread over R regions, each agent on its own
 * 127.0.50.x address (more subnets past 240 agents), in a temporary directory,
 * as a real fleet runs: keys made with `poolboy keygen` and `delegate`, every
 * agent pinning the root key (`--trust-root`), both versions published signed
 * (`--key/--keys`), operator calls with an admin token. Publishes v1 of a synthetic model and rolls it out (whole file per region),
 * then publishes v2 (a few regions rewritten: a patch) and rolls it out. For
 * each rollout it prints, relative to the rollout's creation, every election's
 * milestones and every agent's completion (its first "done" line in cp.log),
 * then what the control plane and each leader served against the ideal (one
 * blob per region) and the naive (one blob per agent). Finally it checks every
 * agent's active file against the published digest. The fleet is always
 * stopped, on Ctrl-C too.
 *
 * Usage: deno task fleet [--agents 12] [--regions 3] [--size 64MiB] [--keep] [--stay] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatBytes, parseSize } from "../kernel/units.ts";
import { hashFile } from "../codec/hash_file.ts";
import type { ElectionReport, StatusReport } from "../controlplane/api_types.ts";
import { type AgentSpec, Fleet } from "../testkit/fleet_harness.ts";
import { writeSegments } from "./bench_pairs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    agents: { type: "string", default: "12" },
    regions: { type: "string", default: "3" },
    size: { type: "string", default: "64MiB" },
    keep: { type: "boolean" },
    stay: { type: "boolean" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`deno task fleet [--agents 12] [--regions 3] [--size 64MiB] [--keep] [--stay] [--json]

Starts a control plane and --agents agents (real processes, one per 127.0.50.x
address) spread round-robin over --regions regions r0, r1, ... (agent ids
r0-a00, r1-a00, ...), in a temporary directory, with keys as a real fleet:
poolboy keygen root and release, a delegation, every agent started with
--trust-root, both versions published signed, operator calls with a token.
Makes a synthetic model of
--size bytes (v1: incompressible bytes; v2: v1 with 3 regions of 256 KiB
rewritten), publishes v1 and rolls it out (whole file per region), then
publishes v2 and rolls it out (a patch per region). For each rollout prints a
timeline in ms since the rollout was created (each election's announce, first
bid = leader ack, leader ready = election closed; each agent done, with its
region and whether it led), then time to converge, the bytes the control plane
and each leader served during the rollout, and the control plane's egress as a
ratio to one blob per region (ideal: 1.00) and to one blob per agent (naive).
Finally checks every agent's DIR/<agent>/models/<model>/current against the
published digest: exits 1 if one differs.
--keep leaves the directory (data dirs, cp.log, <agent>.log) and prints its path.
--stay keeps the fleet running after the rollouts and prints the dashboard's
address (with a one-time login for the operator's token) until Ctrl-C.
--json prints the same as one JSON document (progress goes to stderr).
Timings: control plane --agent-timeout 1500ms; agents --heartbeat-interval
250ms (as in the e2e tests) and the default --transfer-timeout (10s): with
dozens of processes on a few cores, a leader busy applying its patch can stall
its followers' transfers for seconds.`);
  Deno.exit(0);
}

const MODEL = "synthetic";
const KIB = 1024;
const MIB = 1024 * KIB;
/** First subnet: 127.0.50.0/24 (the e2e tests use 127.0.11-12.x). */
const SUBNET = 50;
/** Agents per subnet, at .10 to .249. */
const PER_SUBNET = 240;
const CP_ARGS = ["--agent-timeout", "1500ms"];
const AGENT_ARGS = ["--heartbeat-interval", "250ms"];
/** Agents' `served` reaches the control plane by heartbeat: wait this long for it to settle. */
const SETTLE_MS = 750;

function usage(message: string): never {
  console.error(`fleet: ${message} (see deno task fleet --help)`);
  Deno.exit(2);
}

function count(name: string, text: string): number {
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1)) usage(`--${name}: "${text}" is not a positive whole number`);
  return n;
}

const agentCount = count("agents", values.agents);
const regionCount = count("regions", values.regions);
if (regionCount > agentCount) usage(`--regions ${regionCount} is more than --agents ${agentCount}`);
if (agentCount > (256 - SUBNET) * PER_SUBNET) {
  usage(`--agents: at most ${(256 - SUBNET) * PER_SUBNET}`);
}
const size = parseSize(values.size);
if (size === undefined) usage(`--size: "${values.size}" is not a size`);
if (size < 16 * KIB) usage("--size: at least 16KiB");

/** Progress lines, on stderr so that --json's stdout stays one document. */
function progress(line: string): void {
  console.error(`fleet: ${line}`);
}

// --- the fleet and the model ---

/** Agents round-robin over the regions: i-th agent in region i % R, ids `r<k>-a<nn>`. */
function agentSpecs(agents: number, regions: number): AgentSpec[] {
  const width = Math.max(2, String(Math.ceil(agents / regions) - 1).length);
  const inRegion = new Array<number>(regions).fill(0);
  const out: AgentSpec[] = [];
  for (let i = 0; i < agents; i++) {
    const r = i % regions;
    const k = inRegion[r]++;
    out.push({
      nodeId: `r${r}-a${String(k).padStart(width, "0")}`,
      region: `r${r}`,
      host: `127.0.${SUBNET + Math.floor(i / PER_SUBNET)}.${10 + (i % PER_SUBNET)}`,
    });
  }
  return out;
}

/** The regions v2 rewrites: 3 × 256 KiB (less for small models) at 1/4, 1/2 and 3/4. */
function rewrites(size: number): { offset: number; length: number }[] {
  const length = Math.min(256 * KIB, Math.floor(size / 16));
  return [1, 2, 3].map((q) => ({ offset: Math.floor((size * q) / 4 - length / 2), length }));
}

/**
 * Writes v1 (one PRNG stream) and v2 (v1 with `rewrites` replaced by new
 * streams), block by block (see bench_pairs.ts): memory stays at one block.
 */
async function writeVersions(dir: string, size: number): Promise<[string, string]> {
  const v1 = `${dir}/model-v1.bin`;
  const v2 = `${dir}/model-v2.bin`;
  await writeSegments(v1, [{ seed: 1, offset: 0, length: size }]);
  const segments = [];
  let at = 0;
  let seed = 101;
  for (const r of rewrites(size)) {
    segments.push({ seed: 1, offset: at, length: r.offset - at });
    segments.push({ seed: seed++, offset: 0, length: r.length });
    at = r.offset + r.length;
  }
  segments.push({ seed: 1, offset: at, length: size - at });
  await writeSegments(v2, segments);
  return [v1, v2];
}

// --- one rollout's report ---

interface TimelineEvent {
  /** Ms since the rollout was created. */
  readonly at: number;
  readonly region: string;
  readonly event: string;
  readonly election?: string;
  readonly nodeId?: string;
  readonly leader?: boolean;
}

interface ElectionSummary {
  readonly manifestId: string;
  readonly region: string;
  readonly state: string;
  readonly failure: string | null;
  readonly kind: "patch" | "whole file" | "local switch";
  readonly blobSize: number;
  readonly leader: string | null;
  /** Bytes the leader's blob server sent during the rollout. */
  readonly leaderServed: number | null;
  readonly members: number;
  readonly timeline: {
    announce?: number;
    firstBid?: number;
    leaderAck?: number;
    leaderReady?: number;
    closed?: number;
  };
}

interface RolloutSummary {
  readonly id: number;
  readonly version: string;
  readonly digest: string;
  readonly created: number;
  readonly finished: number | null;
  readonly timeline: TimelineEvent[];
  readonly elections: ElectionSummary[];
  /** Ms from creation to the last agent done. */
  readonly convergeMs: number;
  readonly controlPlaneServed: number;
  /** Agents that are not leaders of this rollout but served bytes during it. */
  readonly followersServed: Record<string, number>;
  /** Σ blob size of the closed elections: one blob per region when all goes well. */
  readonly idealEgress: number;
  readonly naiveEgress: number;
  readonly egressVsIdeal: number;
  readonly egressVsNaive: number;
}

function summarize(
  before: StatusReport,
  after: StatusReport,
  id: number,
  regionOf: Map<string, string>,
  doneAt: Map<string, number>,
): RolloutSummary {
  const rollout = after.rollouts.find((r) => r.id === id);
  if (!rollout) throw new Error(`rollout ${id} is missing from the status`);
  const t0 = rollout.created;
  const rel = (t: number | undefined) => t === undefined ? undefined : t - t0;
  const servedBefore = new Map(before.agents.map((a) => [a.nodeId, a.served]));
  const servedSince = (nodeId: string) =>
    (after.agents.find((a) => a.nodeId === nodeId)?.served ?? 0) - (servedBefore.get(nodeId) ?? 0);
  const leaders = new Set(
    rollout.elections.map((e) => e.leader).filter((l): l is string => l !== null),
  );

  const timeline: TimelineEvent[] = [];
  const elections = rollout.elections.map((e: ElectionReport): ElectionSummary => {
    const t = e.timeline;
    const add = (at: number | undefined, event: string, nodeId?: string) => {
      if (at !== undefined) {
        timeline.push({ at: at - t0, region: e.region, event, election: e.manifestId, nodeId });
      }
    };
    const transfer = e.transfer ?? (e.base === null ? "wholeFile" : "patch");
    const kind = transfer === "patch"
      ? "patch"
      : transfer === "wholeFile"
      ? "whole file"
      : "local switch";
    add(t.announced, `announce ${e.manifestId}: ${kind}, ${formatBytes(e.blobSize)}`);
    add(t.firstBid, "first bid", e.leader ?? undefined);
    add(t.firstBid, "leader ack", e.leader ?? undefined);
    add(t.leaderReady, "leader ready", e.leader ?? undefined);
    add(t.leaderReady, `election ${e.manifestId} closed`);
    return {
      manifestId: e.manifestId,
      region: e.region,
      state: e.state,
      failure: e.failure,
      kind,
      blobSize: e.blobSize,
      leader: e.leader,
      leaderServed: e.leader === null ? null : servedSince(e.leader),
      members: e.members.length,
      timeline: {
        announce: rel(t.announced),
        firstBid: rel(t.firstBid),
        leaderAck: rel(t.firstBid),
        leaderReady: rel(t.leaderReady),
        closed: rel(t.leaderReady),
      },
    };
  });
  let lastDone = t0;
  for (const a of rollout.agents) {
    if (a.state !== "active") continue;
    const at = doneAt.get(`${id}|${a.nodeId}`) ?? a.updated;
    lastDone = Math.max(lastDone, at);
    timeline.push({
      at: at - t0,
      region: regionOf.get(a.nodeId) ?? "?",
      event: "done",
      nodeId: a.nodeId,
      leader: leaders.has(a.nodeId),
    });
  }
  if (rollout.finished !== null) {
    timeline.push({ at: rollout.finished - t0, region: "-", event: "rollout done" });
  }
  // Stable sort: an election's milestones keep their order when they share a ms.
  timeline.sort((a, b) => a.at - b.at);

  const followersServed: Record<string, number> = {};
  for (const a of after.agents) {
    const n = servedSince(a.nodeId);
    if (!leaders.has(a.nodeId) && n !== 0) followersServed[a.nodeId] = n;
  }
  const controlPlaneServed = after.controlPlane.served - before.controlPlane.served;
  const closed = elections.filter((e) => e.state === "closed");
  const idealEgress = closed.reduce((sum, e) => sum + e.blobSize, 0);
  const blob = closed[0]?.blobSize ?? 0;
  const naiveEgress = regionOf.size * blob;
  return {
    id,
    version: rollout.version,
    digest: rollout.digest,
    created: t0,
    finished: rollout.finished,
    timeline,
    elections,
    convergeMs: lastDone - t0,
    controlPlaneServed,
    followersServed,
    idealEgress,
    naiveEgress,
    egressVsIdeal: idealEgress === 0 ? NaN : controlPlaneServed / idealEgress,
    egressVsNaive: naiveEgress === 0 ? NaN : controlPlaneServed / naiveEgress,
  };
}

/**
 * When each agent was first done, by `rolloutId|nodeId`, from the control
 * plane's `agent X done (rollout N)` log lines. The status's `updated` is the
 * agent's last state change, which can be a second "active" (with another
 * detail) a heartbeat later.
 */
function doneTimes(cpLog: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of cpLog.matchAll(/^(\S+) agent (\S+) done \(rollout (\d+)\)$/gm)) {
    const key = `${m[3]}|${m[2]}`;
    const at = Date.parse(m[1]);
    if (!Number.isNaN(at) && !out.has(key)) out.set(key, at);
  }
  return out;
}

function bytes(n: number): string {
  return `${formatBytes(n)} (${n} B)`;
}

function printRollout(s: RolloutSummary, agents: number, regions: number): void {
  const kinds = [...new Set(s.elections.map((e) => e.kind))].join(" / ");
  console.log(
    `\nrollout ${s.id}: ${MODEL} ${s.version} (${
      s.digest.slice(0, 16)
    }) to ${agents} agents in ${regions} regions, ${kinds} per region`,
  );
  console.log(`  ${"+ms".padStart(7)}  ${"region".padEnd(6)}  event`);
  for (const e of s.timeline) {
    const who = e.nodeId ? ` ${e.nodeId}${e.leader ? " (leader)" : ""}` : "";
    const what = e.event === "done" ? `done${who}` : `${e.event}${who}`;
    console.log(`  ${String(e.at).padStart(7)}  ${e.region.padEnd(6)}  ${what}`);
  }
  console.log(`  summary of rollout ${s.id}:`);
  console.log(
    `    converged in ${s.convergeMs} ms (last agent done)${
      s.finished === null ? "" : `; marked done at +${s.finished - s.created} ms`
    }`,
  );
  console.log(`    control plane served ${bytes(s.controlPlaneServed)}`);
  for (const e of s.elections) {
    const failed = e.state === "closed" ? "" : ` [${e.state}${e.failure ? `: ${e.failure}` : ""}]`;
    const leader = e.leader === null
      ? "no leader"
      : `leader ${e.leader} served ${bytes(e.leaderServed ?? 0)}`;
    console.log(
      `    ${e.region.padEnd(4)} ${e.manifestId}: ${e.kind} ${
        bytes(e.blobSize)
      }, ${e.members} members, ${leader}${failed}`,
    );
  }
  const followers = Object.entries(s.followersServed);
  console.log(
    `    followers that served: ${
      followers.length === 0 ? "none" : followers.map(([id, n]) => `${id} ${bytes(n)}`).join(", ")
    }`,
  );
  console.log(
    `    control-plane egress / (blob size × regions) = ${s.egressVsIdeal.toFixed(2)} (ideal ${
      formatBytes(s.idealEgress)
    })`,
  );
  console.log(
    `    control-plane egress / (agents × blob size)  = ${s.egressVsNaive.toFixed(2)} (naive ${
      formatBytes(s.naiveEgress)
    }: ${agents} downloads from the control plane)`,
  );
}

// --- the run ---

const specs = agentSpecs(agentCount, regionCount);
const ids = specs.map((a) => a.nodeId);
const regionOf = new Map(specs.map((a) => [a.nodeId, a.region]));
/** Convergence and registration timeouts grow with the fleet (2 cores start 50 Denos slowly). */
const scale = Math.max(1, size / (64 * MIB));
const registerTimeoutMs = 30_000 + 1_000 * agentCount;
const convergeTimeoutMs = Math.round(60_000 + 2_000 * agentCount * scale);

const dir = await Deno.makeTempDir({ prefix: "poolboy-fleet-" });
let starting: Promise<Fleet> | undefined;
let cleaning: Promise<void> | undefined;
/** Set on SIGINT/SIGTERM: the main flow's errors from then on are the fleet going away. */
let interrupted = false;

/** Stops the fleet (once started) and removes the directory unless --keep. Idempotent. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    const fleet = await starting?.catch(() => undefined);
    await fleet?.stop();
    if (values.keep) progress(`kept ${dir}`);
    else await removeDir(dir);
  })();
  return cleaning;
}

/** Removes `path`, again if a file appears in it meanwhile (the model is written on). */
async function removeDir(path: string): Promise<void> {
  for (let attempt = 1;; attempt++) {
    try {
      return await Deno.remove(path, { recursive: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      if (attempt >= 10) return progress(`could not remove ${path}: ${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    interrupted = true;
    progress(`${signal}: stopping the fleet`);
    cleanup().finally(() => Deno.exit(130));
  });
}

/** The status; retried for a few seconds while the control plane is too busy to answer. */
async function status(fleet: Fleet): Promise<StatusReport> {
  for (let attempt = 1;; attempt++) {
    try {
      return await fleet.status();
    } catch (err) {
      if (attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/**
 * After convergence: waits until the rollout is marked done and the agents'
 * `served` counters (sent with heartbeats) stop moving, then returns the status.
 */
async function settled(fleet: Fleet, id: number): Promise<StatusReport> {
  let last = await status(fleet);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const next = await status(fleet);
    const same = next.agents.every((a) =>
      last.agents.find((b) =>
        b.nodeId === a.nodeId
      )?.served === a.served
    ) && next.controlPlane.served === last.controlPlane.served;
    last = next;
    if (same && next.rollouts.find((r) => r.id === id)?.state !== "running") break;
  }
  return last;
}

async function rollOut(fleet: Fleet, version: string, digest: string): Promise<RolloutSummary> {
  const before = await status(fleet);
  const { id } = await fleet.rollout(MODEL, version);
  progress(`rollout ${id}: ${version} to ${agentCount} agents`);
  await fleet.converged(MODEL, digest, ids, convergeTimeoutMs);
  const after = await settled(fleet, id);
  const cpLog = await Deno.readTextFile(`${dir}/cp.log`).catch(() => "");
  return summarize(before, after, id, regionOf, doneTimes(cpLog));
}

/** Every agent's active file against `digest`; two at a time (2 cores). */
async function verify(digest: string): Promise<string[]> {
  const wrong: string[] = [];
  const queue = [...ids];
  await Promise.all([0, 1].map(async () => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      const path = `${dir}/${id}/models/${MODEL}/current`;
      const got = await hashFile(path).catch((err) => `unreadable (${err.message ?? err})`);
      if (got !== digest) wrong.push(`${id}: ${path} is ${got.slice(0, 16)}…`);
    }
  }));
  return wrong.sort();
}

async function logTail(name: string, lines: number): Promise<string> {
  const text = await Deno.readTextFile(`${dir}/${name}.log`).catch(() => "");
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

let exitCode = 0;
try {
  progress(`making ${formatBytes(size)} v1 and v2 in ${dir}`);
  const [v1Path, v2Path] = await writeVersions(dir, size);
  progress(`starting a control plane and ${agentCount} agents in ${regionCount} regions`);
  const started = Date.now();
  starting = Fleet.start({
    dir,
    cpHost: `127.0.${SUBNET}.1`,
    agents: specs,
    cpArgs: CP_ARGS,
    agentArgs: AGENT_ARGS,
  });
  const fleet = await starting;
  try {
    const v1 = (await fleet.publish(MODEL, "v1", v1Path)).version.digest;
    await fleet.waitFor(
      async () => (await fleet.status().catch(() => undefined))?.agents.length === agentCount,
      registerTimeoutMs,
      `all ${agentCount} agents to register`,
    );
    const startupMs = Date.now() - started;
    progress(`all ${agentCount} agents registered ${startupMs} ms after start`);
    const first = await rollOut(fleet, "v1", v1);
    const published = Date.now();
    const v2 = (await fleet.publish(MODEL, "v2", v2Path)).version.digest;
    progress(`published v2 in ${Date.now() - published} ms`);
    const second = await rollOut(fleet, "v2", v2);
    progress(`checking ${agentCount} agents' ${MODEL}/current against v2`);
    const wrong = await verify(v2);

    const rollouts = [first, second];
    if (values.json) {
      console.log(JSON.stringify(
        {
          agents: agentCount,
          regions: regionCount,
          size,
          model: MODEL,
          rewrites: rewrites(size),
          startupMs,
          dir: values.keep ? dir : undefined,
          rollouts,
          verified: { digest: v2, ok: wrong.length === 0, wrong },
        },
        null,
        2,
      ));
    } else {
      console.log(
        `fleet: ${agentCount} agents in ${regionCount} regions, model ${
          formatBytes(size)
        }; v2 = v1 with ${
          rewrites(size).map((r) => `${formatBytes(r.length)} at ${r.offset}`).join(", ")
        } rewritten; all registered ${startupMs} ms after start`,
      );
      for (const r of rollouts) printRollout(r, agentCount, regionCount);
      if (wrong.length === 0) {
        console.log(`\nverified: all ${agentCount} agents' ${MODEL}/current hash to v2 ${v2}`);
      }
    }
    if (values.stay) {
      console.error(
        `fleet: dashboard at ${fleet.url}/ui?token=${
          encodeURIComponent(fleet.token ?? "")
        } (opens a session, then ${fleet.url}/ui); poolboy status --control-plane ${fleet.url}; Ctrl-C stops the fleet`,
      );
      await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", resolve));
    }
    if (wrong.length > 0) {
      console.error(
        `fleet: ${wrong.length} of ${agentCount} agents do not run v2 (${v2}):\n  ${
          wrong.join("\n  ")
        }`,
      );
      exitCode = 1;
    }
  } catch (err) {
    if (interrupted) throw err;
    console.error(`--- control plane log (last 40 lines) ---\n${await logTail("cp", 40)}`);
    console.error(`--- ${ids[0]} log (last 20 lines) ---\n${await logTail(ids[0], 20)}`);
    throw err;
  }
} catch (err) {
  if (!interrupted) console.error(`fleet: ${err instanceof Error ? err.message : err}`);
  exitCode = 1;
} finally {
  await cleanup();
}
Deno.exit(exitCode);
