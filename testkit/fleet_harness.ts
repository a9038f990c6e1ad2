/**
 * A local fleet of real processes for end-to-end tests and scripts/fleet.ts:
 * one control plane and agents, each `deno run` of mod.ts (or of
 * faulty_main.ts with injected faults) on its own loopback address, with no
 * network permission beyond `--allow-net=127.0.0.0/8` and file permissions
 * limited to its own data directory. Logs go to files under the fleet's dir.
 *
 * @module
 */

import type { StatusReport } from "../controlplane/api_types.ts";
import type { TransportFaults } from "../transfer/faults.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MOD = `${ROOT}mod.ts`;
const FAULTY = `${ROOT}testkit/faulty_main.ts`;

/** Ports every process uses (each has its own address). */
export const PORTS = { cpUdp: 7400, cpP2p: 7401, cpHttp: 7402, udp: 7410, p2p: 7411 };

/** One agent of the fleet. */
export interface AgentSpec {
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  /** Transport faults and agent crash hooks (testkit/faulty_main.ts). */
  readonly faults?: TransportFaults & {
    seed?: number;
    crashAfterStep?: string;
    crashTarget?: string;
  };
}

/** Options of `Fleet.start`. */
export interface FleetOptions {
  /** Working directory (data dirs and logs); must exist. */
  readonly dir: string;
  /** Control plane address, e.g. 127.0.0.2. */
  readonly cpHost: string;
  readonly agents: AgentSpec[];
  /** Extra control plane flags (timeouts). */
  readonly cpArgs?: string[];
  /** Extra agent flags. */
  readonly agentArgs?: string[];
  /** Extra Deno permissions for agents (e.g. `--allow-run=sh` for a health command). */
  readonly agentPermissions?: string[];
  readonly cpFaults?: TransportFaults & { seed?: number };
}

/** A running process of the fleet. */
class Proc {
  readonly child: Deno.ChildProcess;
  readonly #logs: Promise<unknown>;
  constructor(child: Deno.ChildProcess, logPath: string) {
    this.child = child;
    this.#logs = Promise.allSettled([
      (async () => {
        const log = await Deno.open(logPath, { write: true, create: true, append: true });
        try {
          for await (const chunk of child.stderr) await log.write(chunk);
        } finally {
          log.close();
        }
      })(),
      child.stdout.pipeTo(new WritableStream()),
    ]);
  }
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
    await this.child.status;
    await this.#logs;
  }
}

/** A control plane and its agents. */
export class Fleet {
  readonly options: FleetOptions;
  readonly url: string;
  cp: Proc | undefined;
  readonly agents = new Map<string, Proc>();

  private constructor(options: FleetOptions) {
    this.options = options;
    this.url = `http://${options.cpHost}:${PORTS.cpHttp}`;
  }

  /** Starts the control plane, waits for its API, then starts every agent. */
  static async start(options: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(options);
    await fleet.startControlPlane();
    await Promise.all(options.agents.map((a) => fleet.startAgent(a.nodeId)));
    return fleet;
  }

  async startControlPlane(): Promise<void> {
    const { dir, cpHost } = this.options;
    const data = `${dir}/cp`;
    await Deno.mkdir(data, { recursive: true });
    this.cp = spawn(
      this.options.cpFaults,
      [
        "controlplane",
        "--bind",
        cpHost,
        "--data",
        data,
        ...(this.options.cpArgs ?? []),
      ],
      data,
      `${dir}/cp.log`,
      // Encoding patches starts a hashing Worker, whose modules (codec/, kernel/) need read access.
      [`${ROOT}codec`, `${ROOT}kernel`],
    );
    await this.waitFor(
      async () => {
        try {
          const r = await fetch(`${this.url}/health`);
          await r.body?.cancel();
          return r.ok;
        } catch {
          return false;
        }
      },
      30_000,
      "the control plane's API to answer",
    );
  }

