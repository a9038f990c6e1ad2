/**
 * The blob client: downloads a content-addressed blob from one of several
 * sources (a leader agent, then the control plane…) in the format of
 * `blob_protocol.ts`, resuming where a previous attempt stopped.
 *
 * Bytes go socket → partial file through one fixed buffer, hashed on the way;
 * the partial file is renamed to its destination only once the BLAKE3 of the
 * whole blob matches, so the destination never holds unverified bytes. What
 * happens when a source fails:
 *
 * - connection dropped (mid-header or mid-body), or BUSY: the bytes received
 *   are kept and the same source is asked again from the new offset. An
 *   attempt that made progress does not count against `attemptsPerSource`;
 *   `attemptsPerSource` consecutive attempts without progress (or
 *   10 × `attemptsPerSource` attempts in all) give up on the source.
 * - cannot connect, idle timeout, NOT_FOUND, BAD_REQUEST, a length that does
 *   not match, or a source below `minRate` (fewer than bytesPerSecond ×
 *   windowMs bytes over the last window, counted over all its attempts from
 *   the moment it is first tried: a source that trickles, or accepts and says
 *   nothing, is left at most `minRate.windowMs` (+ a tenth) after that): next source, keeping the bytes received (every source serves
 *   the same bytes for a digest, and the final digest check catches any lie).
 * - BAD_OFFSET: the partial bytes are discarded and the source asked from 0.
 * - digest mismatch: the partial bytes are discarded. If every byte came from
 *   this source, it is the culprit: next source, from 0. If some came from
 *   elsewhere (an earlier run, another source), the same source is asked again
 *   from 0 before it is blamed.
 *
 * Local I/O errors (disk full…) are not a source's fault: they end the
 * download at once with an `IoError`. After a failed or aborted download the
 * partial file is kept for a later resume, unless it is empty.
 *
 * `fetchSmallBlob` fetches a small blob of unknown size (a signed document,
 * at most a given number of bytes) into memory instead: one source, one
 * attempt, a deadline for the whole fetch, the digest verified.
 *
 * @module
 */

import { directoryOf, syncDirectory } from "../kernel/atomic_file.ts";
import {
  blake3,
  createHasher,
  DIGEST_LENGTH,
  digestsEqual,
  type Hasher,
  toHex,
} from "../kernel/blake3.ts";
import { describeOsError, ExitCode, IoError, ioError, PoolboyError } from "../kernel/errors.ts";
import { readFull, writeAll } from "../kernel/file_io.ts";
import {
  BlobProtocolError,
  type BlobResponseHeader,
  BlobStatus,
  decodeHello,
  decodeResponseHeader,
  encodeRequest,
  HELLO_SIZE,
  RESPONSE_HEADER_SIZE,
  signRequest,
  statusName,
} from "./blob_protocol.ts";
import type { BlobCredentials } from "./blob_auth.ts";
import {
  closeQuietly,
  DEFAULT_MIN_RATE,
  IdleTimeoutError,
  IdleWatchdog,
  type MinRate,
  RateWatchdog,
} from "./idle_watchdog.ts";

/** Bytes read from the socket (and hashed, and written) at a time. */
export const RECEIVE_BUFFER_SIZE = 256 * 1024;

/** Cap on attempts per source, as a multiple of `attemptsPerSource`, even if each made progress. */
const MAX_ATTEMPTS_FACTOR = 10;

/** A peer that may hold the blob. */
export interface BlobSource {
  hostname: string;
  port: number;
  /** Name of the source in results and errors, e.g. `"leader node-7"` or `"control plane"`. */
  label: string;
}

/** Options of `downloadBlob`. */
export interface DownloadOptions {
  /** Sources, tried in order. */
  sources: BlobSource[];
  /** BLAKE3 digest of the blob (32 bytes). */
  digest: Uint8Array;
  /** Size of the blob in bytes. */
  size: number;
  /** Where the verified blob goes; its directory must exist. */
  destination: string;
  /** The partial file: resumed if present, renamed to `destination` at the end. */
  partialPath: string;
  /** A source silent this long (connect, header or body) is given up. Default 10 000 ms. */
  idleTimeoutMs?: number;
  /**
   * A source delivering fewer bytes than this over the window (all its
   * attempts together, from when it is first tried) is given up for the next.
   * Default 64 KiB/s over 10 s; `bytesPerSecond` 0 turns it off.
   */
  minRate?: MinRate;
  /** Consecutive attempts without progress before a source is given up. Default 3. */
  attemptsPerSource?: number;
  /** Called after each piece received with the bytes held so far and the blob's size. */
  onProgress?: (done: number, total: number) => void;
  /** Aborts the download (the partial file is kept); the promise rejects with the reason. */
  signal?: AbortSignal;
  /**
   * Speak protocol version 2: read the server's hello and sign each request
   * with these (the servers of the control plane and of agents require it).
   * Without: version 1 (servers started without `authorize`).
   */
  credentials?: BlobCredentials;
}

