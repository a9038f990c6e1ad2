/**
 * The control plane's metrics (`GET /metrics`, Prometheus text format 0.0.4;
 * docs/metrics.md lists every metric): `gatherMetrics` makes a typed snapshot
 * of the control plane's in-memory state in one pass over the devices and the
 * live rollouts' progress (nothing is read from the store, nothing copied per
 * device), and `renderMetrics` writes a snapshot as text with
 * kernel/prometheus.ts. Pure: the control plane hands over its state, clock
 * and process facts.
 *
 * Label values are bounded whatever the fleet: regions, the fixed state
 * names, and the drop reasons' fixed names; never node ids, rollout ids,
 * models or digests.
 *
 * @module
 */

import {
  histogramOf,
  type HistogramSnapshot,
  type MetricFamily,
  renderPrometheus,
  type Sample,
} from "../kernel/prometheus.ts";
import type { AgentProgress, AgentProgressKind } from "./agent_progress.ts";
import type { TickStats } from "./api_types.ts";
import type { DropCounters } from "./datagrams.ts";
import type { ElectionState } from "./election.ts";
import { isOnline } from "./rollout_policy.ts";
import type { AgentRecord, RolloutRecord, RolloutState } from "./state_store.ts";

/** Bucket bounds (seconds) of election durations: from its first announce to the leader's LeaderReady. */
export const ELECTION_BUCKETS: readonly number[] = [
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
];

/** Bucket bounds (seconds) of rollout durations: from its creation to its end. */
export const ROLLOUT_BUCKETS: readonly number[] = [
  1,
  5,
  15,
  60,
  300,
  900,
  1800,
  3600,
  7200,
  21600,
  86400,
];

/** Every rollout state, in the order they are written. */
export const ROLLOUT_STATES: readonly RolloutState[] = [
  "running",
  "paused",
  "halted",
  "aborted",
  "superseded",
  "done",
];

/** The states that end a rollout (it has a `finished` time). */
const ENDED_STATES: readonly RolloutState[] = ["halted", "aborted", "superseded", "done"];

/** Every state of a device in a rollout. */
export const ROLLOUT_DEVICE_STATES: readonly AgentProgressKind[] = [
  "waiting",
  "offline",
  "pending",
  "leader",
  "downloading",
  "downloaded",
  "applied",
  "active",
  "failed",
];

/** Every state of an election. */
export const ELECTION_STATES: readonly ElectionState[] = [
  "announcing",
  "leading",
  "closed",
  "failed",
];

/** One region's devices. */
export interface RegionMetrics {
  readonly region: string;
  /** Heard from within the agent timeout. */
  readonly online: number;
  readonly offline: number;
  /** With a poisoned failure in a rollout that is not over (running, paused or halted). */
  readonly poisoned: number;
  /** Sum of the bytes the devices' blob servers say they served (their last heartbeat). */
  readonly servedBytes: number;
}

/** Everything `GET /metrics` shows, as typed values. */
export interface ControlPlaneMetrics {
  readonly boot: number;
  readonly uptimeSeconds: number;
  readonly residentBytes: number;
  /** By region, in region order. */
  readonly regions: readonly RegionMetrics[];
  readonly rollouts: Readonly<Record<RolloutState, number>>;
  /** Devices of rollouts that are not over, by their state in the rollout (as known since start). */
  readonly rolloutDevices: Readonly<Record<AgentProgressKind, number>>;
  /** Live elections by state. */
  readonly elections: Readonly<Record<ElectionState, number>>;
  /** Elections that failed since start. */
  readonly electionsFailed: number;
  /** Closed elections since start: first announce to LeaderReady, seconds. */
  readonly electionDurations: HistogramSnapshot;
  /** Ended rollouts (every one stored), creation to end, seconds, by the state they ended in. */
  readonly rolloutDurations: Readonly<Record<RolloutState, HistogramSnapshot>>;
  readonly datagramsReceived: number;
  readonly datagramsSent: number;
  /** Datagrams refused or lost, by reason (the status report's `drops`). */
  readonly datagramsDropped: Readonly<Record<string, number>>;
  /** Received, waiting to be verified and handled. */
  readonly datagramBacklog: number;
  /** Queued in the outbox, not yet handed to the socket. */
  readonly outboxQueued: number;
  /** Body bytes the control plane's blob server sent since start. */
  readonly blobServedBytes: number;
  readonly tick: TickStats;
}