  /** Starts an agent (again); `faults` overrides its spec's for this start. */
  async startAgent(nodeId: string, faults?: AgentSpec["faults"]): Promise<void> {
    const spec = { ...this.spec(nodeId), ...(faults === undefined ? {} : { faults }) };
    const data = `${this.options.dir}/${nodeId}`;
    await Deno.mkdir(data, { recursive: true });
    this.agents.set(
      nodeId,
      spawn(
        spec.faults,
        [
          "agent",
          "--control-plane",
          this.options.cpHost,
          "--bind",
          spec.host,
          "--node-id",
          nodeId,
          "--region",
          spec.region,
          "--data",
          data,
          ...(this.options.agentArgs ?? []),
        ],
        data,
        `${this.options.dir}/${nodeId}.log`,
        [],
        ["--allow-sys=statfs", ...(this.options.agentPermissions ?? [])],
      ),
    );
  }

  spec(nodeId: string): AgentSpec {
    const spec = this.options.agents.find((a) => a.nodeId === nodeId);
    if (!spec) throw new Error(`no agent ${nodeId}`);
    return spec;
  }

  /** Waits for an agent's process to exit by itself; returns its exit code. */
  async agentExited(nodeId: string): Promise<number> {
    const proc = this.agents.get(nodeId);
    if (!proc) throw new Error(`agent ${nodeId} is not running`);
    const { code } = await proc.child.status;
    await proc.kill();
    this.agents.delete(nodeId);
    return code;
  }

  async killAgent(nodeId: string, signal: Deno.Signal = "SIGKILL"): Promise<void> {
    await this.agents.get(nodeId)?.kill(signal);
    this.agents.delete(nodeId);
  }

  async killControlPlane(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    await this.cp?.kill(signal);
    this.cp = undefined;
  }

  /** Stops every process. */
  async stop(): Promise<void> {
    await Promise.all([...this.agents.keys()].map((id) => this.killAgent(id, "SIGTERM")));
    await this.killControlPlane("SIGTERM");
  }

  async api<T>(method: string, path: string, body?: BodyInit): Promise<T> {
    const r = await fetch(`${this.url}${path}`, { method, body });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
    return JSON.parse(text) as T;
  }

  async publish(
    model: string,
    version: string,
    path: string,
  ): Promise<{ version: { digest: string } }> {
    const file = await Deno.open(path);
    return await this.api("PUT", `/v1/models/${model}/versions/${version}`, file.readable);
  }

  async rollout(model: string, version: string, region?: string): Promise<{ id: number }> {
    return await this.api("POST", "/v1/rollouts", JSON.stringify({ model, version, region }));
  }

  async status(): Promise<StatusReport> {
    return await this.api("GET", "/v1/status");
  }

  /** Waits until every agent in the status runs `digest` for `model`. */
  async converged(model: string, digest: string, nodeIds: string[], timeoutMs = 60_000) {
    let last: StatusReport | undefined;
    await this.waitFor(
      async () => {
        last = await this.status().catch(() => undefined);
        if (!last) return false;
        return nodeIds.every((id) =>
          last!.agents.find((a) => a.nodeId === id)?.active[model] === digest
        );
      },
      timeoutMs,
      `agents to run ${digest.slice(0, 16)}`,
      () => JSON.stringify(last?.rollouts.at(-1), null, 1),
    );
    return last!;
  }

  async waitFor(
    predicate: () => Promise<boolean>,
    timeoutMs: number,
    what: string,
    detail?: () => string,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await predicate()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(
      `timed out after ${timeoutMs} ms waiting for ${what}${detail ? `: ${detail()}` : ""}`,
    );
  }
}

function spawn(
  faults: (TransportFaults & { seed?: number }) | undefined,
  args: string[],
  data: string,
  logPath: string,
  readable: string[] = [],
  permissions: string[] = [],
): Proc {
  const script = faults ? [FAULTY, JSON.stringify(faults)] : [MOD];
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--config=${ROOT}deno.json`,
      "--allow-net=127.0.0.0/8",
      `--allow-read=${[data, ...readable].join(",")}`,
      `--allow-write=${data}`,
      "--allow-env=CBOR_NATIVE_ACCELERATION_DISABLED",
      ...permissions,
      ...script,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new Proc(child, logPath);
}

/** The BLAKE3 of the active model file of an agent, read through its `current` symlink. */
export async function activeFileDigest(
  dir: string,
  nodeId: string,
  model: string,
): Promise<string> {
  const { hashFile } = await import("../codec/hash_file.ts");
  return await hashFile(`${dir}/${nodeId}/models/${model}/current`);
}
