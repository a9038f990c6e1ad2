/**
 * The fleet simulator's run (scripts/fleet_sim.ts, tests/fleet_sim_test.ts):
 * the real control plane process and K real agents (testkit/fleet_harness.ts:
 * keys, tokens, signed publishing), N simulated devices in worker processes
 * (workers.ts, worker.ts, device.ts), and one rollout measured end to end:
 *
 * 1. control plane (agent timeout 3 × the heartbeat period) and real agents;
 *    v1 published signed; an enrolment token good for N uses;
 * 2. workers enrol every device over HTTP and heartbeat it (it runs v1 from
 *    the start); wait until the control plane sees every device online;
 * 3. a rollout of v1 (the real agents get it; the devices run it already);
 * 4. v2 published (the control plane prepares the patch v1 → v2); a rollout of
 *    v2 to every device, `GET /v1/status` polled every 250 ms meanwhile; wait
 *    until every device runs v2 (bounded by `timeoutMs`);
 * 5. the report (report.ts), then everything stopped: workers, agents,
 *    control plane; the directory removed unless `keep`.
 *
 * `stop()` is idempotent and safe at any time (a signal handler calls it).
 *
 * @module
 */

import type { RolloutReport, StatusReport } from "../../controlplane/api_types.ts";
import { IoError } from "../../kernel/errors.ts";
import { type AgentSpec, Fleet } from "../fleet_harness.ts";
import { writeModelVersions } from "./model.ts";
import { CP_HOST, CP_PORTS, MAX_DEVICES, MAX_REAL_AGENTS, realAgentPlan } from "./plan.ts";
import { cpuSeconds, loadAverage, peakRssBytes, treeBytes, udpSocketDrops } from "./proc_stats.ts";
import { buildReport, type SimReport } from "./report.ts";
import { StatusPoller } from "./status_poller.ts";
import type { DeviceServed, DoneEvent, WorkerConfig, WorkerEvent, WorkerStats } from "./wire.ts";
import { WorkerProcess } from "./workers.ts";

/** The model every run rolls out. */
export const MODEL = "simmodel";

/** Options of a simulation. */
export interface SimOptions {
  readonly devices: number;
  readonly regions: number;
  /** Real agents beside the simulated devices (default 0). */
  readonly realAgents?: number;
  /** Heartbeat period of every device and agent (default 10 s). */
  readonly heartbeatMs?: number;
  /** Model file size (default 4 MiB; the patch is about 3/64 of it). */
  readonly size?: number;
  /**
   * Simulated devices per worker process (default 250: one process holding
   * 1,000 swarming devices fell behind its own event loop, its requests timed
   * out and its devices fell back to the control plane).
   */
  readonly devicesPerWorker?: number;
  /** Deadline of the v2 rollout (default 120 s + 20 ms per device). */
  readonly rolloutTimeoutMs?: number;
  /** Period of the measured `GET /v1/status` calls during the rollout (default 250 ms). */
  readonly statusPeriodMs?: number;
  /** Bodies each simulated device's blob server sends at once (default 4, as agents). */
  readonly uploadSlots?: number;
  /** Bytes per second each device's blob server sends, all bodies together (0: unlimited). */
  readonly uploadBytesPerSecond?: number;
  /** The control plane's `--piece-size` (bytes; default: its own choice, ~64 pieces per blob). */
  readonly pieceSize?: number;
  /**
   * A simulated device's swarm download turns to the control plane after this
   * long without a peer byte (default: agents' default, 10 s). Many devices
   * share a few cores here, so under load a peer can be slow for reasons no
   * real device would have: a correctness test sets it long, so that the
   * control plane's egress does not depend on the machine's load.
   */
  readonly stallMs?: number;
  /** Swarm downloads of one worker process at once (default 1,000: bounds its sockets). */
  readonly swarmSlotsPerWorker?: number;
  /** Keep the directory (printed in the progress). */
  readonly keep?: boolean;
  /** Progress lines (default: none). */
  readonly progress?: (line: string) => void;
}

/** A simulation's result: the report and each simulated device's completion. */
export interface SimResult {
  readonly report: SimReport;
  readonly done: readonly DoneEvent[];
  /** Blob digest of the rollout's elections (hex) and the v2 target. */
  readonly blob: string;
  readonly target: string;
  readonly dir: string;
}

/** A run's failure (deadline, a worker died); the message says what was missing. */
export class SimulationError extends IoError {}

