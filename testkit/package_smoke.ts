/**
 * Smoke test of one installed poolboy package (or a `deno compile` binary):
 * given its `poolboy` command, checks that
 *
 * 1. `poolboy --version` names VERSION (kernel/version.ts) and `linux-<label>`;
 * 2. `encode` then `apply` of a small synthetic SafeTensors pair (testkit/corpus.ts,
 *    a few MB, last layer changed) gives back the target byte for byte; each
 *    command's peak RSS is measured with `/usr/bin/time -f %M`;
 * 3. the fleet: a control plane run natively (`controlPlanePoolboy`, the x86_64
 *    package's launcher) and an agent run by the command under test, each with
 *    the permissions its launcher gives, inside ONE private network namespace
 *    (`unshare -n` holding it, `nsenter -n` for every process; lo up with
 *    100.64.0.1/32 for the control plane and 100.64.0.11/32 for the agent).
 *    Keys (`keygen root|release`, `delegate`), a deployer and an admin token
 *    (`token create`), an enrolment token (`device enroll-token`), the agent
 *    enrols with `--enroll` and pins `--trust-root root.pub`; v1 (the base:
 *    whole file) and v2 (the target: a patch) are published and rolled out; each
 *    must be active on the agent (`status --json`) before a deadline, move as
 *    `wholeFile` then `patch`, and the agent's current file must hash (BLAKE3)
 *    to the release's digest.
 *
 * Every process runs with a deadline and is killed with its children on any
 * exit; the work directory is removed. Without permission to make a network
 * namespace (not root) the fleet is skipped with the reason.
 *
 * As a program: `deno run -A testkit/package_smoke.ts --poolboy PATH --label x86_64|aarch64
 * [--control-plane-poolboy PATH] [--env NAME=VALUE]... [--no-fleet] [--model-bytes N]`
 * prints a short summary and exits 1 naming the failing step. For an aarch64
 * package on x86_64, `--qemu` sets up qemu-user first (testkit/qemu.ts).
 *
 * @module
 */

import { blake3, toHex } from "../kernel/blake3.ts";
import { PoolboyError } from "../kernel/errors.ts";
import { VERSION } from "../kernel/version.ts";
import { writeScenario } from "./corpus.ts";
import { aarch64Runner } from "./qemu.ts";

/** The targets a package is built for. */
export type SmokeLabel = "x86_64" | "aarch64";

/** What to smoke-test. */
export interface SmokeOptions {
  /** The command under test: a package's `poolboy` launcher or a compiled binary. */
  readonly poolboy: string;
  /** The architecture it must report (`linux-<label>`). */
  readonly label: SmokeLabel;
  /** The native command that runs the control plane and the operator's commands (default: `poolboy`). */
  readonly controlPlanePoolboy?: string;
  /** Environment for the command under test (e.g. QEMU_LD_PREFIX from `aarch64Runner`). */
  readonly env?: Record<string, string>;
  /** Run the fleet part (default true). */
  readonly fleet?: boolean;
  /** Size of the synthetic base model (default 3 MB). */
  readonly modelBytes?: number;
  /** Where to make the work directory (default: the system's temp dir). */
  readonly tmpDir?: string;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** Deadline of each of `--version`, `encode` and `apply` (default `COMMAND_TIMEOUT_MS`). */
  readonly commandTimeoutMs?: number;
}

/** One command's run: wall time and peak RSS (KiB; undefined without /usr/bin/time). */
export interface CommandStat {
  readonly name: string;
  readonly ms: number;
  readonly rssKiB: number | undefined;
}

/** How one release reached the agent. */
export interface ReleaseStat {
  readonly version: string;
  readonly digest: string;
  readonly transfer: string;
  readonly blobSize: number;
  /** From `rollout` to the agent active on it. */
  readonly ms: number;
}

/** The fleet part's outcome. */
export type FleetOutcome =
  | {
    readonly kind: "ran";
    readonly agentOnlineMs: number;
    readonly releases: readonly ReleaseStat[];
    /** The agent's peak RSS (VmHWM of its process), KiB. */
    readonly agentRssKiB: number | undefined;
    readonly controlPlaneRssKiB: number | undefined;
  }
  | { readonly kind: "skipped"; readonly why: string };

