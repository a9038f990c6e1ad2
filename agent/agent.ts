/**
 * The agent on each device: heartbeats to the control plane, answers
 * announces with a Bid, leads (downloads the blob from the control plane and
 * says LeaderReady) or follows (downloads from the leader, the control plane
 * as the last resort), applies the patch to the active model, verifies it and
 * switches `DATA/models/NAME/current` atomically; it serves the blobs it
 * holds to its region's followers.
 *
 * It keeps no election state on disk: after a restart its heartbeat tells the
 * control plane what it runs, and the control plane tells it again what to do
 * (stateless recovery). Downloads resume from the partial file they left.
 *
 * @module
 */

import type {
  Announce,
  ControlMessage,
  ElectionClosed,
  StatusState,
} from "../transfer/control_messages.ts";
import { encodeControlMessage, MAX_DATAGRAM } from "../transfer/control_messages.ts";
import { applyFile } from "../codec/applier.ts";
import { fromHex, toHex } from "../kernel/blake3.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { downloadBlob } from "../transfer/blob_client.ts";
import { ControlSocket, type UdpAddress } from "../transfer/control_socket.ts";
import type { FaultInjector } from "../transfer/faults.ts";
import { DEFAULT_AGENT_P2P_PORT, DEFAULT_AGENT_UDP_PORT } from "../transfer/default_ports.ts";
import { builtinHealthCheck, type HealthResult, runHealthCommand } from "./health_check.ts";
import {
  isPoisoned,
  type ModelState,
  readState,
  type Step,
  withFailure,
  writeState,
} from "./lifecycle_state.ts";
import { activeDigest, activeModels, currentPath, switchTo } from "./model_slots.ts";
import { statfs } from "node:fs/promises";
import { formatBytes } from "../kernel/units.ts";
import { VerificationError } from "../kernel/errors.ts";
import { DiskSpaceError } from "./errors.ts";

export { DiskSpaceError };

/** Options of `Agent.start`. */
export interface AgentOptions {
  readonly nodeId: string;
  readonly region: string;
  readonly bind: string;
  readonly dataDir: string;
  readonly controlPlane: UdpAddress;
  readonly udpPort?: number;
  readonly p2pPort?: number;
  /** Heartbeat period (default 2 s). */
  readonly heartbeatMs?: number;
  /** LeaderReady retransmission period (default 500 ms). */
  readonly retryMs?: number;
  /** Idle timeout of blob transfers (default 10 s). */
  readonly transferTimeoutMs?: number;
  /** Health command (`sh -c`, `{model}` and `POOLBOY_MODEL` are the model's path); default: built-in check. */
  readonly healthCmd?: string;
  /** Health command timeout (default 60 s). */
  readonly healthTimeoutMs?: number;
  /** Failures of a version in one rollout after which it is not tried again (default 3). */
  readonly poisonAfter?: number;
  /** Command run (`sh -c`, `{model}`/`POOLBOY_MODEL`) after each switch, e.g. to reload the app. */
  readonly onSwitchCmd?: string;
  /** Free bytes to leave on the data directory's filesystem (default 64 MiB). */
  readonly minFreeBytes?: number;
  /** Earlier versions kept per model for rollback (default 1: the backup). */
  readonly keepBackups?: number;
  readonly log?: (line: string) => void;
  /** Transport faults to inject (tests only; the CLI never passes any). */
  readonly faults?: FaultInjector;
  /** Hooks into the update lifecycle (tests only). */
  readonly hooks?: AgentHooks;
}

/** Test-only hooks into the update lifecycle; none by default. */
export interface AgentHooks {
  /**
   * Called right after a step of an update to `target` is on disk, before
   * anything else happens (a crash test exits the process here, as a power cut
   * would leave it).
   */
  readonly afterStepPersisted?: (step: Step, target: string | null) => void;
}

/** Counters of datagrams the agent refused. */
export interface AgentDrops {
  unexpectedSender: number;
  unknownElection: number;
  wrongDirection: number;
}