/** What `gatherMetrics` reads: the control plane's state, and facts of the process. */
export interface MetricsInput {
  readonly boot: number;
  readonly now: number;
  /** When the process started (ms since the epoch). */
  readonly startedAt: number;
  readonly residentBytes: number;
  readonly agentTimeoutMs: number;
  readonly agents: Iterable<AgentRecord>;
  readonly rollouts: Iterable<RolloutRecord>;
  /** Each rollout's devices' progress, by rollout id (what is in memory). */
  readonly progress: Iterable<readonly [number, ReadonlyMap<string, AgentProgress>]>;
  readonly liveElections: Iterable<ElectionState>;
  readonly electionsFailed: number;
  readonly electionDurations: HistogramSnapshot;
  /** The datagram handler's and authenticator's drop counters. */
  readonly drops: Readonly<DropCounters>;
  /** The socket's counters (transfer/control_socket.ts `SocketCounters`). */
  readonly socket: {
    readonly sent: number;
    readonly received: number;
    readonly malformed: number;
    readonly faultDropped: number;
    readonly sendErrors: number;
    readonly sendQueueFull: number;
  };
  readonly datagramBacklog: number;
  readonly outboxQueued: number;
  readonly blobServedBytes: number;
  readonly tick: TickStats;
}

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

interface RegionCount {
  online: number;
  offline: number;
  poisoned: number;
  servedBytes: number;
}

/**
 * The snapshot: one pass over the devices, one over the progress of rollouts
 * that are not over, one over the rollouts and the live elections.
 */
export function gatherMetrics(input: MetricsInput): ControlPlaneMetrics {
  const regions = new Map<string, RegionCount>();
  const regionOf = (name: string): RegionCount => {
    let r = regions.get(name);
    if (r === undefined) {
      regions.set(name, r = { online: 0, offline: 0, poisoned: 0, servedBytes: 0 });
    }
    return r;
  };
  const regionByNode = new Map<string, string>();
  for (const a of input.agents) {
    const r = regionOf(a.region);
    if (isOnline(a, input.now, input.agentTimeoutMs)) r.online++;
    else r.offline++;
    r.servedBytes += a.served;
    regionByNode.set(a.nodeId, a.region);
  }
  const rollouts = zeros(ROLLOUT_STATES);
  const notOver = new Set<number>();
  const durations = new Map<RolloutState, number[]>();
  for (const r of input.rollouts) {
    rollouts[r.state]++;
    if (r.state === "running" || r.state === "paused" || r.state === "halted") notOver.add(r.id);
    if (r.finished !== null && ENDED_STATES.includes(r.state)) {
      const list = durations.get(r.state) ?? [];
      list.push(Math.max(0, r.finished - r.created) / 1000);
      durations.set(r.state, list);
    }
  }
  const rolloutDevices = zeros(ROLLOUT_DEVICE_STATES);
  const poisoned = new Set<string>();
  for (const [rolloutId, devices] of input.progress) {
    if (!notOver.has(rolloutId)) continue;
    for (const [nodeId, progress] of devices) {
      rolloutDevices[progress.kind]++;
      if (progress.kind === "failed" && progress.poisoned) poisoned.add(nodeId);
    }
  }
  for (const nodeId of poisoned) {
    const region = regionByNode.get(nodeId);
    if (region !== undefined) regionOf(region).poisoned++;
  }
  const elections = zeros(ELECTION_STATES);
  for (const state of input.liveElections) elections[state]++;
  const s = input.socket;
  return {
    boot: input.boot,
    uptimeSeconds: Math.max(0, input.now - input.startedAt) / 1000,
    residentBytes: input.residentBytes,
    regions: [...regions.keys()].sort().map((region) => ({ region, ...regions.get(region)! })),
    rollouts,
    rolloutDevices,
    elections,
    electionsFailed: input.electionsFailed,
    electionDurations: input.electionDurations,
    rolloutDurations: Object.fromEntries(
      ROLLOUT_STATES.map((
        state,
      ) => [state, histogramOf(ROLLOUT_BUCKETS, durations.get(state) ?? [])]),
    ) as Record<RolloutState, HistogramSnapshot>,
    datagramsReceived: s.received,
    datagramsSent: s.sent,
    datagramsDropped: {
      ...input.drops,
      malformed: s.malformed,
      faultDropped: s.faultDropped,
      sendErrors: s.sendErrors,
      sendQueueFull: s.sendQueueFull,
    },
    datagramBacklog: input.datagramBacklog,
    outboxQueued: input.outboxQueued,
    blobServedBytes: input.blobServedBytes,
    tick: input.tick,
  };
}

function byKey<K extends string>(
  label: string,
  values: Readonly<Record<K, number>>,
): Sample[] {
  return (Object.keys(values) as K[]).map((k) => ({ labels: { [label]: k }, value: values[k] }));
}

