/**
 * A local fleet of real processes for end-to-end tests and scripts/fleet.ts:
 * one control plane and agents, each `deno run` of mod.ts (or of
 * faulty_main.ts with injected faults) on its own loopback address, with no
 * network permission beyond `--allow-net=127.0.0.0/8` and file permissions
 * limited to its own data directory. Logs go to files under the fleet's dir.
 *
 * By default a fleet has keys, as a real one does (docs/design.md, "Trust"):
 * `Fleet.start` runs `poolboy keygen root`, `keygen release` and `delegate`
 * into `DIR/keys/`, every agent pins `DIR/keys/root.pub` with `--trust-root`,
 * and `publish` signs with `--key/--keys` through the real `poolboy publish`.
 * `trust: "insecure"` gives the old unsigned fleet (`agent --insecure`,
 * `publish --unsigned`). `startRogueControlPlane` stops the real control plane
 * and starts another on a fresh data directory at the same address: a
 * replaced or compromised control plane, which holds no key.
 *
 * Operators authenticate as on a real fleet: before a control plane starts,
 * `poolboy token create --role admin` on its data dir makes its token, which
 * `api` sends (Authorization: Bearer) and `operator` commands get as
 * POOLBOY_TOKEN. Devices enrol as on a real fleet: each agent that has no
 * `enrollment.json` yet starts with `--enroll TOKEN`, a one-use enrolment
 * token the harness makes through the control plane's API.
 *
 * @module
 */

import type {
  DocumentStored,
  PublishResult,
  RolloutInfo,
  StatusReport,
} from "../controlplane/api_types.ts";
import type { TransportFaults } from "../transfer/faults.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MOD = `${ROOT}mod.ts`;
const FAULTY = `${ROOT}testkit/faulty_main.ts`;

/** Ports every process uses (each has its own address). */
export const PORTS = { cpUdp: 7400, cpP2p: 7401, cpHttp: 7402, udp: 7410, p2p: 7411 };

/**
 * Blob server flags of every process: on loopback every agent's downloads come
 * from 127.0.0.1 (the kernel's source address), so the per-address cap, meant
 * for one device per address, is lifted to the global one.
 */
const LOOPBACK_BLOB_LIMITS = ["--blob-connections-per-address", "64"];

/** One agent of the fleet. */
export interface AgentSpec {
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  /** `agent --device-class`. */
  readonly deviceClass?: string;
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
  /**
   * "signed" (the default): keys in `DIR/keys/`, agents pin its root.pub and
   * publish signs; "insecure": agents run `--insecure`, publish `--unsigned`.
   */
  readonly trust?: "signed" | "insecure";
}

/** The key files of a fleet (or of a rogue), as `poolboy keygen` and `delegate` write them. */
export interface KeyFiles {
  readonly dir: string;
  readonly rootKey: string;
  readonly rootPub: string;
  readonly releaseKey: string;
  readonly releasePub: string;
  /** The delegation (keys.json): the root-signed list of release keys. */
  readonly delegation: string;
}

/** How `Fleet.publish` publishes. */
export interface PublishOptions {
  /** `--unsigned`: no manifest (the default of an insecure fleet). */
  readonly unsigned?: boolean;
  /** `--key` (default: the fleet's release key). */
  readonly key?: string;
  /** `--keys` (default: the fleet's delegation). */
  readonly keys?: string;
  readonly counter?: number;
  /** `--expires`, e.g. `90d`. */
  readonly expires?: string;
  readonly deviceClass?: string;
}

