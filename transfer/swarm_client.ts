/**
 * The swarm client (issue 15): downloads a blob piece by piece from several
 * peers at once (blob protocol version 3 ranged requests), each piece verified
 * against a piece list before it is kept, with the control plane as a
 * fallback only when the peers cannot deliver.
 *
 * - Sources in order of preference: only the first one that is doing well is
 *   asked (up to `PER_SOURCE` requests at once), and the ones before it that
 *   failed or answered BUSY since their last piece (they get their retries):
 *   in a region's swarm each device passes every piece on once. Up to
 *   `parallel` requests at once in all. The walk over the pieces starts at
 *   `startPiece` (default random; agents start at 0: pieces in order).
 * - Stripes (`stripes`, default 1; agents use `SWARM_STRIPES`): piece i is in
 *   stripe s = i mod `stripes`, and each stripe has its own sources:
 *   `sources[s]`, then the sources after the first `stripes` — never another
 *   stripe's first source. A member of two interleaved trees
 *   (controlplane/swarm_plan.ts) takes the even pieces from one parent and the
 *   odd ones from the other, both at once, and a stripe whose parent fails
 *   goes upstream (the leader, then the fallback), not to the other parent,
 *   which may be waiting for the same pieces from below. With fewer sources
 *   than stripes, one stripe: every source for every piece. Stalls (below)
 *   are judged per stripe.
 * - NOT_YET (a partial holder lacks the piece): the next missing piece is asked
 *   there; after `NOT_YET_RUN` (2) NOT_YETs in a row (no piece between) the
 *   source is backed off
 *   (50 ms doubling to 400 ms, back to 50 ms after a piece) and asked again from
 *   the first missing piece — pieces travel down a region in order
 *   (controlplane/swarm_plan.ts), so a source that lacks one mostly lacks the
 *   later ones too. BUSY: the source is backed off, others go on.
 *   A peer's NOT_FOUND (it has not started yet): backed off and asked again; after
 *   `NOT_FOUND_RUN` (8) of them the next source is used beside it.
 * - A piece whose length or BLAKE3 differs from the list is discarded, its
 *   source dropped for this download (it is corrupt), the piece fetched
 *   elsewhere. A failed request (cannot connect, reset mid-piece, silent for
 *   `idleTimeoutMs`, below `minRate`) costs that piece only; `maxFailures`
 *   consecutive failures drop the source. FORBIDDEN, BAD_REQUEST,
 *   BAD_OFFSET, a malformed answer: dropped at once.
 * - The fallback is used only when no peer source is left, or when no peer
 *   delivered a byte for `stallMs` while pieces are missing — or for
 *   `patienceMs` (12 × stallMs) while peers keep answering NOT_YET (alive, the
 *   pieces on their way down the line) — (so a region's
 *   control-plane egress stays about one blob). Without a fallback, the same
 *   conditions end the download with a `SwarmDownloadError`.
 * - At the end the store checks the whole blob's BLAKE3 (`PieceStore.complete`).
 *
 * Memory: one buffer per request in flight (≤ `parallel` × pieceSize).
 *
 * @module
 */

import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { ExitCode, PoolboyError } from "../kernel/errors.ts";
import type { BlobCredentials } from "./blob_auth.ts";
import type { BlobSource } from "./blob_client.ts";
import {
  BlobProtocolError,
  type BlobResponseHeader,
  BlobStatus,
  type BlobStatusCode,
  decodeHello,
  decodeResponseHeader,
  HELLO_SIZE,
  RESPONSE_HEADER_SIZE,
  signRequest,
  statusName,
  VERSION_3,
} from "./blob_protocol.ts";
import {
  closeQuietly,
  DEFAULT_MIN_RATE,
  IdleWatchdog,
  type MinRate,
  RateWatchdog,
} from "./idle_watchdog.ts";
import { pieceRange, verifyPiece } from "./piece_list.ts";
import type { PieceStore } from "./piece_store.ts";