/** What the smoke test found (it throws `SmokeError` on any failure). */
export interface SmokeReport {
  readonly label: SmokeLabel;
  readonly versionLine: string;
  readonly commands: readonly CommandStat[];
  readonly modelBytes: number;
  readonly patchBytes: number;
  /** BLAKE3 of the patch `encode` made (the same on every architecture). */
  readonly patchDigest: string;
  readonly fleet: FleetOutcome;
  readonly totalMs: number;
}

/** A smoke step failed: `step` names it, the message says what happened. */
export class SmokeError extends PoolboyError {
  readonly step: string;
  constructor(step: string, message: string) {
    super(`${step}: ${message}`, 1);
    this.step = step;
  }
}

/** Deadline of one short command (qemu: `--version` takes 5-8 s cold). */
export const COMMAND_TIMEOUT_MS = 120_000;
/** Deadline of each wait for the fleet (agent online, each version active). */
export const WAIT_TIMEOUT_MS = 120_000;
/** Deadline of one status poll. */
const POLL_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 500;
/** Output kept of a command (the rest is dropped; status JSON of one agent is a few KB). */
const OUTPUT_LIMIT = 1 << 20;
/** How long a daemon gets to stop after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 10_000;
const DEFAULT_MODEL_BYTES = 3_000_000;
const MAX_MODEL_BYTES = 256 * 1024 * 1024;

const CP_IP = "100.64.0.1";
const AGENT_IP = "100.64.0.11";
const CP_URL = `http://${CP_IP}:7402`;
const MODEL = "m";
const TIME = "/usr/bin/time";

// ---------------------------------------------------------------------------
// Processes

/**
 * Sends `signal` to the process group `pid` leads: every child is started by
 * `setsid`, so the group is the command and everything it started (the
 * launcher's runtime, /usr/bin/time's child, qemu).
 */
function killGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // gone already
  }
}

/**
 * A field (kB) of /proc/PID/status, through `sed`: Deno refuses /proc to
 * anything but --allow-all.
 */
