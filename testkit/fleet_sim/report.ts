/**
 * The fleet simulator's report: what one measured rollout came to (the
 * fields issue 15 asks for, and a few more to read them by), computed from
 * the control plane's status before and after, the devices' completion
 * events, the control plane process's /proc counters and the status API's
 * latencies; and its short readable form.
 *
 * @module
 */

import type { StatusReport } from "../../controlplane/api_types.ts";
import { percentile } from "./status_poller.ts";
import type { DeviceServed, DoneEvent, WorkerStats } from "./wire.ts";

/** What `buildReport` is computed from. */
export interface ReportInput {
  readonly devices: number;
  readonly regions: number;
  readonly realAgents: number;
  readonly rolloutId: number;
  /** The rollout's creation time at the control plane (ms since the epoch). */
  readonly created: number;
  readonly t0: number;
  readonly finishedAt: number;
  readonly tBefore: number;
  readonly tAfter: number;
  readonly before: StatusReport;
  readonly after: StatusReport;
  readonly blob: string;
  readonly blobSize: number;
  readonly target: string;
  readonly done: readonly DoneEvent[];
  readonly failures: number;
  readonly workerStats: readonly WorkerStats[];
  /** Every simulated device's blob servers over the run. */
  readonly served: readonly DeviceServed[];
  /** `maxUploads` of every simulated device's blob server. */
  readonly uploadSlots: number;
  readonly cpPeakRssBytes: number;
  readonly cpCpuS: number;
  readonly cpCpuRolloutS: number;
  readonly statusLatenciesMs: readonly number[];
  readonly statusFailures: number;
  readonly storeBytes: number;
  readonly enrolMs: number;
  readonly registeredMs: number;
  readonly workers: number;
  readonly heartbeatMs: number;
  readonly realAgentIds: readonly string[];
  readonly cpUdpKernelDrops: number | null;
  readonly workersCpuS: number;
  readonly loadAverage: readonly [number | null, number | null];
  readonly completed: boolean;
}

/** One election of the measured rollout. */
export interface ElectionSummary {
  readonly region: string;
  readonly state: string;
  readonly leader: string | null;
  readonly members: number;
  /** Rollout creation → first Announce sent, → first Bid (the leader), seconds. */
  readonly announcedS: number | null;
  readonly firstBidS: number | null;
  /** Rollout creation → LeaderReady (election closed), seconds; null if it did not close. */
  readonly closedS: number | null;
}

/** The report (`--json`). Times in seconds from the rollout's creation unless named otherwise. */
export interface SimReport {
  readonly devices: number;
  readonly regions: number;
  readonly realAgents: number;
  /** Simulated devices and real agents that run v2. */
  readonly done: number;
  /** Rollout → the last election closed (control plane's election timeline). */
  readonly electionsClosedS: number | null;
  readonly doneP50S: number | null;
  readonly doneP99S: number | null;
  readonly doneMaxS: number | null;
  /** VmHWM of the control plane process, decimal MB. */
  readonly cpPeakRssMB: number;
  /** utime + stime of the control plane process over its life. */
  readonly cpCpuS: number;
  /** The same during the measured rollout only. */
  readonly cpCpuRolloutS: number;
  /** Datagrams the control plane's socket received per second during the rollout. */
  readonly datagramsPerS: number;
  readonly statusP50Ms: number | null;
  readonly statusP99Ms: number | null;
  readonly statusCalls: number;
  readonly statusFailures: number;
  /** Bytes of the control plane's data directory at the end. */
  readonly storeBytes: number;
  /** Control-plane bytes of the rollout's blob ÷ (blob size × regions). */
  readonly egressRatio: number;
  /** Everything else the control plane's blob server sent during the rollout (signed documents). */
  readonly documentBytes: number;
  readonly blobBytes: number;
  /** Simulated devices whose blob came from the control plane (leaders and fallbacks). */
  readonly devicesFromControlPlane: number;
  /** Simulated devices whose completion carries a verified blob of this rollout. */
  readonly verified: number;
  readonly failures: number;
  readonly heartbeatS: number;
  readonly workers: number;
  /** Start → every device enrolled; start → every device online (s). */
  readonly enrolS: number;
  readonly registeredS: number;
  /** Control plane drops and socket counters during the rollout (differences). */
  readonly cpDatagrams: Record<string, number>;
  readonly workerTotals: WorkerStats | null;
  /** The swarm (issue 15), over the simulated devices. */
  readonly swarm: SwarmSummary;
  readonly elections: ElectionSummary[];
  /**
   * Where the simulated devices' time went, seconds (p50 / p99 / max): rollout → first Announce
   * heard, → bid (the signed documents fetched and checked), bid → download started
   * (LeaderAck or ElectionClosed heard), download → done.
   */
  readonly phases: Record<"announce" | "vet" | "wait" | "download", Spread>;
  /** Datagrams the kernel dropped at the control plane's UDP socket (its receive queue full). */
  readonly cpUdpKernelDrops: number | null;
  /** CPU seconds of the simulator's worker processes (the simulator's own cost). */
  readonly workersCpuS: number;
  readonly loadAverage: readonly [number | null, number | null];
  readonly completed: boolean;
}