/** Default requests in flight at once. */
export const DEFAULT_PARALLEL = 4;
/** Default consecutive failures before a source is dropped. */
export const DEFAULT_MAX_FAILURES = 3;
/** First and longest back-off of a source that answered NOT_YET (for every piece) or BUSY. */
export const BACKOFF_MIN_MS = 50;
export const BACKOFF_MAX_MS = 400;
/** A peer's NOT_FOUND answers (it has not started) before the next source is used beside it. */
export const NOT_FOUND_RUN = 8;
/** Default `patienceMs` as a multiple of `stallMs`. */
export const PATIENCE_FACTOR = 12;
/** Requests in flight at once to one source (one: measured faster than two on shaped links, docs/measurements.md). */
export const PER_SOURCE = 1;
/** NOT_YET answers in a row from one source (for different pieces) before it is backed off. */
export const NOT_YET_RUN = 2;
/** The scheduler looks again at least this often. */
const MAX_SLEEP_MS = 1000;

/** Options of `downloadPieces`. */
export interface DownloadPiecesOptions {
  /** Where pieces go; its piece list says what to fetch (and what is already held). */
  readonly store: PieceStore;
  /** Peers that may hold the blob (whole or in part), in order of preference. */
  readonly sources: readonly BlobSource[];
  /** A holder of the whole blob (the control plane), used only as described above. */
  readonly fallback?: BlobSource;
  /** Signs each (version-3) request; the ticket admits us at agents' servers. */
  readonly credentials: BlobCredentials;
  /** Requests in flight at once (at most one per source). Default 4. */
  readonly parallel?: number;
  /** First piece of the walk; default random. */
  readonly startPiece?: number;
  /** Stripes: piece i is asked of `sources[i mod stripes]` first (see above). Default 1. */
  readonly stripes?: number;
  /** A request silent this long (connect, hello, header, body) fails. Default 10 000 ms. */
  readonly idleTimeoutMs?: number;
  /** A request moving fewer bytes than this over its window fails. Default 64 KiB/s over 10 s. */
  readonly minRate?: MinRate;
  /** No peer byte for this long while pieces are missing: the fallback is used. Default `minRate.windowMs`. */
  readonly stallMs?: number;
  /**
   * No peer byte for this long, though peers answer NOT_YET: the fallback is used.
   * Default 12 × `stallMs`.
   */
  readonly patienceMs?: number;
  /** Consecutive failures that drop a source. Default 3. */
  readonly maxFailures?: number;
  /** Aborts the download (the store keeps its pieces); rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Called after piece `index` is verified and kept (e.g. the agent shares it). */
  readonly onPiece?: (index: number) => void;
}

/** What one source did for a download. */
export interface SwarmSourceStats {
  readonly label: string;
  /** Whether it is the fallback. */
  readonly fallback: boolean;
  /** Body bytes received from it (verified or not). */
  bytes: number;
  /** Pieces it delivered that verified. */
  pieces: number;
  /** NOT_YET, BUSY and (peers) NOT_FOUND answers. */
  refusals: number;
  /** Requests that failed (connect, reset, timeout, rate). */
  failures: number;
  /** Why it was dropped for this download; null if it was not. */
  dropped: string | null;
}

/** What a finished download did. */
export interface DownloadPiecesResult {
  readonly pieceCount: number;
  /** Pieces held before this call (a resume). */
  readonly piecesResumed: number;
  /** Pieces fetched and verified in this call. */
  readonly piecesFetched: number;
  /** Body bytes received, all sources. */
  readonly bytesReceived: number;
  /** Body bytes received from the fallback. */
  readonly fallbackBytes: number;
  /** Per source, peers first (in the order given), then the fallback if any. */
  readonly sources: readonly SwarmSourceStats[];
}

/** The swarm could not deliver the blob: every source dropped, or stalled without a fallback. */
export class SwarmDownloadError extends PoolboyError {
  readonly sources: readonly SwarmSourceStats[];
  constructor(message: string, sources: readonly SwarmSourceStats[]) {
    super(message, ExitCode.io);
    this.sources = sources;
  }
}

/** The answer to one ranged request. */
type Outcome =
  | { readonly kind: "piece"; readonly bytes: Uint8Array }
  | { readonly kind: "status"; readonly status: BlobStatusCode }
  | { readonly kind: "failed"; readonly reason: string }
  | { readonly kind: "malformed"; readonly reason: string };

