/**
 * The status report as the API serves it: built anew for every call while it
 * is cheap, and reused for a short while once it is expensive (a fleet of
 * thousands of devices), so that operators polling `GET /v1/status` cannot
 * take the control loop's time. Pure but for the clock it is given.
 *
 * The rule: a report that took at least `minBuildMs` to build is served again
 * for `factor` times its build time, never longer than `maxAgeMs`; callers
 * that come while one is being built share that build. A cheaper report is
 * never reused nor shared: small fleets (and tests) always see the state as
 * it is now. `invalidate` (an operator changed something) makes the next call
 * build anew.
 *
 * @module
 */

/** When a built value may be served again. */
export interface StatusCachePolicy {
  /** Values that took less than this to build are never reused. */
  readonly minBuildMs: number;
  /** A value is reused for this many times its build time... */
  readonly factor: number;
  /** ...but never longer than this. */
  readonly maxAgeMs: number;
}

/** The API's policy: reused only past 20 ms of building, for 10× that, at most 1 s. */
export const STATUS_CACHE_POLICY: StatusCachePolicy = {
  minBuildMs: 20,
  factor: 10,
  maxAgeMs: 1000,
};

/** How long a value that took `buildMs` to build may be served again (0: not at all). */
export function reuseWindowMs(buildMs: number, policy: StatusCachePolicy): number {
  if (buildMs < policy.minBuildMs) return 0;
  return Math.min(policy.factor * buildMs, policy.maxAgeMs);
}

/** A value built by `build`, reused as `StatusCachePolicy` allows. */
export class StatusCache<T> {
  readonly #build: () => Promise<T>;
  readonly #clock: () => number;
  readonly #policy: StatusCachePolicy;
  #value: { readonly value: T; readonly until: number; readonly generation: number } | undefined;
  /** The build in progress that callers may share (only of a value that is expensive). */
  #building: Promise<T> | undefined;
  #generation = 0;
  /** How long the last build took, ms. */
  lastBuildMs = 0;

  constructor(
    build: () => Promise<T>,
    clock: () => number = () => performance.now(),
    policy: StatusCachePolicy = STATUS_CACHE_POLICY,
  ) {
    this.#build = build;
    this.#clock = clock;
    this.#policy = policy;
  }

  /** The value: the one built recently if it may be reused, else a new one. */
  get(): Promise<T> {
    const now = this.#clock();
    const cached = this.#value;
    if (cached !== undefined && cached.generation === this.#generation && now < cached.until) {
      return Promise.resolve(cached.value);
    }
    if (this.#building !== undefined) return this.#building;
    const generation = this.#generation;
    const built = this.#build().then((value) => {
      const buildMs = this.#clock() - now;
      this.lastBuildMs = buildMs;
      const window = reuseWindowMs(buildMs, this.#policy);
      this.#value = window > 0 ? { value, until: this.#clock() + window, generation } : undefined;
      return value;
    });
    // Shared while it builds only if the last build was expensive: cheap ones stay exact.
    if (reuseWindowMs(this.lastBuildMs, this.#policy) > 0) {
      this.#building = built;
      const clear = () => {
        if (this.#building === built) this.#building = undefined;
      };
      built.then(clear, clear);
    }
    return built;
  }

  /** Forgets the value: the next `get` builds anew (and no build in progress is shared). */
  invalidate(): void {
    this.#generation++;
    this.#value = undefined;
    this.#building = undefined;
  }
}