/** What the swarm did: pieces, where the bytes came from, who served how much and how many at once. */
export interface SwarmSummary {
  /** Pieces of the rollout's blob (from the devices' downloads; 0 if none was by pieces). */
  readonly pieceCount: number;
  /** Pieces fetched and verified by simulated devices' swarm downloads, all together. */
  readonly piecesVerified: number;
  /** Simulated devices that downloaded by pieces, and those that fetched every piece. */
  readonly swarmDownloads: number;
  readonly swarmDownloadsComplete: number;
  /** Body bytes the simulated devices received from peers, and from the control plane. */
  readonly bytesFromPeers: number;
  readonly bytesFromControlPlane: number;
  /** Bytes of piece lists the devices fetched from the control plane (also in `documentBytes`). */
  readonly pieceListBytes: number;
  /** Bytes served per simulated device: most, median (every device counted, 0 included). */
  readonly servedMaxBytes: number;
  readonly servedP50Bytes: number;
  /** Simulated devices that served any byte, all regions and per region. */
  readonly servingDevices: number;
  readonly servingDevicesByRegion: Record<string, number>;
  /** Most bodies any simulated device's blob server sent at once, and the cap (`--upload-slots`). */
  readonly maxConcurrentUploads: number;
  readonly uploadSlots: number;
  /** Blob servers the devices started (lazily, on joining an election). */
  readonly serversStarted: number;
}

/** p50 / p99 / max of some durations, seconds. */
export interface Spread {
  readonly p50: number | null;
  readonly p99: number | null;
  readonly max: number | null;
}

function spread(values: readonly number[]): Spread {
  return {
    p50: roundOrNull(percentile(values, 50)),
    p99: roundOrNull(percentile(values, 99)),
    max: roundOrNull(values.length === 0 ? null : Math.max(...values)),
  };
}

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const roundOrNull = (x: number | null, digits = 2) => (x === null ? null : round(x, digits));