async function procStatusKiB(pid: number, name: string): Promise<number | undefined> {
  try {
    const out = await new Deno.Command("sed", {
      args: ["-n", `s/^${name}:[[:space:]]*\\([0-9]*\\) kB$/\\1/p`, `/proc/${pid}/status`],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    return out.success && /^[0-9]+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** Reads a stream to its end, keeping at most `limit` bytes. */
async function readBounded(stream: ReadableStream<Uint8Array>, limit: number): Promise<string> {
  const parts: Uint8Array[] = [];
  let kept = 0;
  for await (const chunk of stream) {
    if (kept >= limit) continue;
    const piece = chunk.subarray(0, limit - kept);
    parts.push(piece);
    kept += piece.length;
  }
  const all = new Uint8Array(kept);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new TextDecoder().decode(all);
}

/** The last line of `text` that is not empty (for one-line failure reasons). */
function lastLine(text: string): string {
  return text.trim().split("\n").at(-1)?.trim() ?? "";
}

/** A finished command. */
interface Finished {
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  readonly rssKiB: number | undefined;
}

/** How to run one command. */
interface RunSpec {
  readonly step: string;
  readonly argv: readonly string[];
  readonly env: Record<string, string>;
  /** Measure its peak RSS with /usr/bin/time. */
  readonly rss?: boolean;
  /** Run it in this namespace. */
  readonly netns?: Netns;
  readonly timeoutMs?: number;
}

/** The environment every child gets: no inherited secrets or stray POOLBOY_* settings. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  for (const name of ["PATH", "HOME", "TMPDIR", "LANG"]) {
    const v = Deno.env.get(name);
    if (v !== undefined) env[name] = v;
  }
  env.PATH ??= "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  return env;
}

/** Processes the smoke test started and has not reaped yet: killed by `cleanup`. */
class Processes {
  readonly #live = new Set<Deno.ChildProcess>();
  #timeFile = 0;
  readonly #dir: string;
  readonly #haveTime: boolean;

  constructor(dir: string, haveTime: boolean) {
    this.#dir = dir;
    this.#haveTime = haveTime;
  }

  /** Runs a command to completion; throws `SmokeError(step)` on a non-zero exit or the deadline. */
  async run(spec: RunSpec): Promise<Finished> {
    const timeFile = `${this.#dir}/time.${this.#timeFile++}`;
    const measured = spec.rss === true && this.#haveTime;
    const argv = [
      ...(spec.netns?.prefix() ?? []),
      ...(measured ? [TIME, "-f", "%M", "-o", timeFile] : []),
      ...spec.argv,
    ];
    const t0 = performance.now();
    const child = this.#spawn(argv, spec.env, "piped");
    const timeoutMs = spec.timeoutMs ?? COMMAND_TIMEOUT_MS;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid, "SIGKILL");
    }, timeoutMs);
    let stdout: string;
    let stderr: string;
    let status: Deno.CommandStatus;
    try {
      [stdout, stderr, status] = await Promise.all([
        readBounded(child.stdout, OUTPUT_LIMIT),
        readBounded(child.stderr, OUTPUT_LIMIT),
        child.status,
      ]);
    } finally {
      clearTimeout(timer);
      this.#live.delete(child);
    }
    const ms = performance.now() - t0;
    const name = `poolboy ${spec.argv.slice(1, 3).join(" ")}`;
    if (timedOut) {
      throw new SmokeError(spec.step, `${name} did not finish within ${timeoutMs / 1000} s`);
    }
    if (!status.success) {
      const detail = lastLine(stderr) || lastLine(stdout);
      throw new SmokeError(
        spec.step,
        `${name} failed (exit ${status.code}${status.signal ? `, ${status.signal}` : ""})${
          detail ? `: ${detail}` : ""
        }`,
      );
    }
    let rssKiB: number | undefined;
    if (measured) {
      const text = await Deno.readTextFile(timeFile).catch(() => "");
      const n = Number(lastLine(text));
      rssKiB = lastLine(text) !== "" && Number.isSafeInteger(n) ? n : undefined;
    }
    return { stdout, stderr, ms, rssKiB };
  }

  /** Starts a long-running command with its output appended to `logPath`. */
  async start(argv: readonly string[], env: Record<string, string>, logPath: string) {
    const log = await Deno.open(logPath, { write: true, create: true, append: true });
    const child = this.#spawn(argv, env, "piped");
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (let chunk of stream) {
        while (chunk.length > 0) chunk = chunk.subarray(await log.write(chunk));
      }
    };
    const pumps = Promise.all([pump(child.stdout), pump(child.stderr)])
      .catch(() => {}).finally(() => log.close());
    return new Daemon(child, pumps, this.#live);
  }

  /** Kills every process still running (and its children) and waits for them. */
  async cleanup(): Promise<void> {
    for (const child of [...this.#live]) {
      killGroup(child.pid, "SIGKILL");
      await child.status.catch(() => {});
      this.#live.delete(child);
    }
  }

  #spawn(argv: readonly string[], env: Record<string, string>, out: "piped") {
    const child = new Deno.Command("setsid", {
      args: [...argv],
      env,
      clearEnv: true,
      stdin: "null",
      stdout: out,
      stderr: out,
    }).spawn();
    this.#live.add(child);
    return child;
  }
}

/** A long-running process (control plane, agent). */
class Daemon {
  readonly #child: Deno.ChildProcess;
  readonly #pumps: Promise<unknown>;
  readonly #live: Set<Deno.ChildProcess>;
  #exited: Deno.CommandStatus | undefined;

  constructor(child: Deno.ChildProcess, pumps: Promise<unknown>, live: Set<Deno.ChildProcess>) {
    this.#child = child;
    this.#pumps = pumps;
    this.#live = live;
    void child.status.then((s) => {
      this.#exited = s;
    });
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Its exit status, once it exited. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  /** Its peak RSS so far (VmHWM), KiB. */
  peakRssKiB(): Promise<number | undefined> {
    return procStatusKiB(this.#child.pid, "VmHWM");
  }

  /** SIGTERM, then SIGKILL (with its children) after the grace period; waits for it and its log. */
  async stop(): Promise<void> {
    if (this.#exited === undefined) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // exited meanwhile
      }
      const timer = setTimeout(() => killGroup(this.#child.pid, "SIGKILL"), STOP_GRACE_MS);
      await this.#child.status;
      clearTimeout(timer);
    }
    killGroup(this.#child.pid, "SIGKILL");
    this.#live.delete(this.#child);
    await this.#pumps;
  }
}

// ---------------------------------------------------------------------------
// Network namespace

/**
 * A private network namespace held by `unshare -n sleep`: commands enter it
 * with `nsenter -t PID -n`. lo is up with the control plane's and the agent's
 * 100.64.x.x addresses.
 */
export class Netns {
  readonly #holder: Deno.ChildProcess;
  readonly #stdout: ReadableStreamDefaultReader<Uint8Array>;

  private constructor(holder: Deno.ChildProcess) {
    this.#holder = holder;
    this.#stdout = holder.stdout.getReader();
  }

  /** Makes one, or says why it cannot (not root, no unshare/nsenter/ip). */
  static async create(): Promise<Netns | { why: string }> {
    let holder: Deno.ChildProcess;
    try {
      // "ready" is printed from inside the new namespace: then nsenter enters that one.
      holder = new Deno.Command("setsid", {
        args: ["unshare", "-n", "--", "sh", "-c", "echo ready; exec sleep 3600"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      return {
        why: `cannot run setsid/unshare (util-linux): ${err instanceof Error ? err.message : err}`,
      };
    }
    const ns = new Netns(holder);
    let seen = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), 10_000);
    });
    try {
      while (!seen.includes("ready\n") && seen.length < 1000) {
        const r = await Promise.race([ns.#stdout.read(), timeout]);
        if (r === "timeout") {
          await ns.close();
          return { why: "unshare -n did not make a network namespace within 10 s" };
        }
        if (r.done) break;
        seen += new TextDecoder().decode(r.value);
      }
    } finally {
      clearTimeout(timer);
    }
    if (!seen.includes("ready\n")) {
      const status = await holder.status;
      const err = await readBounded(holder.stderr, 4096);
      await ns.close();
      return {
        why: `unshare -n is not permitted here (${
          lastLine(err) || `exit ${status.code}`
        }): making a network namespace needs root`,
      };
    }
    for (
      const args of [
        ["link", "set", "lo", "up"],
        ["addr", "add", `${CP_IP}/32`, "dev", "lo"],
        ["addr", "add", `${AGENT_IP}/32`, "dev", "lo"],
      ]
    ) {
      const out = await new Deno.Command("nsenter", {
        args: ["-t", String(holder.pid), "-n", "--", "ip", ...args],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        signal: AbortSignal.timeout(10_000),
      }).output().catch((err: unknown) => ({
        success: false,
        stderr: new TextEncoder().encode(err instanceof Error ? err.message : String(err)),
      }));
      if (!out.success) {
        await ns.close();
        return {
          why: `cannot set up the namespace (ip ${args.join(" ")}): ${
            lastLine(new TextDecoder().decode(out.stderr))
          }`,
        };
      }
    }
    return ns;
  }

  /** The argv prefix that runs a command inside. */
  prefix(): string[] {
    return ["nsenter", "-t", String(this.#holder.pid), "-n", "--"];
  }

  /** Ends the holder (the namespace goes with its last process). */
  async close(): Promise<void> {
    killGroup(this.#holder.pid, "SIGKILL");
    await this.#holder.status;
    await this.#stdout.cancel().catch(() => {});
    await this.#holder.stderr.cancel().catch(() => {});
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// Files

/** BLAKE3 of a file (read whole: the largest is a ~100 MB runtime); lower-case hex. */
export async function blake3File(path: string): Promise<string> {
  return toHex(blake3(await Deno.readFile(path)));
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([Deno.stat(a), Deno.stat(b)]);
  if (sa.size !== sb.size) return false;
  return await blake3File(a) === await blake3File(b);
}

/** Decimal megabytes of KiB, for the summary. */
export function megabytes(kib: number | undefined): string {
  return kib === undefined ? "n/a" : `${(kib * 1024 / 1e6).toFixed(1)} MB`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

// ---------------------------------------------------------------------------
// JSON answers of the CLI (checked field by field: never trust their shape)

type Json = unknown;

function parseJson(step: string, text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    throw new SmokeError(step, `not JSON: ${text.slice(0, 200)}`);
  }
}

function field(value: Json, key: string): Json {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, Json>)[key]
    : undefined;
}

function str(value: Json): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function list(value: Json): readonly Json[] {
  return Array.isArray(value) ? value : [];
}

/** The agent's node id, whether it is online and its active digest of MODEL. */
function agentState(status: Json, nodeId: string): { online: boolean; active: string } {
  const agent = list(field(status, "agents")).find((a) => field(a, "nodeId") === nodeId);
  return {
    online: field(agent, "online") === true,
    active: str(field(field(agent, "active"), MODEL)) ?? "",
  };
}

/** One line on the last rollout's agents (for failures). */
function rolloutLine(status: Json): string {
  const r = list(field(status, "rollouts")).at(-1);
  const agents = list(field(r, "agents")).map((a) =>
    `${str(field(a, "nodeId"))}=${str(field(a, "state"))}${
      str(field(a, "detail")) ? ` (${str(field(a, "detail"))})` : ""
    }`
  );
  return `rollout ${String(field(r, "id") ?? "?")} ${str(field(r, "state")) ?? "?"}: ${
    agents.join(", ") || "no agents"
  }; patchErrors ${JSON.stringify(field(status, "patchErrors") ?? {})}`;
}

// ---------------------------------------------------------------------------
// The smoke test

/** Runs the smoke test; throws `SmokeError` naming the failing step. */
export async function smokePackage(options: SmokeOptions): Promise<SmokeReport> {
  const t0 = performance.now();
  const log = options.log ?? (() => {});
  const modelBytes = options.modelBytes ?? DEFAULT_MODEL_BYTES;
  if (!Number.isSafeInteger(modelBytes) || modelBytes < 100_000 || modelBytes > MAX_MODEL_BYTES) {
    throw new SmokeError("options", `model bytes must be 100000..${MAX_MODEL_BYTES}`);
  }
  const dir = await Deno.makeTempDir({ dir: options.tmpDir, prefix: `pb-smoke-${options.label}-` });
  const haveTime = await Deno.stat(TIME).then((s) => s.isFile, () => false);
  const procs = new Processes(dir, haveTime);
  // Each command gets its own Deno dir (V8 code cache): the aarch64 one never shares x86_64's.
  const env = {
    ...baseEnv(),
    DENO_DIR: `${dir}/deno-dir`,
    ...(options.env ?? {}),
  };
  const nativeEnv = { ...baseEnv(), DENO_DIR: `${dir}/deno-dir-native` };
  const poolboy = options.poolboy;
  const native = options.controlPlanePoolboy ?? options.poolboy;
  const sameCommand = native === poolboy;
  const commands: CommandStat[] = [];
  const measure = async (name: string, step: string, args: string[]): Promise<Finished> => {
    const done = await procs.run({
      step,
      argv: [poolboy, ...args],
      env,
      rss: true,
      timeoutMs: options.commandTimeoutMs,
    });
    commands.push({ name, ms: done.ms, rssKiB: done.rssKiB });
    log(`${options.label}: ${name} ${seconds(done.ms)}, peak RSS ${megabytes(done.rssKiB)}`);
    return done;
  };
  try {
    // 1. --version
    const version = (await measure("--version", "version", ["--version"])).stdout.trim();
    const m = /^poolboy (\S+) \(deno (\S+), (\S+)\)$/.exec(version);
    if (m === null || m[1] !== VERSION || m[3] !== `linux-${options.label}`) {
      throw new SmokeError(
        "version",
        `poolboy --version printed ${JSON.stringify(version)}, expected "poolboy ${VERSION} ` +
          `(deno …, linux-${options.label})"`,
      );
    }

    // 2. encode / apply round trip
    const models = `${dir}/models`;
    await Deno.mkdir(models);
    const pair = await writeScenario(models, "safetensors", "last-layer", modelBytes, 18);
    const size = (await Deno.stat(pair.base)).size;
    const patch = `${dir}/v1-v2.patch`;
    const out = `${dir}/v2.out`;
    await measure("encode", "encode", ["encode", pair.base, pair.target, "-o", patch]);
    await measure("apply", "apply", ["apply", pair.base, patch, "-o", out]);
    if (!await sameBytes(out, pair.target)) {
      throw new SmokeError("apply", "the applied file differs from the target");
    }
    const patchBytes = (await Deno.stat(patch)).size;
    const patchDigest = await blake3File(patch);

    // 3. the fleet
    let fleet: FleetOutcome = { kind: "skipped", why: "not asked for (--no-fleet)" };
    if (options.fleet !== false) {
      const ns = await Netns.create();
      if (!(ns instanceof Netns)) {
        fleet = { kind: "skipped", why: ns.why };
      } else {
        try {
          fleet = await runFleet({
            dir,
            procs,
            ns,
            poolboy,
            env,
            native,
            nativeEnv: sameCommand ? env : nativeEnv,
            base: pair.base,
            target: pair.target,
            label: options.label,
            log,
          });
        } finally {
          await procs.cleanup();
          await ns.close();
        }
      }
    }
    return {
      label: options.label,
      versionLine: version,
      commands,
      modelBytes: size,
      patchBytes,
      patchDigest,
      fleet,
      totalMs: performance.now() - t0,
    };
  } finally {
    await procs.cleanup();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

interface FleetSpec {
  readonly dir: string;
  readonly procs: Processes;
  readonly ns: Netns;
  readonly poolboy: string;
  readonly env: Record<string, string>;
  readonly native: string;
  readonly nativeEnv: Record<string, string>;
  readonly base: string;
  readonly target: string;
  readonly label: SmokeLabel;
  readonly log: (line: string) => void;
}

async function runFleet(s: FleetSpec): Promise<FleetOutcome> {
  const { dir, procs, ns } = s;
  const keys = `${dir}/keys`;
  const trust = `${dir}/trust`;
  const cpData = `${dir}/cp`;
  const agentData = `${dir}/agent`;
  for (const d of [keys, trust, cpData, agentData]) await Deno.mkdir(d);
  const nativeRun = (step: string, args: string[], extra: Record<string, string> = {}) =>
    procs.run({ step, argv: [s.native, ...args], env: { ...s.nativeEnv, ...extra }, netns: ns });

  await nativeRun("keys", ["keygen", "root", "-o", keys]);
  await nativeRun("keys", ["keygen", "release", "-o", keys]);
  await nativeRun("keys", [
    "delegate",
    "--root",
    `${keys}/root.key`,
    "--release",
    `${keys}/release.pub`,
    "-o",
    `${keys}/keys.json`,
  ]);
  await Deno.copyFile(`${keys}/root.pub`, `${trust}/root.pub`);
  const tokenOf = async (role: string, name: string) =>
    (await nativeRun("tokens", [
      "token",
      "create",
      "--data",
      cpData,
      "--role",
      role,
      "--name",
      name,
    ]))
      .stdout.trim();
  const deployer = await tokenOf("deployer", "operator");
  const admin = await tokenOf("admin", "enroller");
  const op = (step: string, args: string[], timeoutMs = COMMAND_TIMEOUT_MS) =>
    procs.run({
      step,
      argv: [s.native, ...args],
      env: { ...s.nativeEnv, POOLBOY_TOKEN: deployer },
      netns: ns,
      timeoutMs,
    });

  const cp = await procs.start(
    [
      ...ns.prefix(),
      s.native,
      "controlplane",
      "--bind",
      CP_IP,
      "--data",
      cpData,
      "--agent-timeout",
      "5s",
    ],
    s.nativeEnv,
    `${dir}/controlplane.log`,
  );
  const tail = async (name: string) => {
    const text = await Deno.readTextFile(`${dir}/${name}.log`).catch(() => "");
    return text.trim().split("\n").slice(-15).map((l) => `  ${name}: ${l}`).join("\n");
  };
  const status = async (step: string): Promise<Json> =>
    parseJson(
      step,
      (await op(step, ["status", "--control-plane", CP_URL, "--json"], POLL_TIMEOUT_MS)).stdout,
    );
  /** Polls `status --json` until `done` (returns its value) or the deadline. */
  const waitFor = async <T>(
    step: string,
    what: string,
    done: (st: Json) => T | undefined,
  ): Promise<T> => {
    const deadline = Date.now() + WAIT_TIMEOUT_MS;
    let last = "";
    for (;;) {
      if (cp.exited !== undefined) {
        throw new SmokeError(
          step,
          `the control plane exited (code ${cp.exited.code})\n${await tail("controlplane")}`,
        );
      }
      let st: Json = undefined;
      try {
        st = await status(step);
      } catch (err) {
        if (!(err instanceof SmokeError)) throw err;
        last = err.message;
      }
      if (st !== undefined) {
        const value = done(st);
        if (value !== undefined) return value;
        last = rolloutLine(st);
      }
      if (Date.now() > deadline) {
        throw new SmokeError(
          step,
          `${what} not within ${WAIT_TIMEOUT_MS / 1000} s; last: ${last}\n${await tail(
            "controlplane",
          )}\n${await tail("agent")}`,
        );
      }
      await sleep(POLL_INTERVAL_MS);
    }
  };
  await waitFor("control plane", "the control plane's API answering", () => true);
  s.log(`${s.label}: control plane up`);

  const enrol = parseJson(
    "enrol",
    (await op("enrol", [
      "device",
      "enroll-token",
      "--control-plane",
      CP_URL,
      "--token",
      admin,
      "--uses",
      "1",
      "--expires",
      "10m",
      "--json",
    ])).stdout,
  );
  const enrolToken = str(field(enrol, "token"));
  if (enrolToken === undefined) {
    throw new SmokeError("enrol", "device enroll-token printed no token");
  }

  const nodeId = `smoke-${s.label}`;
  const tAgent = performance.now();
  const agent = await procs.start(
    [
      ...ns.prefix(),
      s.poolboy,
      "agent",
      "--control-plane",
      CP_IP,
      "--bind",
      AGENT_IP,
      "--node-id",
      nodeId,
      "--region",
      "r0",
      "--data",
      agentData,
      "--heartbeat-interval",
      "500ms",
      "--transfer-timeout",
      "30s",
      "--trust-root",
      `${trust}/root.pub`,
      "--enroll",
      enrolToken,
    ],
    s.env,
    `${dir}/agent.log`,
  );
  await waitFor("agent online", "the agent online", (st) => {
    if (agent.exited !== undefined) {
      throw new SmokeError("agent online", `the agent exited (code ${agent.exited.code})`);
    }
    return agentState(st, nodeId).online ? true : undefined;
  }).catch(async (err) => {
    if (err instanceof SmokeError && agent.exited !== undefined) {
      throw new SmokeError("agent online", `${err.message}\n${await tail("agent")}`);
    }
    throw err;
  });
  const agentOnlineMs = performance.now() - tAgent;
  s.log(`${s.label}: agent online after ${seconds(agentOnlineMs)}`);

  const releases: ReleaseStat[] = [];
  for (
    const [version, file, transfer] of [
      ["v1", s.base, "wholeFile"],
      ["v2", s.target, "patch"],
    ] as const
  ) {
    const step = `rollout ${version}`;
    const published = parseJson(
      `publish ${version}`,
      (await op(`publish ${version}`, [
        "publish",
        "--control-plane",
        CP_URL,
        "--model",
        MODEL,
        "--version",
        version,
        "--key",
        `${keys}/release.key`,
        "--keys",
        `${keys}/keys.json`,
        "--json",
        file,
      ])).stdout,
    );
    const digest = str(field(field(published, "version"), "digest"));
    if (digest === undefined || digest !== await blake3File(file)) {
      throw new SmokeError(`publish ${version}`, `publish answered digest ${digest}`);
    }
    await op(step, [
      "rollout",
      "--control-plane",
      CP_URL,
      "--model",
      MODEL,
      "--version",
      version,
      "--json",
    ]);
    const t1 = performance.now();
    const election = await waitFor(step, `${version} active on the agent`, (st) => {
      if (agent.exited !== undefined) {
        throw new SmokeError(step, `the agent exited (code ${agent.exited.code})`);
      }
      if (agentState(st, nodeId).active !== digest) return undefined;
      const r = list(field(st, "rollouts")).at(-1);
      return list(field(r, "elections")).at(-1) ?? null;
    });
    const ms = performance.now() - t1;
    const moved = str(field(election, "transfer")) ?? "?";
    const blobSize = Number(field(election, "blobSize") ?? 0);
    if (moved !== transfer) {
      throw new SmokeError(step, `${version} moved as ${moved}, expected ${transfer}`);
    }
    const current = `${agentData}/models/${MODEL}/current`;
    const onDisk = await blake3File(current).catch((err) => {
      throw new SmokeError(step, `cannot read the agent's ${current}: ${err}`);
    });
    if (onDisk !== digest) {
      throw new SmokeError(step, `the agent's current file hashes to ${onDisk}, not ${digest}`);
    }
    releases.push({ version, digest, transfer: moved, blobSize, ms });
    s.log(
      `${s.label}: ${version} (${moved}, ${blobSize} B) active on the agent after ${seconds(ms)}`,
    );
  }
  const agentRssKiB = await agent.peakRssKiB();
  const controlPlaneRssKiB = await cp.peakRssKiB();
  await agent.stop();
  await cp.stop();
  return { kind: "ran", agentOnlineMs, releases, agentRssKiB, controlPlaneRssKiB };
}

/** The human summary: a few lines. */
export function summary(report: SmokeReport): string[] {
  const lines = [
    `package smoke ${report.label}: ${report.versionLine}`,
    ...report.commands.map((c) =>
      `  ${c.name.padEnd(9)} ${seconds(c.ms).padStart(7)}  peak RSS ${megabytes(c.rssKiB)}`
    ),
    `  round trip: ${
      (report.modelBytes / 1e6).toFixed(1)
    } MB model, patch ${report.patchBytes} B ` +
    `(BLAKE3 ${report.patchDigest.slice(0, 16)}…), applied file identical`,
  ];
  const f = report.fleet;
  if (f.kind === "skipped") {
    lines.push(`  fleet not run: ${f.why}`);
  } else {
    lines.push(
      `  fleet: agent online after ${seconds(f.agentOnlineMs)}; ` +
        f.releases.map((r) => `${r.version} ${r.transfer} ${r.blobSize} B in ${seconds(r.ms)}`)
          .join(", ") +
        `; current file BLAKE3 OK; agent peak RSS ${megabytes(f.agentRssKiB)}, ` +
        `control plane ${megabytes(f.controlPlaneRssKiB)}`,
    );
  }
  lines.push(`  total ${seconds(report.totalMs)}`);
  return lines;
}

// ---------------------------------------------------------------------------
// The program

const USAGE = `Usage: deno run -A testkit/package_smoke.ts --poolboy PATH --label x86_64|aarch64
         [--control-plane-poolboy PATH] [--env NAME=VALUE]... [--qemu] [--no-fleet]
         [--model-bytes N]`;

async function main(args: readonly string[]): Promise<number> {
  let poolboy: string | undefined;
  let label: string | undefined;
  let controlPlanePoolboy: string | undefined;
  let fleet = true;
  let qemu = false;
  let modelBytes: number | undefined;
  const env: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new SmokeError("arguments", `${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === "--poolboy") poolboy = value();
    else if (a === "--label") label = value();
    else if (a === "--control-plane-poolboy") controlPlanePoolboy = value();
    else if (a === "--no-fleet") fleet = false;
    else if (a === "--qemu") qemu = true;
    else if (a === "--model-bytes") modelBytes = Number(value());
    else if (a === "--env") {
      const v = value();
      const eq = v.indexOf("=");
      if (eq <= 0) throw new SmokeError("arguments", `--env wants NAME=VALUE, got ${v}`);
      env[v.slice(0, eq)] = v.slice(eq + 1);
    } else if (a === "-h" || a === "--help") {
      console.log(USAGE);
      return 0;
    } else throw new SmokeError("arguments", `unknown argument ${a}\n${USAGE}`);
  }
  if (poolboy === undefined || (label !== "x86_64" && label !== "aarch64")) {
    throw new SmokeError(
      "arguments",
      `--poolboy and --label x86_64|aarch64 are required\n${USAGE}`,
    );
  }
  if (qemu) {
    const runner = await aarch64Runner();
    if (!runner.ok) throw new SmokeError("qemu", runner.why);
    Object.assign(env, runner.env);
  }
  const report = await smokePackage({
    poolboy: await Deno.realPath(poolboy),
    label,
    controlPlanePoolboy: controlPlanePoolboy === undefined
      ? undefined
      : await Deno.realPath(controlPlanePoolboy),
    env,
    fleet,
    modelBytes,
    log: (line) => console.log(line),
  });
  for (const line of summary(report)) console.log(line);
  return 0;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (err) {
    if (err instanceof SmokeError) {
      console.error(`package smoke FAILED at ${err.message}`);
      code = 1;
    } else throw err;
  }
  Deno.exit(code);
}