/** The output of a `poolboy` command run by `runPoolboy`. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
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
  /** The fleet's genuine keys; undefined for an insecure fleet. */
  keys: KeyFiles | undefined;
  /**
   * The running control plane's admin token (`poolboy token create` on its
   * data dir before it starts): `api` sends it, `operator` passes it as
   * POOLBOY_TOKEN. One per data dir (a rogue control plane has its own).
   */
  token: string | undefined;
  readonly #tokens = new Map<string, string>();
  /** The last enrolment token asked for (they are asked for one at a time). */
  #enrolling: Promise<void> = Promise.resolve();
  cp: Proc | undefined;
  readonly agents = new Map<string, Proc>();

  private constructor(options: FleetOptions) {
    this.options = options;
    this.url = `http://${options.cpHost}:${PORTS.cpHttp}`;
  }

  /** Starts the control plane, waits for its API, then starts every agent. */
  static async start(options: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(options);
    if ((options.trust ?? "signed") === "signed") {
      fleet.keys = await makeKeys(`${options.dir}/keys`);
    }
    await fleet.startControlPlane();
    await Promise.all(options.agents.map((a) => fleet.startAgent(a.nodeId)));
    return fleet;
  }

  /** Starts the control plane on `data` (default `DIR/cp`) and waits for its API. */
  async startControlPlane(data = `${this.options.dir}/cp`): Promise<void> {
    const { cpHost } = this.options;
    await Deno.mkdir(data, { recursive: true });
    this.token = await this.#adminToken(data);
    this.cp = spawn(
      this.options.cpFaults,
      [
        "controlplane",
        "--bind",
        cpHost,
        "--data",
        data,
        // Every agent connects from 127.0.0.1 on loopback: the per-address cap is for real devices.
        ...LOOPBACK_BLOB_LIMITS,
        ...(this.options.cpArgs ?? []),
      ],
      data,
      `${data}.log`,
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

  /**
   * A compromised control plane: stops the real one and starts another on a
   * fresh data directory (`DIR/rogue-cp`) at the same address, with the real
   * one's key and enrolled devices (what an attacker who took its host has), so
   * that devices hear it — but with none of its versions, releases or
   * delegation, and no release key.
   */
  async startRogueControlPlane(): Promise<void> {
    await this.killControlPlane();
    const real = `${this.options.dir}/cp`;
    const rogue = `${this.options.dir}/rogue-cp`;
    await Deno.mkdir(rogue, { recursive: true });
    for (const file of ["controlplane.key", "controlplane.pub"]) {
      await Deno.copyFile(`${real}/${file}`, `${rogue}/${file}`);
    }
    await Deno.chmod(`${rogue}/controlplane.key`, 0o600);
    const { DatabaseSync } = await import("node:sqlite");
    const from = new DatabaseSync(`${real}/controlplane.sqlite`, { readOnly: true });
    const rows = from.prepare("SELECT * FROM device_keys").all();
    from.close();
    const { SqliteStore } = await import("../controlplane/sqlite_store.ts");
    const to = await SqliteStore.open(`${rogue}/controlplane.sqlite`);
    for (const row of rows) {
      await to.putDeviceKey({
        nodeId: String(row.node_id),
        region: String(row.region),
        publicKey: String(row.public_key),
        enrolled: Number(row.enrolled),
      });
    }
    await to.close();
    await this.startControlPlane(rogue);
  }

  /** Starts an agent (again); `faults` overrides its spec's for this start. */
  async startAgent(nodeId: string, faults?: AgentSpec["faults"]): Promise<void> {
    const spec = { ...this.spec(nodeId), ...(faults === undefined ? {} : { faults }) };
    const data = `${this.options.dir}/${nodeId}`;
    await Deno.mkdir(data, { recursive: true });
    const enroll = await this.#enrollArgs(data);
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
          ...(this.keys ? ["--trust-root", this.keys.rootPub] : ["--insecure"]),
          ...(spec.deviceClass === undefined ? [] : ["--device-class", spec.deviceClass]),
          ...LOOPBACK_BLOB_LIMITS,
          ...enroll,
          ...(this.options.agentArgs ?? []),
        ],
        data,
        `${this.options.dir}/${nodeId}.log`,
        this.keys ? [this.keys.dir] : [],
        ["--allow-sys=statfs", ...(this.options.agentPermissions ?? [])],
      ),
    );
  }

  /**
   * `--enroll TOKEN` for an agent on `data` that is not enrolled yet: a
   * one-use enrolment token of the running control plane (its API, as an
   * admin); nothing once `data/enrollment.json` exists.
   */
  async #enrollArgs(data: string): Promise<string[]> {
    try {
      await Deno.lstat(`${data}/enrollment.json`);
      return [];
    } catch {
      // not enrolled yet
    }
    // One call at a time: agents start together, and the API caps connections per address.
    const made = this.#enrolling.then(() =>
      this.api<{ token: string }>(
        "POST",
        "/v1/enrollment-tokens",
        JSON.stringify({ uses: 1, expiresMs: 600_000 }),
      )
    );
    this.#enrolling = made.then(() => {}, () => {});
    return ["--enroll", (await made).token];
  }

  /** The admin token of the control plane on `data`, made with `poolboy token create` once. */
  async #adminToken(data: string): Promise<string> {
    const known = this.#tokens.get(data);
    if (known !== undefined) return known;
    const out = await checked([
      "token",
      "create",
      "--data",
      data,
      "--role",
      "admin",
      "--name",
      "fleet-harness",
      "--json",
      "--quiet",
    ]);
    const { token } = JSON.parse(out) as { token: string };
    this.#tokens.set(data, token);
    return token;
  }

  /** POOLBOY_TOKEN for an operator command: the running control plane's admin token. */
  #tokenEnv(): Record<string, string> {
    return this.token === undefined ? {} : { POOLBOY_TOKEN: this.token };
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
    const r = await fetch(`${this.url}${path}`, {
      method,
      body,
      headers: this.token === undefined ? {} : { authorization: `Bearer ${this.token}` },
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
    return JSON.parse(text) as T;
  }

  /**
   * `poolboy publish` of `path` as `model` `version`, signed with the fleet's
   * keys (or as `options` say); throws with its error line if it fails.
   */
  async publish(
    model: string,
    version: string,
    path: string,
    options: PublishOptions = {},
  ): Promise<PublishResult & { release: DocumentStored | null }> {
    const unsigned = options.unsigned ?? this.keys === undefined;
    const signing = unsigned ? ["--unsigned"] : [
      "--key",
      options.key ?? this.keys!.releaseKey,
      "--keys",
      options.keys ?? this.keys!.delegation,
    ];
    const optional = [
      ...(options.counter === undefined ? [] : ["--counter", String(options.counter)]),
      ...(options.expires === undefined ? [] : ["--expires", options.expires]),
      ...(options.deviceClass === undefined ? [] : ["--device-class", options.deviceClass]),
    ];
    const out = await this.operator([
      "publish",
      "--control-plane",
      this.url,
      "--model",
      model,
      "--version",
      version,
      "--json",
      ...signing,
      ...optional,
      path,
    ]);
    return JSON.parse(out) as PublishResult & { release: DocumentStored | null };
  }

  /**
   * `poolboy rollback` to `to` (default: the version rolled out before the
   * newest), re-signed with the fleet's keys; returns the rollback's rollout.
   */
  async rollback(model: string, to?: string): Promise<RolloutInfo> {
    const signing = this.keys
      ? ["--key", this.keys.releaseKey, "--keys", this.keys.delegation]
      : ["--unsigned"];
    const out = await this.operator([
      "rollback",
      "--control-plane",
      this.url,
      "--model",
      model,
      "--json",
      ...(to === undefined ? [] : ["--to", to]),
      ...signing,
    ]);
    return JSON.parse(out) as RolloutInfo;
  }

  /** Runs an operator command against this fleet; its stdout, or throws with its stderr. */
  async operator(args: string[], env: Record<string, string> = {}): Promise<string> {
    const r = await runPoolboy(args, { ...this.#tokenEnv(), ...env });
    if (r.code !== 0) {
      throw new Error(`poolboy ${args[0]} exited ${r.code}: ${r.stderr.trim()}`);
    }
    return r.stdout;
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

/**
 * Runs `poolboy ARGS` (mod.ts) as the operator's workstation would, with
 * `env` added to an environment that has no POOLBOY_TOKEN of the caller's.
 */
export async function runPoolboy(
  args: string[],
  env: Record<string, string> = {},
): Promise<CommandResult> {
  const inherited = Deno.env.toObject();
  delete inherited.POOLBOY_TOKEN;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--config=${ROOT}deno.json`,
      "--allow-read",
      "--allow-write",
      "--allow-net=127.0.0.0/8",
      "--allow-env",
      MOD,
      ...args,
    ],
    env: { ...inherited, ...env },
    clearEnv: true,
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/**
 * Makes a root key, a release key and the root-signed delegation naming it in
 * `dir` with `poolboy keygen` and `poolboy delegate` (what an operator runs).
 */
export async function makeKeys(dir: string): Promise<KeyFiles> {
  await Deno.mkdir(dir, { recursive: true });
  const keys: KeyFiles = {
    dir,
    rootKey: `${dir}/root.key`,
    rootPub: `${dir}/root.pub`,
    releaseKey: `${dir}/release.key`,
    releasePub: `${dir}/release.pub`,
    delegation: `${dir}/keys.json`,
  };
  for (const args of [["keygen", "root", "-o", dir], ["keygen", "release", "-o", dir]]) {
    await checked(args);
  }
  await checked([
    "delegate",
    "--root",
    keys.rootKey,
    "--release",
    keys.releasePub,
    "-o",
    keys.delegation,
  ]);
  return keys;
}

async function checked(args: string[]): Promise<string> {
  const r = await runPoolboy(args);
  if (r.code !== 0) {
    throw new Error(`poolboy ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return r.stdout;
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

/**
 * The bytes the control plane served of model files and patches: its
 * `served` less the signed documents (delegation, manifests), which every
 * agent that pins a root fetches from it before it bids.
 */
export function modelBytesServed(status: StatusReport): number {
  const models = new Set([
    ...status.versions.map((v) => v.digest),
    ...status.patches.map((p) => p.digest),
  ]);
  return Object.entries(status.controlPlane.servedByDigest)
    .filter(([digest]) => models.has(digest))
    .reduce((sum, [, bytes]) => sum + bytes, 0);
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