/** One connection to one source. */
export interface DownloadAttempt {
  /** The source's label. */
  label: string;
  /** Why the attempt failed; absent for the successful one. */
  error?: string;
  /** Body bytes received in this attempt. */
  bytes: number;
}

/** What a successful download did. */
export interface DownloadResult {
  /** Label of the source that completed the blob. */
  source: string;
  /** Body bytes received over the network, all attempts and sources together. */
  bytesReceived: number;
  /** Bytes of an existing partial file that were reused (0 if none). */
  resumedFrom: number;
  /** Every attempt, in order; the last one succeeded. */
  attempts: DownloadAttempt[];
}

/** No source delivered the blob; the message says why each one failed. */
export class BlobDownloadError extends PoolboyError {
  /** Every attempt, in order. */
  readonly attempts: DownloadAttempt[];
  constructor(message: string, attempts: DownloadAttempt[]) {
    super(message, ExitCode.io);
    this.attempts = attempts;
  }
}

/** Downloads (or resumes) the blob from the first source that delivers it intact. */
export async function downloadBlob(options: DownloadOptions): Promise<DownloadResult> {
  const { digest, size, sources, signal } = options;
  if (digest.length !== DIGEST_LENGTH) {
    throw new RangeError(`a blob digest is ${DIGEST_LENGTH} bytes, got ${digest.length}`);
  }
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad blob size ${size}`);
  const attemptsPerSource = Math.max(1, options.attemptsPerSource ?? 3);
  const context: AttemptContext = {
    digest,
    size,
    idleTimeoutMs: options.idleTimeoutMs ?? 10_000,
    onProgress: options.onProgress,
    signal,
    buffer: new Uint8Array(RECEIVE_BUFFER_SIZE),
    rate: undefined,
    credentials: options.credentials,
  };
  const minRate = options.minRate ?? DEFAULT_MIN_RATE;
  signal?.throwIfAborted();

  const partial = await PartialDownload.open(options.partialPath, size, context.buffer);
  const resumedFrom = partial.length;
  const attempts: DownloadAttempt[] = [];
  const perSource = sources.map((): DownloadAttempt[] => []);
  let finished = false;
  try {
    for (const [index, source] of sources.entries()) {
      let withoutProgress = 0;
      const rate = new SourceRate(minRate);
      context.rate = rate;
      try {
        for (let tries = 1;; tries++) {
          signal?.throwIfAborted();
          if (rate.watchdog.expired) break;
          const attempt: DownloadAttempt = { label: source.label, bytes: 0 };
          attempts.push(attempt);
          perSource[index].push(attempt);
          let failure: SourceFailure;
          try {
            await receive(source, partial, attempt, context);
            const origin = partial.origin;
            const received = partial.digest();
            if (digestsEqual(received, digest)) {
              await partial.commit(options.destination);
              finished = true;
              return {
                source: source.label,
                bytesReceived: attempts.reduce((sum, a) => sum + a.bytes, 0),
                resumedFrom,
                attempts,
              };
            }
            await partial.reset();
            failure = new SourceFailure(
              `digest mismatch: the blob received hashes to ${toHex(received)}, expected ${
                toHex(digest)
              }; refused`,
              origin === source.label ? "next" : "retry",
            );
          } catch (err) {
            if (!(err instanceof SourceFailure)) throw err;
            failure = err;
          }
          attempt.error = failure.message;
          if (failure.then === "restart") await partial.reset();
          if (failure.then === "next") break;
          withoutProgress = attempt.bytes > 0 ? 0 : withoutProgress + 1;
          if (withoutProgress >= attemptsPerSource) break;
          if (tries >= attemptsPerSource * MAX_ATTEMPTS_FACTOR) break;
          if (withoutProgress > 0) {
            await sleep(Math.min(2000, 100 * 2 ** (withoutProgress - 1)), signal);
          }
        }
      } finally {
        rate.watchdog.stop();
        context.rate = undefined;
      }
    }
  } finally {
    if (!finished) await partial.close();
  }
  throw new BlobDownloadError(failureMessage(options, perSource), attempts);
}

/** Options of `fetchSmallBlob`. */
export interface FetchSmallBlobOptions {
  readonly source: BlobSource;
  /** BLAKE3 digest of the blob (32 bytes). */
  readonly digest: Uint8Array;
  /** A source that offers more bytes than this is refused before any body byte is read. */
  readonly maxBytes: number;
  /** The whole fetch (connect, request, response) must end within this. */
  readonly deadlineMs: number;
  /** Aborts the fetch; the promise rejects with the reason. */
  readonly signal?: AbortSignal;
  /** Speak protocol version 2 with these (see `DownloadOptions.credentials`). */
  readonly credentials?: BlobCredentials;
}

/**
 * Fetches a small blob of unknown size (a signed document) into memory: one
 * attempt at one source, at most `maxBytes`, within `deadlineMs`, and only
 * bytes whose BLAKE3 is `digest` are returned. Any failure is a
 * `BlobDownloadError` saying why (the caller decides whether to try again).
 */
export async function fetchSmallBlob(options: FetchSmallBlobOptions): Promise<Uint8Array> {
  const { source, digest, maxBytes, deadlineMs, signal } = options;
  if (digest.length !== DIGEST_LENGTH) {
    throw new RangeError(`a blob digest is ${DIGEST_LENGTH} bytes, got ${digest.length}`);
  }
  signal?.throwIfAborted();
  const name = `blob ${
    toHex(digest).slice(0, 16)
  }… from ${source.label} (${source.hostname}:${source.port})`;
  const fail = (why: string) => new BlobDownloadError(`cannot fetch ${name}: ${why}`, []);
  let conn: Deno.TcpConn | undefined;
  let expired = false;
  let stop: (reason: unknown) => void = () => {};
  const stopped = new Promise<never>((_, reject) => {
    stop = reject;
  });
  stopped.catch(() => {});
  const end = (reason: unknown) => {
    if (conn !== undefined) closeQuietly(conn);
    stop(reason);
  };
  const timer = setTimeout(() => {
    expired = true;
    end(fail(`no complete answer within ${deadlineMs} ms`));
  }, deadlineMs);
  const onAbort = () => end(signal?.reason);
  signal?.addEventListener("abort", onAbort);
  /** The error a failed socket operation stands for. */
  const lost = (err: unknown, during: string): unknown => {
    if (signal?.aborted) return signal.reason;
    if (expired) return fail(`no complete answer within ${deadlineMs} ms`);
    return fail(`connection lost ${during}: ${describeNetError(err)}`);
  };
  try {
    const connecting = Deno.connect({
      hostname: source.hostname,
      port: source.port,
      transport: "tcp",
    });
    try {
      conn = await Promise.race([connecting, stopped]);
    } catch (err) {
      connecting.then(closeQuietly, () => {});
      if (err instanceof BlobDownloadError || signal?.aborted) throw err;
      throw fail(`cannot connect: ${describeNetError(err)}`);
    }
    let request: Uint8Array = encodeRequest({ digest, offset: 0 });
    const credentials = options.credentials;
    if (credentials !== undefined) {
      const hello = new Uint8Array(HELLO_SIZE);
      await readExactly(conn, hello, () => fail("connection closed before the hello"), lost);
      let nonce: Uint8Array;
      try {
        nonce = decodeHello(hello);
      } catch (err) {
        if (!(err instanceof BlobProtocolError)) throw err;
        throw fail(`bad hello: ${err.message}`);
      }
      request = await signRequest(
        { digest, offset: 0 },
        credentials.nodeId,
        credentials.ticket ?? null,
        nonce,
        credentials.privateKey,
      );
    }
    try {
      for (let done = 0; done < request.length;) done += await conn.write(request.subarray(done));
    } catch (err) {
      throw lost(err, "sending the request");
    }
    const header = new Uint8Array(RESPONSE_HEADER_SIZE);
    await readExactly(conn, header, () => fail("connection closed before the response"), lost);
    let response: BlobResponseHeader;
    try {
      response = decodeResponseHeader(header);
    } catch (err) {
      if (!(err instanceof BlobProtocolError)) throw err;
      throw fail(`bad response: ${err.message}`);
    }
    if (response.status !== BlobStatus.OK) {
      throw fail(`the source answered ${statusName(response.status)}`);
    }
    if (response.length > maxBytes) {
      throw fail(`the source offers ${response.length} bytes, more than the ${maxBytes} allowed`);
    }
    const body = new Uint8Array(response.length);
    await readExactly(
      conn,
      body,
      () => fail(`connection closed before the end of the ${response.length} bytes`),
      lost,
    );
    const received = blake3(body);
    if (!digestsEqual(received, digest)) {
      throw fail(`the bytes received hash to ${toHex(received)}; refused`);
    }
    return body;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    if (conn !== undefined) closeQuietly(conn);
  }
}

/** Fills `buffer` from `conn`; `closed()` is thrown at end of stream, `lost(err)` on a failed read. */
async function readExactly(
  conn: Deno.TcpConn,
  buffer: Uint8Array,
  closed: () => unknown,
  lost: (err: unknown, during: string) => unknown,
): Promise<void> {
  for (let filled = 0; filled < buffer.length;) {
    let n: number | null;
    try {
      n = await conn.read(buffer.subarray(filled));
    } catch (err) {
      throw lost(err, `after ${filled} bytes`);
    }
    if (n === null) throw closed();
    filled += n;
  }
}

/** `cannot download blob …: every source failed: a (host:port): why; b (host:port): why`. */
function failureMessage(options: DownloadOptions, perSource: DownloadAttempt[][]): string {
  const name = `blob ${toHex(options.digest).slice(0, 16)}… (${options.size} bytes)`;
  if (options.sources.length === 0) return `cannot download ${name}: no sources`;
  const reasons = options.sources.map((source, index) => {
    const mine = perSource[index];
    const last = mine.at(-1)?.error ?? "not tried";
    const tries = mine.length > 1 ? ` (after ${mine.length} attempts)` : "";
    return `${source.label} (${source.hostname}:${source.port}): ${last}${tries}`;
  });
  return `cannot download ${name}: every source failed: ${reasons.join("; ")}`;
}

/** What to do after a failed attempt. */
type NextStep = "retry" | "next" | "restart";

/** An attempt failed because of the source or the network, not of this machine. */
class SourceFailure extends Error {
  /** `retry`: same source, same offset; `next`: next source; `restart`: same source from 0. */
  readonly then: NextStep;
  constructor(message: string, then: NextStep) {
    super(message);
    this.name = "SourceFailure";
    this.then = then;
  }
}

interface AttemptContext {
  digest: Uint8Array;
  size: number;
  idleTimeoutMs: number;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
  buffer: Uint8Array;
  /** The minimum rate of the source being tried. */
  rate: SourceRate | undefined;
  credentials: BlobCredentials | undefined;
}

/** The rate watchdog of one source, over all its attempts; when it fires it ends the attempt under way. */
class SourceRate {
  readonly watchdog: RateWatchdog;
  /** Ends the attempt under way (set by that attempt). */
  endAttempt: () => void = () => {};
  constructor(minRate: MinRate) {
    this.watchdog = new RateWatchdog(minRate, () => this.endAttempt());
  }

  /** Why the source is left. */
  get reason(): string {
    const { bytesPerSecond, windowMs } = this.watchdog.rate;
    return `fewer than ${bytesPerSecond} bytes/s over ${windowMs} ms (below the minimum rate)`;
  }
}

/**
 * One attempt: connect, ask for the bytes from `partial.length`, and append
 * them all to `partial`. Resolves once the body is complete (not yet
 * verified); throws `SourceFailure`, a local `IoError`, or the abort reason.
 */
async function receive(
  source: BlobSource,
  partial: PartialDownload,
  attempt: DownloadAttempt,
  context: AttemptContext,
): Promise<void> {
  const { idleTimeoutMs, signal, size } = context;
  let conn: Deno.TcpConn | undefined;
  let connectTimedOut: () => void = () => {};
  const watchdog = new IdleWatchdog(idleTimeoutMs, () => {
    if (conn === undefined) connectTimedOut();
    else closeQuietly(conn);
  });
  const onAbort = () => watchdog.expire();
  signal?.addEventListener("abort", onAbort);
  const rate = context.rate;
  if (rate) rate.endAttempt = () => watchdog.expire();
  const tooSlow = () => rate?.watchdog.expired === true;

  /** The failure a rejected socket operation stands for. */
  const lost = (err: unknown, during: string): unknown => {
    if (signal?.aborted) return signal.reason;
    if (tooSlow()) return new SourceFailure(`${rate?.reason} ${during}`, "next");
    if (watchdog.expired) {
      return new SourceFailure(`no data for ${idleTimeoutMs} ms ${during} (idle timeout)`, "next");
    }
    return new SourceFailure(`connection lost ${during}: ${describeNetError(err)}`, "retry");
  };

  try {
    const connecting = Deno.connect({
      hostname: source.hostname,
      port: source.port,
      transport: "tcp",
    });
    const timedOut = new Promise<never>((_, reject) => {
      connectTimedOut = () => reject(new IdleTimeoutError("timeout"));
    });
    timedOut.catch(() => {});
    try {
      conn = await Promise.race([connecting, timedOut]);
    } catch (err) {
      // Should the connection still come, close it.
      connecting.then(closeQuietly, () => {});
      if (signal?.aborted) throw signal.reason;
      if (tooSlow()) throw new SourceFailure(`${rate?.reason} while connecting`, "next");
      if (watchdog.expired) {
        throw new SourceFailure(`cannot connect within ${idleTimeoutMs} ms (idle timeout)`, "next");
      }
      throw new SourceFailure(`cannot connect: ${describeNetError(err)}`, "next");
    }
    watchdog.kick();
    try {
      conn.setNoDelay(true);
    } catch {
      // Not fatal: only latency.
    }

    const offset = partial.length;
    let request: Uint8Array = encodeRequest({ digest: context.digest, offset });
    const credentials = context.credentials;
    if (credentials !== undefined) {
      const hello = new Uint8Array(HELLO_SIZE);
      for (let filled = 0; filled < hello.length;) {
        let n: number | null;
        try {
          n = await conn.read(hello.subarray(filled));
        } catch (err) {
          throw lost(err, "before the hello");
        }
        if (n === null) throw new SourceFailure("connection closed before the hello", "retry");
        filled += n;
        watchdog.kick();
        rate?.watchdog.count(n);
      }
      let nonce: Uint8Array;
      try {
        nonce = decodeHello(hello);
      } catch (err) {
        if (!(err instanceof BlobProtocolError)) throw err;
        throw new SourceFailure(`bad hello: ${err.message}`, "next");
      }
      request = await signRequest(
        { digest: context.digest, offset },
        credentials.nodeId,
        credentials.ticket ?? null,
        nonce,
        credentials.privateKey,
      );
    }
    try {
      for (let done = 0; done < request.length;) {
        done += await conn.write(request.subarray(done));
        watchdog.kick();
      }
    } catch (err) {
      throw lost(err, "sending the request");
    }

    const headerBytes = new Uint8Array(RESPONSE_HEADER_SIZE);
    for (let filled = 0; filled < headerBytes.length;) {
      let n: number | null;
      try {
        n = await conn.read(headerBytes.subarray(filled));
      } catch (err) {
        throw lost(err, "before the response");
      }
      if (n === null) {
        throw new SourceFailure("connection closed before the response", "retry");
      }
      filled += n;
      watchdog.kick();
      rate?.watchdog.count(n);
    }
    let header: BlobResponseHeader;
    try {
      header = decodeResponseHeader(headerBytes);
    } catch (err) {
      if (!(err instanceof BlobProtocolError)) throw err;
      throw new SourceFailure(`bad response: ${err.message}`, "next");
    }
    checkStatus(header, offset, size);

    const buf = context.buffer;
    while (partial.length < size) {
      let n: number | null;
      try {
        n = await conn.read(buf.subarray(0, Math.min(buf.length, size - partial.length)));
      } catch (err) {
        throw lost(err, `after ${partial.length} of ${size} bytes`);
      }
      if (n === null) {
        throw new SourceFailure(
          `connection closed after ${partial.length} of ${size} bytes`,
          "retry",
        );
      }
      watchdog.kick();
      rate?.watchdog.count(n);
      await partial.append(buf.subarray(0, n), source.label);
      attempt.bytes += n;
      context.onProgress?.(partial.length, size);
    }
  } finally {
    if (rate) rate.endAttempt = () => {};
    signal?.removeEventListener("abort", onAbort);
    watchdog.stop();
    if (conn !== undefined) closeQuietly(conn);
  }
}

/** Throws the `SourceFailure` a non-OK status (or a length that does not add up) stands for. */
function checkStatus(header: BlobResponseHeader, offset: number, size: number): void {
  const name = statusName(header.status);
  switch (header.status) {
    case BlobStatus.OK:
      if (header.length !== size - offset) {
        throw new SourceFailure(
          `the source offers ${header.length} bytes from offset ${offset}, expected ${
            size - offset
          } (another size)`,
          "next",
        );
      }
      return;
    case BlobStatus.NOT_FOUND:
      throw new SourceFailure(`the source does not hold the blob (${name})`, "next");
    case BlobStatus.BAD_OFFSET:
      throw new SourceFailure(
        `the source refused offset ${offset} (${name})`,
        offset > 0 ? "restart" : "next",
      );
    case BlobStatus.BUSY:
      throw new SourceFailure(`the source is busy (${name})`, "retry");
    case BlobStatus.FORBIDDEN:
      throw new SourceFailure(
        `the source does not serve this device (${name}): not enrolled, or no valid ticket`,
        "next",
      );
    default:
      throw new SourceFailure(
        `the source refused the request (${name}): another protocol version?`,
        "next",
      );
  }
}

/** A short reason for a failed socket operation. */
function describeNetError(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (err instanceof Deno.errors.ConnectionAborted) return "connection aborted";
  if (err instanceof Deno.errors.BrokenPipe) return "connection broken";
  if (err instanceof Deno.errors.TimedOut) return "timed out";
  if (err instanceof Deno.errors.NotConnected) return "not connected";
  if (err instanceof Deno.errors.AddrNotAvailable) return "address not available";
  return describeOsError(err);
}

/** Waits `ms`, or rejects with the abort reason. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The partial file of a download, with the hash of the bytes it holds. The
 * file stays open from `open` to `commit` or `close`; bytes are appended.
 */
class PartialDownload {
  readonly path: string;
  readonly #file: Deno.FsFile;
  readonly #hasher: Hasher;
  /** Bytes held (and hashed). */
  length: number;
  /**
   * The label of the one source all `length` bytes came from; `null` if they
   * came from an earlier run or from several sources; `undefined` when empty.
   */
  origin: string | null | undefined;

  private constructor(path: string, file: Deno.FsFile, hasher: Hasher, length: number) {
    this.path = path;
    this.#file = file;
    this.#hasher = hasher;
    this.length = length;
    this.origin = length > 0 ? null : undefined;
  }

  /**
   * Opens (or creates) the partial file and hashes what it holds, through
   * `buffer`. A file longer than `size` cannot be a prefix of the blob: it is
   * emptied.
   */
  static async open(path: string, size: number, buffer: Uint8Array): Promise<PartialDownload> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true });
    } catch (err) {
      throw ioError("open partial download", path, err);
    }
    try {
      const info = await file.stat();
      if (!info.isFile) throw new IoError(`partial download "${path}" is not a regular file`);
      const hasher = createHasher();
      let length = 0;
      if (info.size <= size) {
        while (true) {
          const n = await readFull(file, buffer);
          hasher.update(buffer.subarray(0, n));
          length += n;
          if (n < buffer.length) break;
        }
      }
      if (length > size) {
        length = 0;
        hasher.init();
      }
      if (length !== info.size) await file.truncate(length);
      await file.seek(length, Deno.SeekMode.Start);
      return new PartialDownload(path, file, hasher, length);
    } catch (err) {
      closeQuietly(file);
      throw ioError("read partial download", path, err);
    }
  }

  /** Appends bytes received from `label`. */
  async append(data: Uint8Array, label: string): Promise<void> {
    try {
      await writeAll(this.#file, data);
    } catch (err) {
      throw ioError("write partial download", this.path, err);
    }
    this.#hasher.update(data);
    if (this.length === 0) this.origin = label;
    else if (this.origin !== label) this.origin = null;
    this.length += data.length;
  }

  /** The digest of the bytes held; the hash then starts over (call `reset` or `commit` next). */
  digest(): Uint8Array {
    return this.#hasher.digest();
  }

  /** Discards every byte held. */
  async reset(): Promise<void> {
    try {
      await this.#file.truncate(0);
      await this.#file.seek(0, Deno.SeekMode.Start);
    } catch (err) {
      throw ioError("truncate partial download", this.path, err);
    }
    this.#hasher.init();
    this.length = 0;
    this.origin = undefined;
  }

  /** Fsyncs, closes and renames the (verified) file to `destination`, durably. */
  async commit(destination: string): Promise<void> {
    try {
      await this.#file.sync();
      this.#file.close();
      await Deno.rename(this.path, destination);
    } catch (err) {
      closeQuietly(this.#file);
      throw ioError("write", destination, err);
    }
    await syncDirectory(directoryOf(destination));
  }

  /** Closes the file, and deletes it if it holds nothing. */
  async close(): Promise<void> {
    closeQuietly(this.#file);
    if (this.length > 0) return;
    try {
      await Deno.remove(this.path);
    } catch {
      // Already gone.
    }
  }
}