interface ElectionState {
  readonly announce: Announce;
  leader: boolean;
  closed?: ElectionClosed;
}

/** Most blob digests listed in a heartbeat (it must fit in one datagram). */
const MAX_HELD_IN_HEARTBEAT = 20;

/** A running agent. */
export class Agent {
  readonly options: AgentOptions;
  readonly store: BlobStore;
  readonly blobServer: BlobServer;
  readonly socket: ControlSocket;
  readonly startedAt = Date.now();
  readonly drops: AgentDrops = { unexpectedSender: 0, unknownElection: 0, wrongDirection: 0 };
  readonly #elections = new Map<string, ElectionState>();
  /** Updates in progress, by target digest. */
  readonly #jobs = new Map<string, Promise<void>>();
  /**
   * Blobs known to be complete in the store (hex): a leader of any election
   * for one of them may say LeaderReady, whichever election fetched it.
   */
  readonly #readyBlobs = new Set<string>();
  /** Blob downloads in progress, by blob digest. */
  readonly #downloads = new Map<string, Promise<void>>();
  readonly #log: (line: string) => void;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #retryTimer: ReturnType<typeof setInterval> | undefined;
  #receiving: Promise<void> | undefined;
  #closed = false;
  readonly #abort = new AbortController();

  private constructor(
    options: AgentOptions,
    store: BlobStore,
    blobServer: BlobServer,
    socket: ControlSocket,
  ) {
    this.options = options;
    this.store = store;
    this.blobServer = blobServer;
    this.socket = socket;
    this.#log = options.log ?? (() => {});
  }

