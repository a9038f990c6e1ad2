/**
 * The parent's side of the fleet simulator's worker processes: spawns each
 * worker (`deno run` of worker.ts with permissions of its own — loopback
 * network, its work directory, the root key file), reads its stdout as JSON
 * event lines (wire.ts; lines are bounded, malformed ones counted), keeps its
 * stderr in a log file, and stops it: stdin closed and SIGTERM, SIGKILL after
 * a grace period. A worker that dies early is reported as an event.
 *
 * @module
 */

import { parseEvent, type WorkerConfig, type WorkerEvent } from "./wire.ts";

const WORKER = new URL("./worker.ts", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
/** Longest event line accepted. */
const MAX_LINE = 64 * 1024;

/** One running worker. */
export class WorkerProcess {
  readonly config: WorkerConfig;
  readonly child: Deno.ChildProcess;
  /** Lines that were not events. */
  malformed = 0;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;
  #exited = false;

  private constructor(
    config: WorkerConfig,
    child: Deno.ChildProcess,
    logPath: string,
    onEvent: (event: WorkerEvent) => void,
  ) {
    this.config = config;
    this.child = child;
    this.#stdin = child.stdin.getWriter();
    this.#reading = Promise.allSettled([
      this.#readLines(onEvent),
      (async () => {
        const log = await Deno.open(logPath, { write: true, create: true, append: true });
        try {
          for await (const chunk of child.stderr) await log.write(chunk);
        } finally {
          log.close();
        }
      })(),
    ]).then(() => {});
    child.status.then(() => (this.#exited = true));
  }

  /** Spawns a worker for `config`; its events go to `onEvent`, its stderr to `logPath`. */
  static spawn(
    config: WorkerConfig,
    logPath: string,
    onEvent: (event: WorkerEvent) => void,
  ): WorkerProcess {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        `--config=${ROOT}deno.json`,
        "--allow-net=127.0.0.0/8",
        `--allow-read=${config.workDir},${config.rootPub}`,
        `--allow-write=${config.workDir}`,
        WORKER,
        JSON.stringify(config),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new WorkerProcess(config, child, logPath, onEvent);
  }

  get exited(): boolean {
    return this.#exited;
  }

  async #readLines(onEvent: (event: WorkerEvent) => void): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of this.child.stdout) {
      pending += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const event = parseEvent(line);
        if (event) onEvent(event);
        else this.malformed++;
      }
      if (pending.length > MAX_LINE) {
        this.malformed++;
        pending = "";
      }
    }
  }

  /** Stops the worker: stdin closed and SIGTERM, SIGKILL after `graceMs`; waits for its output. */
  async stop(graceMs = 10_000): Promise<void> {
    await this.#stdin.close().catch(() => {});
    if (!this.#exited) {
      try {
        this.child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, graceMs);
    await this.child.status;
    clearTimeout(timer);
    await this.#reading;
  }
}
