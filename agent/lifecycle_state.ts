/**
 * The persisted state of a model's update on a device:
 * `DATA/models/NAME/state.json`, written atomically (temporary file, fsync,
 * rename, directory fsync) before each step starts, so that a restart knows
 * where the last update stood.
 *
 * Steps of one update: `downloading` → `staged` (blob verified) → `applied`
 * (new file built beside the current one and verified) → `switched` (current
 * points at it; the previous version is the backup) → `committed` (healthy),
 * or `rolledBack` (current points at the backup again). `idle` is the state
 * between updates. Failures are counted per target digest: a version that
 * failed `poisonAfter` times is not tried again until an operator rolls out
 * again (a new rollout id resets the count). `refusal` (optional, absent in
 * older files) says why the last signed release was refused, until an update
 * starts again.
 *
 * Model names come from the wire, where the decoder applied the name rule
 * (kernel/names.ts); every path built here asserts it again.
 *
 * @module
 */

import { AtomicFile } from "../kernel/atomic_file.ts";
import { IoError } from "../kernel/errors.ts";
import { isName } from "../kernel/names.ts";
import type { RefusalKind } from "../release/trust_policy.ts";

/** Steps of the lifecycle. */
export const STEPS = [
  "idle",
  "downloading",
  "staged",
  "applied",
  "switched",
  "committed",
  "rolledBack",
] as const;
export type Step = (typeof STEPS)[number];

/** Failures of one target version on this device. */
export interface FailureRecord {
  readonly count: number;
  readonly last: string;
  /** The rollout (manifest id prefix `rN`) the failures were counted in. */
  readonly rollout: string;
}

/** A release this device refused (agent --trust-root): kept until an update starts. */
export interface RefusalRecord {
  /** The trust policy's reason kind, or `unavailable`: the signed documents could not be fetched. */
  readonly kind: RefusalKind | "unavailable";
  /** `refused: …`, as in the Status sent. */
  readonly reason: string;
  readonly manifestId: string;
  /** When, ms since the epoch. */
  readonly at: number;
}

/** What `state.json` holds. */
export interface ModelState {
  readonly format: 1;
  readonly model: string;
  readonly step: Step;
  /** The version being installed (hex digest), or null when idle from the start. */
  readonly target: string | null;
  /** The version to roll back to (hex digest), or null if there was none. */
  readonly backup: string | null;
  /** The blob the update downloads (a patch, or the target itself), kept to seed peers. */
  readonly blob: string | null;
  /** Earlier versions kept on disk for rollback, most recent first (the backup among them). */
  readonly kept?: readonly string[];
  readonly manifestId: string | null;
  readonly updated: number;
  readonly failures: Readonly<Record<string, FailureRecord>>;
  /** The last release refused since the last update started (absent: none). */
  readonly refusal?: RefusalRecord;
}

/** The state of a model with no update so far. */
export function initialState(model: string): ModelState {
  return {
    format: 1,
    model,
    step: "idle",
    target: null,
    backup: null,
    blob: null,
    manifestId: null,
    updated: 0,
    failures: {},
  };
}

/** Directory of a model's files; throws for a name that fails the name rule (a bug upstream). */
export function modelDir(dataDir: string, model: string): string {
  if (!isName(model)) {
    throw new Error(
      `model name ${JSON.stringify(model)} fails the name rule: no path is built of it`,
    );
  }
  return `${dataDir}/models/${model}`;
}

/** Path of a model's state file. */
export function statePath(dataDir: string, model: string): string {
  return `${modelDir(dataDir, model)}/state.json`;
}

/** Reads a model's state; a missing file is the initial state, a damaged one an error. */
export async function readState(dataDir: string, model: string): Promise<ModelState> {
  let text: string;
  try {
    text = await Deno.readTextFile(statePath(dataDir, model));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return initialState(model);
    throw err;
  }
  const value = JSON.parse(text) as ModelState;
  if (value.format !== 1 || !STEPS.includes(value.step) || value.model !== model) {
    throw new IoError(`${statePath(dataDir, model)} is not a poolboy state file of format 1`);
  }
  return value;
}

/** Writes a model's state atomically (it is on disk when this returns). */
export async function writeState(dataDir: string, state: ModelState): Promise<void> {
  await Deno.mkdir(modelDir(dataDir, state.model), { recursive: true });
  const file = await AtomicFile.create(statePath(dataDir, state.model), "state file");
  try {
    await file.file.write(new TextEncoder().encode(JSON.stringify(state, null, 2) + "\n"));
    await file.commit();
  } catch (err) {
    await file.abort();
    throw err;
  }
}

/**
 * The state files of the models under one data directory. Every read and
 * write of `state.json` by the agent goes through here; `update` is a
 * read-change-write, and the updates (and writes) of one model run one at a
 * time, so two jobs of the same model never lose each other's change.
 */
export class ModelStateFiles {
  readonly dataDir: string;
  /** The last queued write of each model (its completion, errors ignored). */
  readonly #queues = new Map<string, Promise<unknown>>();

  constructor(dataDir: string) {
    this.dataDir = dataDir;
  }

  /** Path of `model`'s state file. */
  path(model: string): string {
    return statePath(this.dataDir, model);
  }

  /** `model`'s state; a missing file is the initial state, a damaged one an error. */
  async read(model: string): Promise<ModelState> {
    return await readState(this.dataDir, model);
  }

  /** Writes `state` atomically (on disk when this returns). */
  async write(state: ModelState): Promise<void> {
    await this.#queued(state.model, () => writeState(this.dataDir, state));
  }

  /** Reads `model`'s state, writes `change(state)` and returns it. */
  async update(model: string, change: (state: ModelState) => ModelState): Promise<ModelState> {
    return await this.#queued(model, async () => {
      const next = change(await readState(this.dataDir, model));
      await writeState(this.dataDir, next);
      return next;
    });
  }

  /** Names of the model directories under `DATA/models` (names that follow the name rule). */
  async models(): Promise<string[]> {
    const out: string[] = [];
    for await (const entry of Deno.readDir(`${this.dataDir}/models`)) {
      if (entry.isDirectory && isName(entry.name)) out.push(entry.name);
    }
    return out;
  }

  async #queued<T>(model: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#queues.get(model) ?? Promise.resolve();
    const result = previous.then(task);
    const done = result.catch(() => {});
    this.#queues.set(model, done);
    done.then(() => {
      if (this.#queues.get(model) === done) this.#queues.delete(model);
    });
    return await result;
  }
}

/** The rollout part of a manifest id (`r12.b3.e4` → `r12`). */
export function rolloutOfManifest(manifestId: string): string {
  return manifestId.split(".")[0];
}

/** The state with one more failure of `target` recorded (reset when the rollout changed). */
export function withFailure(state: ModelState, target: string, manifestId: string, why: string) {
  const rollout = rolloutOfManifest(manifestId);
  const previous = state.failures[target];
  const count = previous && previous.rollout === rollout ? previous.count + 1 : 1;
  return {
    ...state,
    failures: { ...state.failures, [target]: { count, last: why.slice(0, 200), rollout } },
  };
}

/** Whether `target` has failed `poisonAfter` times in this rollout. */
export function isPoisoned(
  state: ModelState,
  target: string,
  manifestId: string,
  poisonAfter: number,
): boolean {
  const record = state.failures[target];
  return record !== undefined && record.rollout === rolloutOfManifest(manifestId) &&
    record.count >= poisonAfter;
}