interface SourceState {
  readonly source: BlobSource;
  readonly stats: SwarmSourceStats;
  /** Its requests in flight. */
  requests: number;
  /** It failed or answered BUSY since its last piece: the next source is used beside it. */
  troubled: boolean;
  readyAt: number;
  backoffMs: number;
  consecutiveFailures: number;
  /** Pieces it answered NOT_YET for since its last back-off. */
  readonly notYet: Set<number>;
  /** NOT_YET answers in a row (a piece delivered resets it). */
  notYetRun: number;
  /** A peer's NOT_FOUND answers since its last piece. */
  notFoundRun: number;
}

/** Wakes the scheduler: `notify` ends the current (or next) `wait`. */
class Wake {
  #pending = false;
  #resolve: (() => void) | undefined;

  notify(): void {
    if (this.#resolve !== undefined) {
      const resolve = this.#resolve;
      this.#resolve = undefined;
      resolve();
    } else {
      this.#pending = true;
    }
  }

  wait(ms: number): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#resolve = undefined;
        resolve();
      }, ms);
      this.#resolve = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** Downloads every missing piece of `options.store`'s list, then completes the store (whole-blob check). */
export async function downloadPieces(
  options: DownloadPiecesOptions,
): Promise<DownloadPiecesResult> {
  const { store, signal, credentials } = options;
  const list = store.list;
  const count = list.pieceCount;
  const parallel = Math.max(1, options.parallel ?? DEFAULT_PARALLEL);
  const idleTimeoutMs = options.idleTimeoutMs ?? 10_000;
  const minRate = options.minRate ?? DEFAULT_MIN_RATE;
  const stallMs = options.stallMs ?? minRate.windowMs;
  const patienceMs = Math.max(stallMs, options.patienceMs ?? PATIENCE_FACTOR * stallMs);
  const maxFailures = Math.max(1, options.maxFailures ?? DEFAULT_MAX_FAILURES);
  signal?.throwIfAborted();

  const state = (source: BlobSource, fallback: boolean): SourceState => ({
    source,
    stats: {
      label: source.label,
      fallback,
      bytes: 0,
      pieces: 0,
      refusals: 0,
      failures: 0,
      dropped: null,
    },
    requests: 0,
    troubled: false,
    readyAt: 0,
    backoffMs: BACKOFF_MIN_MS,
    consecutiveFailures: 0,
    notYet: new Set(),
    notYetRun: 0,
    notFoundRun: 0,
  });
  const peers = options.sources.map((s) => state(s, false));
  const fallback = options.fallback === undefined ? undefined : state(options.fallback, true);
  const everyone = fallback === undefined ? peers : [...peers, fallback];
  const stats = everyone.map((s) => s.stats);

  const piecesResumed = store.heldCount;
  let piecesFetched = 0;
  const start = count === 0
    ? 0
    : (options.startPiece ?? crypto.getRandomValues(new Uint32Array(1))[0]) % count;
  /** Missing pieces in walk order; held ones are dropped lazily. */
  let order: number[] = [];
  for (let k = 0; k < count; k++) {
    const i = (start + k) % count;
    if (!store.hasPiece(i)) order.push(i);
  }
  const inFlight = new Set<number>();
  const tasks = new Set<Promise<void>>();
  const wake = new Wake();
  const stop = new AbortController();
  const onAbort = () => {
    stop.abort(signal?.reason);
    wake.notify();
  };
  signal?.addEventListener("abort", onAbort);
  let fatal: unknown = undefined;

  /** Each stripe's sources in order of preference: its own, then the shared ones. */
  const stripeCount = Math.max(1, Math.min(options.stripes ?? 1, peers.length));
  const preference = peers.length === 0
    ? [[]]
    : Array.from({ length: stripeCount }, (_, s) => [peers[s], ...peers.slice(stripeCount)]);
  /** Per stripe: when a peer last delivered a byte of it, and last answered NOT_YET for it. */
  const lastPeerByteAt = new Array<number>(stripeCount).fill(performance.now());
  /** A peer answering NOT_YET is alive and downloading: the pieces have not reached it yet. */
  const lastPeerWaitingAt = new Array<number>(stripeCount).fill(-Infinity);
  /** The stripe scheduled first, in turn: no stripe starves another of a shared source. */
  let turn = 0;

  /**
   * The next piece to ask `src` for: of `stripe` (any stripe when undefined). `order` is pruned
   * of held pieces at the top of each round of the scheduler; no piece is stored during a round
   * (pieces are stored by the requests' continuations, between rounds).
   */
  const pick = (src: SourceState, stripe: number | undefined): number | undefined => {
    return order.find((i) =>
      (stripe === undefined || i % stripeCount === stripe) && !inFlight.has(i) &&
      !src.notYet.has(i)
    );
  };
  const backOff = (src: SourceState) => {
    src.readyAt = performance.now() + src.backoffMs;
    src.backoffMs = Math.min(BACKOFF_MAX_MS, src.backoffMs * 2);
  };
  const drop = (src: SourceState, why: string) => {
    if (src.stats.dropped === null) src.stats.dropped = why;
  };

  const settle = async (src: SourceState, index: number, outcome: Outcome): Promise<void> => {
    const isPeer = src !== fallback;
    switch (outcome.kind) {
      case "piece": {
        if (!verifyPiece(list, index, outcome.bytes)) {
          drop(src, `piece ${index} does not match its digest in the piece list (corrupt source)`);
          return;
        }
        await store.putPiece(index, outcome.bytes);
        piecesFetched++;
        src.stats.pieces++;
        src.consecutiveFailures = 0;
        src.backoffMs = BACKOFF_MIN_MS;
        src.notYetRun = 0;
        src.notFoundRun = 0;
        src.troubled = false;
        options.onPiece?.(index);
        return;
      }
      case "status": {
        const s = outcome.status;
        if (s === BlobStatus.NOT_YET) {
          if (isPeer) lastPeerWaitingAt[index % stripeCount] = performance.now();
          // It is downloading the blob itself and has not got this piece yet: pieces
          // travel in order, so it lacks the later ones too; ask it again soon.
          src.stats.refusals++;
          src.notYet.add(index);
          if (++src.notYetRun >= NOT_YET_RUN) {
            src.notYetRun = 0;
            src.notYet.clear();
            backOff(src);
          }
        } else if (s === BlobStatus.NOT_FOUND && isPeer) {
          // Most often it has not started its own download yet (its ElectionClosed came a
          // moment after ours): ask again soon, and use the next source beside it only if it
          // keeps saying so.
          src.stats.refusals++;
          if (++src.notFoundRun >= NOT_FOUND_RUN) src.troubled = true;
          backOff(src);
        } else if (s === BlobStatus.BUSY) {
          src.stats.refusals++;
          src.troubled = true;
          backOff(src);
        } else {
          drop(src, `answered ${statusName(s)}`);
        }
        return;
      }
      case "failed": {
        src.stats.failures++;
        src.troubled = true;
        src.consecutiveFailures++;
        if (src.consecutiveFailures >= maxFailures) {
          drop(src, `${src.consecutiveFailures} failures in a row, the last: ${outcome.reason}`);
        } else {
          src.readyAt = performance.now() + BACKOFF_MIN_MS * src.consecutiveFailures;
        }
        return;
      }
      case "malformed":
        drop(src, outcome.reason);
        return;
    }
  };

  const launch = (src: SourceState, index: number) => {
    src.requests++;
    inFlight.add(index);
    const { offset, length } = pieceRange(list, index);
    const isPeer = src !== fallback;
    const task = fetchRange(src.source, {
      digest: list.blobDigest,
      offset,
      length,
      credentials,
      idleTimeoutMs,
      minRate,
      signal: stop.signal,
      onBytes: (n) => {
        src.stats.bytes += n;
        if (isPeer) lastPeerByteAt[index % stripeCount] = performance.now();
      },
    })
      .then((outcome) => stop.signal.aborted ? undefined : settle(src, index, outcome))
      .catch((err) => {
        fatal ??= err;
      })
      .finally(() => {
        src.requests--;
        inFlight.delete(index);
        tasks.delete(task);
        wake.notify();
      });
    tasks.add(task);
  };

  try {
    while (store.heldCount < count) {
      signal?.throwIfAborted();
      if (fatal !== undefined) throw fatal;
      const now = performance.now();
      order = order.filter((i) => !store.hasPiece(i));
      const fallbackLeft = fallback !== undefined && fallback.stats.dropped === null;
      // Per stripe with pieces missing: stalled when no peer delivered a byte of it for stallMs —
      // unless peers keep saying NOT_YET (the pieces are on their way down), then only after
      // patienceMs; orphaned when none of its sources is left.
      const missing = new Set(order.map((i) => i % stripeCount));
      const stalled: number[] = [];
      const orphaned: number[] = [];
      for (const stripe of missing) {
        const silentMs = now - lastPeerByteAt[stripe];
        if (
          silentMs >= stallMs &&
          (now - lastPeerWaitingAt[stripe] >= stallMs || silentMs >= patienceMs)
        ) stalled.push(stripe);
        if (preference[stripe].every((p) => p.stats.dropped !== null)) orphaned.push(stripe);
      }
      const fallbackFor = fallbackLeft ? new Set([...stalled, ...orphaned]) : new Set<number>();
      // Per stripe, the first peer that is doing well, and those before it that are not: each
      // device passes every piece on once (a second source only while the first is in trouble).
      const candidates: { src: SourceState; stripe: number | undefined }[] = [];
      for (let t = 0; t < stripeCount; t++) {
        const stripe = (turn + t) % stripeCount;
        for (const peer of preference[stripe]) {
          if (peer.stats.dropped !== null) continue;
          candidates.push({ src: peer, stripe });
          if (!peer.troubled) break;
        }
      }
      turn++;
      for (const stripe of fallbackFor) candidates.push({ src: fallback!, stripe });
      for (const { src, stripe } of candidates) {
        if (inFlight.size >= parallel) break;
        while (inFlight.size < parallel && src.requests < PER_SOURCE && src.readyAt <= now) {
          const index = pick(src, stripe);
          if (index === undefined) {
            if (src.notYet.size > 0 && order.length > 0) {
              src.notYet.clear();
              backOff(src);
            }
            break;
          }
          launch(src, index);
        }
      }
      if (inFlight.size === 0 && store.heldCount < count) {
        if (orphaned.length > 0 && !fallbackLeft) {
          throw new SwarmDownloadError(failureMessage("every source failed", stats), stats);
        }
        if (!fallbackLeft && stalled.length > 0) {
          throw new SwarmDownloadError(
            failureMessage(`no source delivered a byte for ${stallMs} ms`, stats),
            stats,
          );
        }
      }
      let next = now + MAX_SLEEP_MS;
      for (const { src } of candidates) if (src.readyAt > now) next = Math.min(next, src.readyAt);
      for (const stripe of missing) {
        if (fallbackFor.has(stripe)) continue;
        const waiting = now - lastPeerWaitingAt[stripe] < stallMs;
        next = Math.min(
          next,
          waiting
            ? Math.min(lastPeerWaitingAt[stripe] + stallMs, lastPeerByteAt[stripe] + patienceMs)
            : lastPeerByteAt[stripe] + stallMs,
        );
      }
      await wake.wait(Math.max(1, Math.ceil(next - now)));
    }
    signal?.throwIfAborted();
    await store.complete();
    const fallbackBytes = fallback?.stats.bytes ?? 0;
    return {
      pieceCount: count,
      piecesResumed,
      piecesFetched,
      bytesReceived: stats.reduce((sum, s) => sum + s.bytes, 0),
      fallbackBytes,
      sources: stats,
    };
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!stop.signal.aborted) stop.abort(new Error("download over"));
    while (tasks.size > 0) await Promise.allSettled([...tasks]);
  }
}