/** The report of a measured rollout. */
export function buildReport(input: ReportInput): SimReport {
  const rollout = input.after.rollouts.find((r) => r.id === input.rolloutId);
  const rel = (at: number) => (at - input.created) / 1000;
  const elections: ElectionSummary[] = (rollout?.elections ?? []).map((e) => ({
    region: e.region,
    state: e.state,
    leader: e.leader,
    members: e.members.length,
    announcedS: e.timeline.announced === undefined ? null : round(rel(e.timeline.announced)),
    firstBidS: e.timeline.firstBid === undefined ? null : round(rel(e.timeline.firstBid)),
    closedS: e.timeline.leaderReady === undefined ? null : round(rel(e.timeline.leaderReady)),
  }));
  const closedTimes = elections.map((e) => e.closedS);
  const electionsClosedS = closedTimes.length === 0 || closedTimes.some((t) => t === null)
    ? null
    : Math.max(...(closedTimes as number[]));
  const verifiedDone = input.done.filter((d) => d.blob === input.blob && d.target === input.target);
  const times = verifiedDone.map((d) => rel(d.at));
  for (const id of input.realAgentIds) {
    const a = rollout?.agents.find((x) => x.nodeId === id && x.state === "active");
    if (a) times.push(rel(a.updated));
  }
  const served = (s: StatusReport, digest: string) => s.controlPlane.servedByDigest[digest] ?? 0;
  const blobServed = served(input.after, input.blob) - served(input.before, input.blob);
  const allServed = input.after.controlPlane.served - input.before.controlPlane.served;
  const seconds = Math.max(0.001, (input.tAfter - input.tBefore) / 1000);
  const cpDatagrams: Record<string, number> = {};
  for (const [k, v] of Object.entries(input.after.drops)) {
    const d = v - (input.before.drops[k] ?? 0);
    if (d !== 0) cpDatagrams[k] = d;
  }
  const totals = input.workerStats.length === 0 ? null : input.workerStats.reduce((a, b) => {
    const out: Record<string, number> = {};
    for (const k of Object.keys(a) as (keyof WorkerStats)[]) out[k] = a[k] + b[k];
    return out as unknown as WorkerStats;
  });
  const servedBytes = input.served.map((d) => d[2]);
  const servingDevicesByRegion: Record<string, number> = {};
  for (const [, region, bytes] of input.served) {
    if (bytes > 0) servingDevicesByRegion[region] = (servingDevicesByRegion[region] ?? 0) + 1;
  }
  const swarmDone = verifiedDone.filter((d) => d.pieceCount > 0);
  const swarm: SwarmSummary = {
    pieceCount: swarmDone.reduce((m, d) => Math.max(m, d.pieceCount), 0),
    piecesVerified: totals?.piecesVerified ?? 0,
    swarmDownloads: swarmDone.length,
    swarmDownloadsComplete: swarmDone.filter((d) => d.pieces === d.pieceCount).length,
    bytesFromPeers: totals?.bytesFromPeers ?? 0,
    bytesFromControlPlane: totals?.bytesFromControlPlane ?? 0,
    pieceListBytes: totals?.pieceListBytes ?? 0,
    servedMaxBytes: servedBytes.length === 0 ? 0 : Math.max(...servedBytes),
    servedP50Bytes: percentile(servedBytes, 50) ?? 0,
    servingDevices: servedBytes.filter((b) => b > 0).length,
    servingDevicesByRegion,
    maxConcurrentUploads: input.served.reduce((m, d) => Math.max(m, d[3]), 0),
    uploadSlots: input.uploadSlots,
    serversStarted: totals?.serversStarted ?? 0,
  };
  return {
    devices: input.devices,
    regions: input.regions,
    realAgents: input.realAgents,
    done: times.length,
    electionsClosedS: roundOrNull(electionsClosedS),
    doneP50S: roundOrNull(percentile(times, 50)),
    doneP99S: roundOrNull(percentile(times, 99)),
    doneMaxS: roundOrNull(times.length === 0 ? null : Math.max(...times)),
    cpPeakRssMB: round(input.cpPeakRssBytes / 1e6, 1),
    cpCpuS: round(input.cpCpuS),
    cpCpuRolloutS: round(input.cpCpuRolloutS),
    datagramsPerS: round((cpDatagrams.received ?? 0) / seconds, 1),
    statusP50Ms: roundOrNull(percentile(input.statusLatenciesMs, 50), 1),
    statusP99Ms: roundOrNull(percentile(input.statusLatenciesMs, 99), 1),
    statusCalls: input.statusLatenciesMs.length,
    statusFailures: input.statusFailures,
    storeBytes: input.storeBytes,
    egressRatio: round(blobServed / (input.blobSize * input.regions), 3),
    documentBytes: allServed - blobServed,
    blobBytes: input.blobSize,
    devicesFromControlPlane: verifiedDone.filter((d) => d.from === "controlPlane").length,
    verified: verifiedDone.length,
    failures: input.failures,
    heartbeatS: input.heartbeatMs / 1000,
    workers: input.workers,
    enrolS: round(input.enrolMs / 1000, 1),
    registeredS: round(input.registeredMs / 1000, 1),
    cpDatagrams,
    workerTotals: totals,
    swarm,
    elections,
    phases: {
      announce: spread(verifiedDone.map((d) => rel(d.announced))),
      vet: spread(verifiedDone.map((d) => (d.bid - d.announced) / 1000)),
      wait: spread(verifiedDone.map((d) => (d.started - d.bid) / 1000)),
      download: spread(verifiedDone.map((d) => (d.at - d.started) / 1000)),
    },
    cpUdpKernelDrops: input.cpUdpKernelDrops,
    workersCpuS: round(input.workersCpuS),
    loadAverage: input.loadAverage,
    completed: input.completed,
  };
}