/** The snapshot's metric families, in the order docs/metrics.md lists them. */
export function metricFamilies(m: ControlPlaneMetrics): MetricFamily[] {
  return [
    {
      name: "poolboy_devices",
      help:
        "Devices known to the control plane, by region and state (online: heard from within the agent timeout).",
      type: "gauge",
      samples: m.regions.flatMap((r) => [
        { labels: { region: r.region, state: "online" }, value: r.online },
        { labels: { region: r.region, state: "offline" }, value: r.offline },
      ]),
    },
    {
      name: "poolboy_devices_poisoned",
      help:
        "Devices with a poisoned failure (not retried) in a rollout that is not over, by region.",
      type: "gauge",
      samples: m.regions.map((r) => ({ labels: { region: r.region }, value: r.poisoned })),
    },
    {
      name: "poolboy_device_served_bytes",
      help:
        "Bytes the devices' blob servers served to peers, as their last heartbeats say, by region (a device's count restarts with it).",
      type: "gauge",
      samples: m.regions.map((r) => ({ labels: { region: r.region }, value: r.servedBytes })),
    },
    {
      name: "poolboy_rollouts",
      help: "Rollouts by state.",
      type: "gauge",
      samples: byKey("state", m.rollouts),
    },
    {
      name: "poolboy_rollout_devices",
      help:
        "Devices in rollouts that are not over (running, paused, halted), by their state in the rollout, as known since the control plane started.",
      type: "gauge",
      samples: byKey("state", m.rolloutDevices),
    },
    {
      name: "poolboy_rollout_duration_seconds",
      help: "Ended rollouts: from creation to end, by the state they ended in.",
      type: "histogram",
      series: ROLLOUT_STATES.filter((s) => ENDED_STATES.includes(s)).map((state) => ({
        labels: { state },
        histogram: m.rolloutDurations[state],
      })),
    },
    {
      name: "poolboy_elections",
      help: "Live elections by state.",
      type: "gauge",
      samples: byKey("state", m.elections),
    },
    {
      name: "poolboy_elections_failed_total",
      help: "Elections that failed since the control plane started.",
      type: "counter",
      samples: [{ labels: {}, value: m.electionsFailed }],
    },
    {
      name: "poolboy_election_duration_seconds",
      help: "Closed elections since start: from the first announce to the leader's LeaderReady.",
      type: "histogram",
      series: [{ labels: {}, histogram: m.electionDurations }],
    },
    {
      name: "poolboy_datagrams_received_total",
      help: "Control datagrams received that decoded (before authentication).",
      type: "counter",
      samples: [{ labels: {}, value: m.datagramsReceived }],
    },
    {
      name: "poolboy_datagrams_sent_total",
      help: "Control datagrams sent.",
      type: "counter",
      samples: [{ labels: {}, value: m.datagramsSent }],
    },
    {
      name: "poolboy_datagrams_dropped_total",
      help: "Control datagrams refused or lost, by reason (the status report's drops).",
      type: "counter",
      samples: byKey("reason", m.datagramsDropped),
    },
    {
      name: "poolboy_datagram_backlog",
      help: "Datagrams received and waiting to be verified and handled.",
      type: "gauge",
      samples: [{ labels: {}, value: m.datagramBacklog }],
    },
    {
      name: "poolboy_outbox_datagrams",
      help: "Datagrams queued in the outbox, not yet handed to the socket.",
      type: "gauge",
      samples: [{ labels: {}, value: m.outboxQueued }],
    },
    {
      name: "poolboy_control_plane_served_bytes_total",
      help: "Body bytes the control plane's blob server sent since start.",
      type: "counter",
      samples: [{ labels: {}, value: m.blobServedBytes }],
    },
    {
      name: "poolboy_ticks_total",
      help: "Control loop ticks since start.",
      type: "counter",
      samples: [{ labels: {}, value: m.tick.count }],
    },
    {
      name: "poolboy_tick_seconds_total",
      help: "Time spent in control loop ticks since start.",
      type: "counter",
      samples: [{ labels: {}, value: m.tick.totalMs / 1000 }],
    },
    {
      name: "poolboy_control_plane_boot",
      help: "The control plane's boot counter (one more at every start).",
      type: "gauge",
      samples: [{ labels: {}, value: m.boot }],
    },
    {
      name: "poolboy_process_resident_memory_bytes",
      help: "Resident set size of the control plane's process.",
      type: "gauge",
      samples: [{ labels: {}, value: m.residentBytes }],
    },
    {
      name: "poolboy_uptime_seconds",
      help: "Seconds since the control plane started.",
      type: "gauge",
      samples: [{ labels: {}, value: m.uptimeSeconds }],
    },
  ];
}

/** The snapshot in the Prometheus text format (kernel/prometheus.ts `PROMETHEUS_CONTENT_TYPE`). */
export function renderMetrics(m: ControlPlaneMetrics): string {
  return renderPrometheus(metricFamilies(m));
}