function failureMessage(why: string, stats: readonly SwarmSourceStats[]): string {
  const each = stats.map((s) =>
    `${s.label}: ${
      s.dropped ?? `${s.pieces} pieces, ${s.refusals} refusals, ${s.failures} failures`
    }`
  );
  return `cannot download the blob from the swarm: ${why}${
    each.length > 0 ? ` (${each.join("; ")})` : ""
  }`;
}

/** One ranged request. */
interface RangeRequest {
  readonly digest: Uint8Array;
  readonly offset: number;
  readonly length: number;
  readonly credentials: BlobCredentials;
  readonly idleTimeoutMs: number;
  readonly minRate: MinRate;
  readonly signal: AbortSignal;
  readonly onBytes: (n: number) => void;
}

/** Asks `source` for one range (protocol version 3); never throws. */
async function fetchRange(source: BlobSource, request: RangeRequest): Promise<Outcome> {
  if (request.digest.length !== DIGEST_LENGTH) throw new RangeError("bad digest");
  let conn: Deno.TcpConn | undefined;
  let why: string | undefined;
  let stopNow: (reason: Error) => void = () => {};
  const stopped = new Promise<never>((_, reject) => {
    stopNow = reject;
  });
  stopped.catch(() => {});
  const cut = (reason: string) => {
    why ??= reason;
    if (conn !== undefined) closeQuietly(conn);
    stopNow(new Error(reason));
  };
  const idle = new IdleWatchdog(
    request.idleTimeoutMs,
    () => cut(`silent for ${request.idleTimeoutMs} ms`),
  );
  const rate = new RateWatchdog(
    request.minRate,
    () => cut(`below ${request.minRate.bytesPerSecond} B/s over ${request.minRate.windowMs} ms`),
  );
  const onAbort = () => cut("aborted");
  request.signal.addEventListener("abort", onAbort);
  const failed = (err: unknown): Outcome => ({
    kind: "failed",
    reason: why ?? (err instanceof Error ? err.message : String(err)),
  });
  try {
    if (request.signal.aborted) return failed(new Error("aborted"));
    const connecting = Deno.connect({
      hostname: source.hostname,
      port: source.port,
      transport: "tcp",
    });
    try {
      conn = await Promise.race([connecting, stopped]);
    } catch (err) {
      connecting.then(closeQuietly, () => {});
      return failed(err);
    }
    idle.kick();
    const readExact = async (length: number): Promise<Uint8Array | null> => {
      const out = new Uint8Array(length);
      for (let filled = 0; filled < length;) {
        const n = await conn!.read(out.subarray(filled));
        if (n === null) return null;
        filled += n;
        idle.kick();
      }
      return out;
    };
    try {
      const hello = await readExact(HELLO_SIZE);
      if (hello === null) return failed(new Error("closed before the hello"));
      let nonce: Uint8Array;
      try {
        nonce = decodeHello(hello);
      } catch (err) {
        if (!(err instanceof BlobProtocolError)) throw err;
        return { kind: "malformed", reason: `bad hello: ${err.message}` };
      }
      const bytes = await signRequest(
        { digest: request.digest, offset: request.offset, length: request.length },
        request.credentials.nodeId,
        request.credentials.ticket ?? null,
        nonce,
        request.credentials.privateKey,
        VERSION_3,
      );
      for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
      idle.kick();
      const head = await readExact(RESPONSE_HEADER_SIZE);
      if (head === null) return failed(new Error("closed before the response"));
      let header: BlobResponseHeader;
      try {
        header = decodeResponseHeader(head);
      } catch (err) {
        if (!(err instanceof BlobProtocolError)) throw err;
        return { kind: "malformed", reason: `bad response: ${err.message}` };
      }
      if (header.status !== BlobStatus.OK) return { kind: "status", status: header.status };
      if (header.length !== request.length) {
        return {
          kind: "malformed",
          reason: `announced ${header.length} bytes for a range of ${request.length}`,
        };
      }
      const body = new Uint8Array(request.length);
      for (let filled = 0; filled < body.length;) {
        const n = await conn.read(body.subarray(filled));
        if (n === null) {
          return failed(new Error(`closed after ${filled} of ${body.length} bytes`));
        }
        filled += n;
        idle.kick();
        rate.count(n);
        request.onBytes(n);
      }
      return { kind: "piece", bytes: body };
    } catch (err) {
      return failed(err);
    }
  } finally {
    idle.stop();
    rate.stop();
    request.signal.removeEventListener("abort", onAbort);
    if (conn !== undefined) closeQuietly(conn);
  }
}