  /** Binds the ports, then heartbeats and answers the control plane until `close`. */
  static async start(options: AgentOptions): Promise<Agent> {
    await Deno.mkdir(`${options.dataDir}/models`, { recursive: true });
    const store = await BlobStore.open(`${options.dataDir}/blobs`);
    const socket = ControlSocket.open(options.bind, options.udpPort ?? DEFAULT_AGENT_UDP_PORT, {
      faults: options.faults,
    });
    const blobServer = BlobServer.start({
      hostname: options.bind,
      port: options.p2pPort ?? DEFAULT_AGENT_P2P_PORT,
      store,
      faults: options.faults?.transport,
    });
    const agent = new Agent(options, store, blobServer, socket);
    await agent.#recover();
    agent.#receiving = agent.#receive();
    agent.#heartbeatTimer = setInterval(() => agent.heartbeat(), options.heartbeatMs ?? 2000);
    agent.#retryTimer = setInterval(() => agent.#retransmit(), options.retryMs ?? 500);
    await agent.heartbeat();
    agent.#log(
      `agent ${options.nodeId} (${options.region}) on ${options.bind}: udp ${socket.port}, blobs ${blobServer.port}`,
    );
    return agent;
  }

  /** Stops; a download in progress keeps its partial file for next time. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeatTimer);
    clearInterval(this.#retryTimer);
    this.#abort.abort();
    this.socket.close();
    await this.#receiving;
    await Promise.allSettled([...this.#jobs.values()]);
    await this.blobServer.close();
  }

  /** Sends a heartbeat now. */
  async heartbeat(): Promise<void> {
    if (this.#closed) return;
    const active = await activeModels(this.options.dataDir);
    // A version switched to but not yet healthy is not reported as running.
    for (const model of active.keys()) {
      const state = await readState(this.options.dataDir, model).catch(() => undefined);
      if (state?.step === "switched") {
        if (state.backup) active.set(model, state.backup);
        else active.delete(model);
      }
    }
    const held = (await this.store.list()).slice(-MAX_HELD_IN_HEARTBEAT);
    const message: ControlMessage = {
      type: "heartbeat",
      nodeId: this.options.nodeId,
      region: this.options.region,
      host: this.options.bind,
      udpPort: this.socket.port,
      p2pPort: this.blobServer.port,
      held,
      active: [...active].map(([model, digest]) => [model, fromHex(digest)] as const),
      served: this.blobServer.bytesServed,
      startedAt: this.startedAt,
    };
    // Drop held digests until it fits (many models with many blobs).
    let m = message;
    while (encodeSize(m) > MAX_DATAGRAM && m.held.length > 0) {
      m = { ...m, held: m.held.slice(1) };
    }
    await this.socket.send(m, this.options.controlPlane);
  }

  async #receive(): Promise<void> {
    for await (const { message, from } of this.socket.messages()) {
      if (from.hostname !== this.options.controlPlane.hostname) {
        this.drops.unexpectedSender++;
        continue;
      }
      try {
        await this.#handle(message);
      } catch (err) {
        this.#log(`error handling ${message.type}: ${err instanceof Error ? err.message : err}`);
      }
    }
  }

  async #handle(message: ControlMessage): Promise<void> {
    switch (message.type) {
      case "announce":
        return await this.#onAnnounce(message);
      case "leaderAck": {
        const election = this.#elections.get(message.manifestId);
        if (!election) {
          this.drops.unknownElection++;
          return;
        }
        if (!election.leader) {
          election.leader = true;
          this.#log(`leader of ${message.manifestId}`);
        }
        await this.#status(election.announce.manifestId, "downloading", "leader");
        this.#startJob(election);
        return;
      }
      case "electionClosed": {
        const election = this.#elections.get(message.manifestId);
        if (!election) {
          this.drops.unknownElection++;
          return;
        }
        election.closed = message;
        await this.#send({
          type: "closedAck",
          manifestId: message.manifestId,
          nodeId: this.options.nodeId,
        });
        this.#startJob(election);
        return;
      }
      default:
        this.drops.wrongDirection++;
    }
  }

  async #onAnnounce(announce: Announce): Promise<void> {
    const target = toHex(announce.targetDigest);
    const running = (await activeModels(this.options.dataDir)).get(announce.model) ?? null;
    if (running === target) {
      await this.#status(announce.manifestId, "up-to-date", "");
      return;
    }
    const base = announce.baseDigest ? toHex(announce.baseDigest) : null;
    if (base !== null && running !== base) {
      await this.#status(
        announce.manifestId,
        "failed",
        `runs ${running?.slice(0, 16) ?? "nothing"}, the patch needs base ${base.slice(0, 16)}`,
      );
      await this.heartbeat();
      return;
    }
    if (!this.#elections.has(announce.manifestId)) {
      this.#elections.set(announce.manifestId, { announce, leader: false });
    }
    await this.#send({
      type: "bid",
      manifestId: announce.manifestId,
      nodeId: this.options.nodeId,
    });
  }

  /** Starts (once per target) the download-apply-switch of an election. */
  #startJob(election: ElectionState): void {
    const target = toHex(election.announce.targetDigest);
    if (this.#jobs.has(target)) return;
    const job = this.#update(election).catch(async (err) => {
      if (this.#closed) return; // interrupted: the state file says where it stood
      const message = err instanceof Error ? err.message : String(err);
      this.#log(`update to ${target.slice(0, 16)} failed: ${message}`);
      await this.#recordFailure(election.announce, err, message).catch(() => {});
      await this.#status(election.announce.manifestId, "failed", message.slice(0, 256));
    }).finally(() => this.#jobs.delete(target));
    this.#jobs.set(target, job);
  }

  async #update(election: ElectionState): Promise<void> {
    const { announce } = election;
    const manifestId = announce.manifestId;
    const target = toHex(announce.targetDigest);
    const model = announce.model;
    const before = await readState(this.options.dataDir, model);
    if (isPoisoned(before, target, manifestId, this.#poisonAfter)) {
      const record = before.failures[target];
      await this.#status(
        manifestId,
        "failed",
        `poisoned: failed ${record.count} times in this rollout (last: ${record.last}); roll out again to retry`,
      );
      return;
    }
    const backup = await activeDigest(this.options.dataDir, model);
    const already = backup === target; // e.g. it got there before a restart
    if (!already) {
      await this.#checkDiskSpace(announce);
      const blob = toHex(announce.blobDigest);
      await this.#step(model, "downloading", { target, backup, manifestId, blob });
    }
    const haveTarget = await this.store.has(announce.targetDigest);
    if (election.leader) {
      // A leader needs the blob to seed, even if it has the target already.
      await this.#download(election, [this.#controlPlaneSource(announce)]);
      await this.#sendLeaderReady(election);
    } else if (!haveTarget) {
      const closed = election.closed;
      if (!closed) return; // a follower waits for ElectionClosed
      await this.#status(manifestId, "downloading", `from ${closed.leaderNodeId}`);
      await this.#download(election, [
        { hostname: closed.leaderHost, port: closed.leaderP2pPort, label: closed.leaderNodeId },
        this.#controlPlaneSource(announce),
      ]);
    }
    if (already) {
      await this.#status(manifestId, "active", announce.version);
      return;
    }
    await this.#step(model, "staged");
    if (!haveTarget) {
      await this.#status(manifestId, "downloaded", "");
      if (announce.baseDigest !== null) {
        const base = this.store.pathOf(announce.baseDigest);
        const patch = this.store.pathOf(announce.blobDigest);
        const summary = await applyFile(base, patch, this.store.pathOf(announce.targetDigest));
        if (summary.targetBlake3 !== target) {
          await this.store.remove(announce.targetDigest);
          throw new VerificationError(
            `the patch rebuilt ${summary.targetBlake3}, not the announced ${target}`,
          );
        }
        await this.#status(manifestId, "applied", "");
      }
    }
    await this.#step(model, "applied");
    const mode = await switchTo(this.options.dataDir, model, target);
    await this.#step(model, "switched");
    this.#log(`switched ${model} to ${announce.version} ${target.slice(0, 16)} (${mode})`);
    await this.#onSwitch(model);
    await this.#checkAndCommit(model, target, manifestId, announce.version);
  }

  /** Health check of a switched model: commit, or roll back to the backup. */
  async #checkAndCommit(model: string, target: string, manifestId: string, version: string) {
    const health = await this.#healthCheck(model, target);
    if (health.healthy) {
      const before = await readState(this.options.dataDir, model);
      const kept = [...new Set([before.backup, ...(before.kept ?? [])])]
        .filter((d): d is string => d !== null && d !== target)
        .slice(0, this.options.keepBackups ?? 1);
      await writeState(this.options.dataDir, {
        ...before,
        kept,
        step: "committed",
        updated: Date.now(),
      });
      this.options.hooks?.afterStepPersisted?.("committed", target);
      this.#log(`active ${model} ${version} ${target.slice(0, 16)} (healthy, committed)`);
      await this.#cleanUp().catch((err) => this.#log(`clean-up failed: ${err}`));
      await this.#status(manifestId, "active", version);
    } else {
      await this.#rollBack(model, health.reason);
      await this.#status(manifestId, "failed", `health check failed: ${health.reason}`);
    }
    await this.heartbeat();
  }

  async #healthCheck(model: string, target: string): Promise<HealthResult> {
    const path = await Deno.realPath(currentPath(this.options.dataDir, model));
    if (this.options.healthCmd === undefined) return await builtinHealthCheck(path, target);
    return await runHealthCommand(
      this.options.healthCmd,
      path,
      this.options.healthTimeoutMs ?? 60_000,
    );
  }

  /** Points current back at the backup and records the failure. */
  async #rollBack(model: string, reason: string): Promise<void> {
    const state = await readState(this.options.dataDir, model);
    if (state.backup !== null) await switchTo(this.options.dataDir, model, state.backup);
    else await Deno.remove(currentPath(this.options.dataDir, model)).catch(() => {});
    const failed = state.target && state.manifestId
      ? withFailure(state, state.target, state.manifestId, reason)
      : state;
    await writeState(this.options.dataDir, { ...failed, step: "rolledBack", updated: Date.now() });
    this.#log(`rolled ${model} back to ${state.backup?.slice(0, 16) ?? "nothing"}: ${reason}`);
    if (state.backup !== null) await this.#onSwitch(model);
  }

  /** Records a failed update (any step before the switch), back to idle. */
  async #recordFailure(announce: Announce, error: unknown, reason: string): Promise<void> {
    const model = announce.model;
    const state = await readState(this.options.dataDir, model);
    const target = toHex(announce.targetDigest);
    if (state.step === "switched") return await this.#rollBack(model, reason);
    const failed = error instanceof DiskSpaceError
      ? state // not the version's fault: it does not count towards the poison pill
      : withFailure(state, target, announce.manifestId, reason);
    await writeState(this.options.dataDir, { ...failed, step: "idle", updated: Date.now() });
  }

  /** Persists the next step of `model`'s update before it is taken. */
  async #step(
    model: string,
    step: Step,
    fields: Partial<Pick<ModelState, "target" | "backup" | "manifestId" | "blob">> = {},
  ): Promise<void> {
    const state = await readState(this.options.dataDir, model);
    const next = { ...state, ...fields, step, updated: Date.now() };
    await writeState(this.options.dataDir, next);
    this.options.hooks?.afterStepPersisted?.(step, next.target);
  }

  /** Refuses an update the filesystem has no room for (before any byte is downloaded). */
  async #checkDiskSpace(announce: Announce): Promise<void> {
    const needed = announce.blobSize + (announce.baseDigest === null ? 0 : announce.targetSize);
    const reserve = this.options.minFreeBytes ?? 64 * 1024 * 1024;
    const fs = await statfs(this.options.dataDir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    if (free - needed < reserve) {
      throw new DiskSpaceError(
        `not enough disk space for ${announce.model} ${announce.version}: needs ${
          formatBytes(needed)
        } plus ${formatBytes(reserve)} kept free, ${formatBytes(free)} available`,
      );
    }
  }

  /** Runs `--on-switch` (if given) for the model's current file; its failure is logged only. */
  async #onSwitch(model: string): Promise<void> {
    if (this.options.onSwitchCmd === undefined) return;
    const path = await Deno.realPath(currentPath(this.options.dataDir, model));
    const result = await runHealthCommand(this.options.onSwitchCmd, path, 60_000);
    if (!result.healthy) this.#log(`--on-switch for ${model}: ${result.reason}`);
  }

  /**
   * After a commit: removes every blob that is no model's active version, one
   * of its kept earlier versions (`keepBackups`), or the blob of its latest
   * update (kept to seed peers).
   */
  async #cleanUp(): Promise<void> {
    const keep = new Set<string>();
    for (const model of await modelNames(this.options.dataDir)) {
      const state = await readState(this.options.dataDir, model);
      const active = await activeDigest(this.options.dataDir, model);
      for (const d of [active, state.blob, state.target, ...(state.kept ?? [])]) if (d) keep.add(d);
      if (state.step !== "committed" && state.backup) keep.add(state.backup);
    }
    for (const digest of await this.store.list()) {
      const hex = toHex(digest);
      if (!keep.has(hex)) {
        await this.store.remove(digest);
        this.#readyBlobs.delete(hex);
        this.#log(`removed old blob ${hex.slice(0, 16)}`);
      }
    }
  }

  get #poisonAfter(): number {
    return this.options.poisonAfter ?? 3;
  }

  /**
   * After a restart: an update cut short before its switch goes back to idle
   * (its verified blobs stay, its partial download resumes later); one cut
   * short after the switch is health-checked again, then committed or rolled
   * back. Leftover temporary files are removed.
   */
  async #recover(): Promise<void> {
    await removeTemporaries(`${this.options.dataDir}/blobs`);
    for (const model of await modelNames(this.options.dataDir)) {
      await removeTemporaries(`${this.options.dataDir}/models/${model}`);
      const state = await readState(this.options.dataDir, model);
      if (state.step === "idle" || state.step === "committed" || state.step === "rolledBack") {
        continue;
      }
      const current = await activeDigest(this.options.dataDir, model);
      if (state.step !== "switched" && current !== state.target) {
        this.#log(
          `recovery: ${model}'s update to ${
            state.target?.slice(0, 16)
          } stopped at ${state.step}; idle`,
        );
        await writeState(this.options.dataDir, { ...state, step: "idle", updated: Date.now() });
        continue;
      }
      this.#log(
        `recovery: ${model} was switched to ${state.target?.slice(0, 16)}; checking it again`,
      );
      await this.#step(model, "switched");
      await this.#checkAndCommit(model, state.target!, state.manifestId ?? "r0", "recovered");
    }
  }

  async #download(
    election: ElectionState,
    sources: { hostname: string; port: number; label: string }[],
  ): Promise<void> {
    const { announce } = election;
    const blob = toHex(announce.blobDigest);
    if (await this.store.has(announce.blobDigest)) {
      this.#readyBlobs.add(blob);
      return;
    }
    let running = this.#downloads.get(blob);
    if (!running) {
      running = downloadBlob({
        sources,
        digest: announce.blobDigest,
        size: announce.blobSize,
        destination: this.store.pathOf(announce.blobDigest),
        partialPath: this.store.partialPathOf(announce.blobDigest),
        idleTimeoutMs: this.options.transferTimeoutMs,
        signal: this.#abort.signal,
      }).then((result) => {
        this.#readyBlobs.add(blob);
        this.#log(
          `downloaded ${
            blob.slice(0, 16)
          } from ${result.source}: ${result.bytesReceived} bytes received in ${result.attempts.length} attempt(s), resumed from ${result.resumedFrom}`,
        );
        for (const attempt of result.attempts) {
          if (attempt.error) this.#log(`  attempt at ${attempt.label} failed: ${attempt.error}`);
        }
      }).finally(() => this.#downloads.delete(blob));
      this.#downloads.set(blob, running);
    }
    await running;
  }

  #controlPlaneSource(announce: Announce) {
    return { hostname: announce.cpHost, port: announce.cpP2pPort, label: "control-plane" };
  }

  async #sendLeaderReady(election: ElectionState): Promise<void> {
    if (!election.leader || election.closed) return;
    await this.#send({
      type: "leaderReady",
      manifestId: election.announce.manifestId,
      nodeId: this.options.nodeId,
      p2pPort: this.blobServer.port,
    });
  }

  /** Repeats LeaderReady, for every election this agent leads and holds the blob of, until ElectionClosed. */
  #retransmit(): void {
    for (const election of this.#elections.values()) {
      const ready = this.#readyBlobs.has(toHex(election.announce.blobDigest));
      if (election.leader && ready && !election.closed) {
        this.#sendLeaderReady(election);
      }
    }
  }

  async #status(manifestId: string, state: StatusState, detail: string): Promise<void> {
    await this.#send({
      type: "status",
      manifestId,
      nodeId: this.options.nodeId,
      state,
      detail: detail.slice(0, 256),
    });
  }

  async #send(message: ControlMessage): Promise<void> {
    await this.socket.send(message, this.options.controlPlane);
  }
}

function encodeSize(message: ControlMessage): number {
  try {
    return encodeControlMessage(message).length;
  } catch {
    return Infinity;
  }
}

/** Names of the model directories under DATA/models. */
async function modelNames(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${dataDir}/models`)) {
    if (entry.isDirectory) out.push(entry.name);
  }
  return out;
}

/** Removes poolboy's temporary files (`.NAME.poolboy-XXXXXXXX.tmp`, `.current.X.tmp`) in `dir`. */
async function removeTemporaries(dir: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (/^\..*\.poolboy-[0-9a-f]{8}\.tmp$|^\.current\.[0-9a-f]+\.tmp$/.test(entry.name)) {
        await Deno.remove(`${dir}/${entry.name}`).catch(() => {});
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