/** A few readable lines. */
export function formatReport(r: SimReport): string {
  const s = (x: number | null, unit = " s") => (x === null ? "-" : `${x}${unit}`);
  return [
    ...(r.completed
      ? []
      : ["fleet:sim: THE ROLLOUT'S DEADLINE PASSED before every device was done"]),
    `fleet:sim: ${r.devices} simulated devices + ${r.realAgents} real agents in ${r.regions} regions (${r.workers} worker processes, heartbeat ${r.heartbeatS} s)`,
    `  enrolled in ${r.enrolS} s, all online at ${r.registeredS} s`,
    `  rollout of a ${r.blobBytes}-byte patch: ${r.done}/${
      r.devices + r.realAgents
    } done; elections closed by ${s(r.electionsClosedS)}; done p50 ${s(r.doneP50S)}, p99 ${
      s(r.doneP99S)
    }, max ${s(r.doneMaxS)}`,
    `  control plane: peak RSS ${r.cpPeakRssMB} MB, CPU ${r.cpCpuS} s (${r.cpCpuRolloutS} s in the rollout), ${r.datagramsPerS} datagrams/s received, store ${r.storeBytes} bytes`,
    `  status API: p50 ${s(r.statusP50Ms, " ms")}, p99 ${
      s(r.statusP99Ms, " ms")
    } over ${r.statusCalls} calls (${r.statusFailures} failed)`,
    `  egress: ${r.egressRatio} × (patch × regions) of model bytes, plus ${r.documentBytes} bytes of signed documents; ${r.devicesFromControlPlane} devices got the blob from the control plane`,
    `  swarm: ${r.swarm.piecesVerified} pieces verified (${r.swarm.pieceCount} per blob, ${r.swarm.swarmDownloadsComplete}/${r.swarm.swarmDownloads} downloads by pieces whole); ${r.swarm.bytesFromPeers} bytes from peers, ${r.swarm.bytesFromControlPlane} from the control plane, ${r.swarm.pieceListBytes} of piece lists; served per device max ${r.swarm.servedMaxBytes}, p50 ${r.swarm.servedP50Bytes} bytes by ${r.swarm.servingDevices} devices; at most ${r.swarm.maxConcurrentUploads} uploads at once (cap ${r.swarm.uploadSlots})`,
    `  verified blobs: ${r.verified}/${r.devices}; failures reported: ${r.failures}; simulator workers used ${r.workersCpuS} s of CPU; load average ${
      r.loadAverage.join(" → ")
    }`,
    `  device phases p50/p99/max (s): ${
      Object.entries(r.phases).map(([k, v]) => `${k} ${v.p50}/${v.p99}/${v.max}`).join(", ")
    }; kernel drops at the control plane's UDP socket: ${r.cpUdpKernelDrops ?? "-"}`,
  ].join("\n");
}