/** A simulation: `run()` once, `stop()` any time. */
export class FleetSimulation {
  readonly options: SimOptions;
  readonly #log: (line: string) => void;
  #dir: string | undefined;
  #fleet: Fleet | undefined;
  readonly #workers: WorkerProcess[] = [];
  #poller: StatusPoller | undefined;
  #stopping: Promise<void> | undefined;
  readonly #done = new Map<string, DoneEvent>();
  readonly #failures: string[] = [];
  readonly #stats: WorkerStats[] = [];
  readonly #served: DeviceServed[] = [];
  #fatal: string | undefined;
  /** Devices enrolled so far, per worker. */
  readonly #enrolled: number[] = [];
  #ready = 0;

  constructor(options: SimOptions) {
    const { devices, regions } = options;
    const real = options.realAgents ?? 0;
    if (!Number.isSafeInteger(devices) || devices < 1 || devices > MAX_DEVICES) {
      throw new RangeError(`devices: 1 to ${MAX_DEVICES}`);
    }
    if (!Number.isSafeInteger(real) || real < 0 || real > MAX_REAL_AGENTS) {
      throw new RangeError(`real agents: 0 to ${MAX_REAL_AGENTS}`);
    }
    if (!Number.isSafeInteger(regions) || regions < 1 || regions > devices) {
      throw new RangeError(`regions: 1 to the number of devices`);
    }
    const slots = options.uploadSlots ?? 4;
    if (!Number.isSafeInteger(slots) || slots < 1 || slots > 1024) {
      throw new RangeError(`upload slots: 1 to 1024`);
    }
    this.options = options;
    this.#log = options.progress ?? (() => {});
  }

  /** Runs the simulation; stops everything before it returns or throws. */
  async run(): Promise<SimResult> {
    try {
      return await this.#run();
    } finally {
      await this.stop();
    }
  }

  /** Stops every process (workers, agents, control plane); removes the directory unless `keep`. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.#poller?.stop().catch(() => {});
      await Promise.allSettled(this.#workers.map((w) => w.stop()));
      await this.#fleet?.stop().catch(() => {});
      if (this.#dir !== undefined) {
        if (this.options.keep) this.#log(`kept ${this.#dir}`);
        else await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
      }
    })();
    return this.#stopping;
  }

  async #run(): Promise<SimResult> {
    const o = this.options;
    const devices = o.devices;
    const regions = o.regions;
    const realCount = o.realAgents ?? 0;
    const heartbeatMs = o.heartbeatMs ?? 10_000;
    const perWorker = o.devicesPerWorker ?? 250;
    const uploadSlots = o.uploadSlots ?? 4;
    const dir = await Deno.makeTempDir({ prefix: "poolboy-fleet-sim-" });
    this.#dir = dir;
    const realSpecs: AgentSpec[] = Array.from({ length: realCount }, (_, k) => {
      const p = realAgentPlan(k, regions);
      return { nodeId: p.nodeId, region: p.region, host: p.host };
    });
    this.#log(`starting a control plane on ${CP_HOST} and ${realCount} real agents in ${dir}`);
    const started = Date.now();
    this.#fleet = await Fleet.start({
      dir,
      cpHost: CP_HOST,
      agents: realSpecs,
      cpArgs: [
        "--agent-timeout",
        `${3 * heartbeatMs}ms`,
        // Every simulated device's HTTP comes from 127.0.0.1 on loopback (one address per device
        // in a real fleet): the per-address cap is lifted as the harness lifts the blob server's.
        "--connections-per-address",
        "128",
        ...(o.pieceSize === undefined ? [] : ["--piece-size", String(o.pieceSize)]),
      ],
      agentArgs: ["--heartbeat-interval", `${heartbeatMs}ms`],
    });
    const fleet = this.#fleet;
    const cpPid = fleet.cp!.child.pid;
    const token = fleet.token!;
    const paths = await writeModelVersions(dir, o.size ?? 4 * 1024 * 1024);
    const v1 = (await fleet.publish(MODEL, "v1", paths.v1)).version.digest;
    const enrolment = await fleet.api<{ token: string }>(
      "POST",
      "/v1/enrollment-tokens",
      JSON.stringify({ uses: devices, expiresMs: 3_600_000 }),
    );

    // Workers: each a process of its own with a slice of the devices.
    const workerCount = Math.ceil(devices / perWorker);
    this.#log(`enrolling ${devices} simulated devices in ${workerCount} worker processes`);
    for (let w = 0; w < workerCount; w++) {
      const first = w * perWorker;
      const workDir = `${dir}/worker-${w}`;
      await Deno.mkdir(workDir);
      const config: WorkerConfig = {
        first,
        count: Math.min(perWorker, devices - first),
        regions,
        cpHost: CP_HOST,
        cpUdpPort: CP_PORTS.udp,
        cpUrl: fleet.url,
        token: enrolment.token,
        rootPub: fleet.keys!.rootPub,
        model: MODEL,
        activeDigest: v1,
        heartbeatMs,
        workDir,
        enrolSlots: 4,
        cpSlots: Math.max(2, Math.floor(32 / workerCount)),
        peerSlots: 32,
        serverConnections: 64,
        uploadSlots,
        uploadBytesPerSecond: o.uploadBytesPerSecond ?? 0,
        swarmSlots: o.swarmSlotsPerWorker ?? 1_000,
        stallMs: o.stallMs ?? null,
      };
      this.#workers.push(
        WorkerProcess.spawn(config, `${dir}/worker-${w}.log`, (e) => this.#onEvent(w, e)),
      );
    }
    const enrolDeadline = 60_000 + 20 * devices;
    let lastShown = 0;
    await this.#until(
      () => {
        if (Date.now() - lastShown > 2_000) {
          lastShown = Date.now();
          this.#log(`enrolled ${this.#enrolledCount}/${devices}`);
        }
        return Promise.resolve(this.#ready === workerCount);
      },
      enrolDeadline,
      () => `every worker to enrol its devices (${this.#enrolledCount}/${devices} enrolled)`,
    );
    const enrolMs = Date.now() - started;
    let online = 0;
    await this.#until(
      async () => {
        const s = await fleet.status().catch(() => undefined);
        online = s?.agents.filter((a) => a.online).length ?? online;
        return online >= devices + realCount;
      },
      30_000 + 2 * heartbeatMs + 5 * devices,
      () => `every device to be online (${online}/${devices + realCount})`,
      true,
      1_000, // the status of thousands of devices is not free to build
    );
    const registeredMs = Date.now() - started;
    this.#log(`all ${devices + realCount} online after ${(registeredMs / 1000).toFixed(1)} s`);

    // v1 to the real agents (the simulated devices run it already).
    const first = await fleet.rollout(MODEL, "v1");
    await this.#rolloutDone(first.id, 60_000 + 2_000 * realCount, "v1");

    const published = await fleet.publish(MODEL, "v2", paths.v2);
    const target = published.version.digest;
    const patch = published.patches.find((p) => p.from === "v1");
    const blob = patch?.digest ?? target;
    const blobSize = patch?.size ?? published.version.size;
    this.#log(
      `published v2: ${patch ? `patch of ${blobSize} bytes` : `whole file of ${blobSize} bytes`}`,
    );

    // The measured rollout.
    const before = await fleet.status();
    const loadBefore = await loadAverage();
    const cpuBefore = (await cpuSeconds(cpPid)) ?? 0;
    this.#poller = new StatusPoller(fleet.url, token, o.statusPeriodMs ?? 250);
    const t0 = Date.now();
    const rollout = await fleet.rollout(MODEL, "v2");
    const created = (await fleet.api<RolloutReport>("GET", `/v1/rollouts/${rollout.id}`)).created;
    const deadline = o.rolloutTimeoutMs ?? 120_000 + 20 * devices;
    const realDone = (s: StatusReport | undefined) =>
      realSpecs.filter((a) =>
        s?.agents.find((x) => x.nodeId === a.nodeId)?.active[MODEL] === target
      )
        .length;
    lastShown = 0;
    const completed = await this.#until(
      () => {
        const s = this.#poller?.latest;
        if (Date.now() - lastShown > 2_000) {
          lastShown = Date.now();
          const r = s?.rollouts.find((x) => x.id === rollout.id);
          const closed = r?.elections.filter((e) => e.state === "closed").length ?? 0;
          this.#log(
            `+${
              ((Date.now() - t0) / 1000).toFixed(1)
            } s: ${this.#done.size}/${devices} devices and ${
              realDone(s)
            }/${realCount} agents on v2; elections closed ${closed}/${r?.elections.length ?? 0}`,
          );
        }
        return Promise.resolve(this.#done.size >= devices && realDone(s) >= realCount);
      },
      deadline,
      () => `every device to run v2 (${this.#done.size}/${devices} devices done)`,
      // Past the deadline the report is still made, of what got done: a melting control plane
      // is what the simulator is for.
      false,
    );
    if (!completed) {
      this.#log(`the rollout's deadline passed: ${this.#done.size}/${devices} devices done`);
    }
    const finishedAt = Date.now();
    // The rollout is marked done at the control plane's next reconcile: wait a little for it.
    let after = await fleet.status();
    for (
      let i = 0;
      i < 20 && after.rollouts.find((r) => r.id === rollout.id)?.state === "running";
      i++
    ) {
      await new Promise((r) => setTimeout(r, 250));
      after = await fleet.status();
    }
    const tAfter = Date.now();
    await this.#poller.stop();
    const cpuAfter = (await cpuSeconds(cpPid)) ?? 0;
    const peak = (await peakRssBytes(cpPid)) ?? 0;
    const storeBytes = await treeBytes(`${dir}/cp`);
    const udpDrops = await udpSocketDrops(CP_HOST, CP_PORTS.udp);
    let workersCpu = 0;
    for (const w of this.#workers) workersCpu += (await cpuSeconds(w.child.pid)) ?? 0;
    const loadAfter = await loadAverage();
    const latencies = this.#poller.latenciesMs;
    const statusFailures = this.#poller.failures;
    await Promise.allSettled(this.#workers.map((w) => w.stop()));
    const report = buildReport({
      devices,
      regions,
      realAgents: realCount,
      rolloutId: rollout.id,
      created,
      t0,
      finishedAt,
      tBefore: t0,
      tAfter,
      before,
      after,
      blob,
      blobSize,
      target,
      done: [...this.#done.values()],
      failures: this.#failures.length,
      workerStats: this.#stats,
      served: this.#served,
      uploadSlots,
      cpPeakRssBytes: peak,
      cpCpuS: cpuAfter,
      cpCpuRolloutS: cpuAfter - cpuBefore,
      statusLatenciesMs: latencies,
      statusFailures,
      storeBytes,
      enrolMs,
      registeredMs,
      workers: workerCount,
      heartbeatMs,
      realAgentIds: realSpecs.map((a) => a.nodeId),
      cpUdpKernelDrops: udpDrops,
      workersCpuS: workersCpu,
      loadAverage: [loadBefore, loadAfter],
      completed,
    });
    return { report, done: [...this.#done.values()], blob, target, dir };
  }

  /** Devices enrolled so far, all workers. */
  get #enrolledCount(): number {
    return this.#enrolled.reduce((a, b) => a + b, 0);
  }

  #onEvent(worker: number, event: WorkerEvent): void {
    switch (event.t) {
      case "enrolled":
        this.#enrolled[worker] = event.n;
        return;
      case "ready":
        this.#ready++;
        this.#enrolled[worker] = event.n;
        return;
      case "done":
        if (!this.#done.has(event.id)) this.#done.set(event.id, event);
        return;
      case "failed":
        if (this.#failures.length < 1000) this.#failures.push(`${event.id}: ${event.reason}`);
        return;
      case "stats":
        this.#stats.push(event.stats);
        return;
      case "served":
        this.#served.push(...event.devices);
        return;
      case "fatal":
        this.#fatal ??= event.message;
        return;
    }
  }

  /** Waits for a rollout to be done. */
  async #rolloutDone(id: number, timeoutMs: number, what: string): Promise<void> {
    let state = "";
    await this.#until(
      async () => {
        const r = await this.#fleet!.api<RolloutReport>("GET", `/v1/rollouts/${id}`).catch(() =>
          undefined
        );
        state = r?.state ?? state;
        return state === "done";
      },
      timeoutMs,
      () => `the rollout of ${what} to be done (it is ${state})`,
    );
  }

  /**
   * Polls `ready` every `periodMs` until it holds (true); at the deadline throws, or returns false
   * when `throwAtDeadline` is false; throws when a worker dies.
   */
  async #until(
    ready: () => Promise<boolean>,
    timeoutMs: number,
    what: () => string,
    throwAtDeadline = true,
    periodMs = 100,
  ): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#fatal !== undefined) {
        throw new SimulationError(`a worker failed: ${this.#fatal.slice(0, 2000)}`);
      }
      const dead = this.#workers.find((w) => w.exited);
      if (dead) throw new SimulationError(`a worker exited early (see its log)`);
      if (this.#stopping) throw new SimulationError("stopped");
      if (await ready()) return true;
      if (Date.now() >= deadline) {
        if (!throwAtDeadline) return false;
        throw new SimulationError(
          `timed out after ${timeoutMs} ms waiting for ${what()}${
            this.#failures.length ? `; failures: ${this.#failures.slice(-5).join("; ")}` : ""
          }`,
        );
      }
      await new Promise((r) => setTimeout(r, periodMs));
    }
  }
}
