/**
 * The blob server: serves content-addressed blobs over TCP, one request per
 * connection, in the format of `blob_protocol.ts`. The control plane runs one
 * for the leaders of a rollout, and each leader agent one for its followers.
 *
 * It serves only blobs its store's `lookup` returns, by digest; no path ever
 * comes from the wire. Memory is fixed per connection (one 256 KiB buffer),
 * and `maxConnections` bounds the connections. A peer that sends nothing, or
 * stops reading, is dropped after `idleTimeoutMs`. A failing connection never
 * stops the server: it is closed and counted in `errors`.
 *
 * Limits against bad peers (issue 14; docs/spec/blob-protocol-v1.md, "Limits"):
 * at most `maxConnectionsPerAddress` connections per client address (more are
 * closed at once, counted in `refused`, and take no slot, so one address
 * cannot make the server answer BUSY to others); the request must arrive whole
 * within `requestTimeoutMs`; and a connection that moves fewer bytes than
 * `minRate` over its window (a peer that requests or reads too slowly) is cut,
 * counted in `cut`.
 *
 * With `authorize` (the control plane's and agents' servers) it speaks
 * version 2: a hello with a fresh nonce on accept, then a signed request that
 * `authorize` must admit (blob_auth.ts), else FORBIDDEN, counted in
 * `forbidden`, and nothing is looked up or served.
 *
 * Swarms (issue 15, protocol version 3): a version-3 request asks for a byte
 * range (`length`). Besides complete blobs the server serves blobs it is
 * still downloading (`sharePartial`): a range only when every piece it
 * touches is verified (`PartialBlob.has`), else `NOT_YET`; version-1/2
 * requests never see a partial blob (NOT_FOUND). Upload caps: at most
 * `maxUploads` responses with a body in flight at once (more get BUSY), and
 * all bodies together at most `uploadBytesPerSecond` (a token bucket).
 *
 * @module
 */

import { toHex } from "../kernel/blake3.ts";
import { IoError, ProtocolError } from "../kernel/errors.ts";
import { readFull } from "../kernel/file_io.ts";
import {
  BlobProtocolError,
  type BlobRequest,
  BlobStatus,
  type BlobStatusCode,
  decodeAuthenticatedRequest,
  decodeRequest,
  encodeHello,
  encodeResponseHeader,
  MAX_REQUEST_NODE_ID,
  MAX_TICKET,
  NONCE_LENGTH,
  REQUEST_SIGNATURE_LENGTH,
  REQUEST_SIZE,
  REQUEST_V3_SIZE,
  VERSION_2,
  VERSION_3,
} from "./blob_protocol.ts";
import { TokenBucket } from "./token_bucket.ts";
import type { BlobAuthorizer } from "./blob_auth.ts";
import type { BlobLookup } from "./blob_store.ts";
import type { TransportFaults } from "./faults.ts";
import {
  closeQuietly,
  DEFAULT_MIN_RATE,
  IdleWatchdog,
  type MinRate,
  RateWatchdog,
} from "./idle_watchdog.ts";

/** Bytes read from a blob file and written to the socket at a time, per connection. */
export const SERVE_BUFFER_SIZE = 256 * 1024;

/** Default `notYetHoldMs`: how long a request for a range a partial blob lacks waits for it. */
export const DEFAULT_NOT_YET_HOLD_MS = 1000;
/** How often a held request checks its range again. */
const NOT_YET_POLL_MS = 10;

/** Default `maxUploads`: responses with a body in flight at once. */
export const DEFAULT_MAX_UPLOADS = 4;

/**
 * A blob the server holds only in part (it is downloading it piece by piece,
 * issue 15): served to version-3 requests, a range only when `has` says every
 * byte of it is verified.
 */
export interface PartialBlob {
  /** Bytes of the whole blob. */
  readonly size: number;
  /** Whether every piece touching `[offset, offset + length)` is held and verified. */
  has(offset: number, length: number): boolean;
  /** Reads verified bytes at `offset` into `buffer`; returns how many (fewer only at the blob's end). */
  read(offset: number, buffer: Uint8Array): Promise<number>;
}

/** Options of `BlobServer.start`. */
export interface BlobServerOptions {
  /** Address to listen on, e.g. the tailnet address or `127.0.0.1`. */
  hostname: string;
  /** TCP port; 0 (the default) picks any free port (see `BlobServer.port`). */
  port?: number;
  /** Where the blobs come from. */
  store: BlobLookup;
  /** A peer silent (or not reading) this long is disconnected. Default 10 000 ms. */
  idleTimeoutMs?: number;
  /** Connections beyond this many get `BUSY`. Default 64. */
  maxConnections?: number;
  /** Connections from one client address beyond this many are closed at once. Default 4. */
  maxConnectionsPerAddress?: number;
  /** A connection moving fewer bytes than this over its window is cut. Default 64 KiB/s over 10 s. */
  minRate?: MinRate;
  /** The request must arrive whole within this. Default: `minRate.windowMs`. */
  requestTimeoutMs?: number;
  /**
   * Faults to inject (tests only; default none), read at the start of each
   * response. `serveDropAfterBytes` closes the
   * connection after that many body bytes, for the first `serveDropTimes`
   * responses longer than that; `serveCorrupt` flips the first body byte of the
   * first `serveCorruptTimes` non-empty responses; `serveBytesPerSecond` caps
   * each response's rate (so a test can act while a download is under way).
   */
  faults?: TransportFaults;
  /**
   * Who is served (protocol version 2): with it the server sends a hello with
   * a fresh nonce on accept, reads a signed request and serves it only when
   * this says so (else FORBIDDEN, counted in `forbidden`). Without it (tests,
   * tools) the server speaks version 1 and serves anyone.
   */
  authorize?: BlobAuthorizer;
  /** Responses with a body in flight at once; beyond, BUSY. Default `DEFAULT_MAX_UPLOADS` (4). */
  maxUploads?: number;
  /** All bodies together at most this many bytes per second (a shared token bucket); 0 (default): no cap. */
  uploadBytesPerSecond?: number;
  /**
   * A version-3 request for a range a partial blob lacks waits this long for it before the
   * answer is NOT_YET. Default `DEFAULT_NOT_YET_HOLD_MS` (1 s); 0 answers at once.
   */
  notYetHoldMs?: number;
}

/** A running blob server. */
export class BlobServer {
  /** The address listened on. */
  readonly hostname: string;
  /** The port listened on (the one picked when started with port 0). */
  readonly port: number;
  /** Body bytes written to clients so far, over all connections. */
  bytesServed = 0;
  /** Connections that ended in an error (timeout, reset, unreadable file…). */
  errors = 0;
  /** Connections closed at once because their address had `maxConnectionsPerAddress` open. */
  refused = 0;
  /** Connections cut for a request not whole within `requestTimeoutMs`, or a rate below `minRate` (also in `errors`). */
  cut = 0;
  /** Requests answered FORBIDDEN: not by an authenticated, enrolled device (version 2). */
  forbidden = 0;
  /** Requests answered NOT_YET: a range of a partial blob not wholly verified yet. */
  notYet = 0;
  /** Requests answered BUSY (too many connections, or `maxUploads` bodies in flight). */
  busy = 0;
  /** Most bodies in flight at once so far (never above `maxUploads`). */
  peakUploads = 0;

  readonly #authorize: BlobAuthorizer | undefined;
  readonly #listener: Deno.TcpListener;
  readonly #store: BlobLookup;
  readonly #idleTimeoutMs: number;
  readonly #maxConnections: number;
  readonly #maxPerAddress: number;
  readonly #minRate: MinRate;
  readonly #requestTimeoutMs: number;
  readonly #perAddress = new Map<string, number>();
  readonly #faults: TransportFaults;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #handlers = new Set<Promise<void>>();
  readonly #served = new Map<string, number>();
  readonly #acceptLoop: Promise<void>;
  readonly #partials = new Map<string, PartialBlob>();
  readonly #maxUploads: number;
  readonly #notYetHoldMs: number;
  readonly #bucket: TokenBucket | undefined;
  #uploads = 0;
  #closing = false;
  #dropsDone = 0;
  #corruptionsDone = 0;

  private constructor(listener: Deno.TcpListener, options: BlobServerOptions) {
    this.#listener = listener;
    this.hostname = listener.addr.hostname;
    this.port = listener.addr.port;
    this.#store = options.store;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 10_000;
    this.#maxConnections = options.maxConnections ?? 64;
    this.#maxPerAddress = options.maxConnectionsPerAddress ?? 4;
    this.#minRate = options.minRate ?? DEFAULT_MIN_RATE;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? this.#minRate.windowMs;
    this.#faults = options.faults ?? {};
    this.#authorize = options.authorize;
    this.#maxUploads = Math.max(1, options.maxUploads ?? DEFAULT_MAX_UPLOADS);
    this.#notYetHoldMs = Math.max(0, options.notYetHoldMs ?? DEFAULT_NOT_YET_HOLD_MS);
    const rate = options.uploadBytesPerSecond ?? 0;
    this.#bucket = rate > 0 ? new TokenBucket(rate) : undefined;
    this.#acceptLoop = this.#accept();
  }

  /** Listens on `hostname:port` and starts serving. */
  static start(options: BlobServerOptions): BlobServer {
    const listener = Deno.listen({
      hostname: options.hostname,
      port: options.port ?? 0,
      transport: "tcp",
    });
    return new BlobServer(listener, options);
  }

  /** Connections open right now. */
  get connections(): number {
    return this.#conns.size;
  }

  /** Bodies being sent right now. */
  get uploadsInFlight(): number {
    return this.#uploads;
  }

  /** The token bucket's capacity (bytes that may pass at once), or 0 without `uploadBytesPerSecond`. */
  get uploadBurstBytes(): number {
    return this.#bucket?.capacity ?? 0;
  }

  /**
   * Serves `partial` for `digest` to version-3 requests while it is being
   * downloaded (a complete blob in the store takes precedence). Replaces any
   * earlier partial of that digest.
   */
  sharePartial(digest: Uint8Array, partial: PartialBlob): void {
    this.#partials.set(toHex(digest), partial);
  }

  /**
   * Whether `partial` holds the range, waiting up to `notYetHoldMs` for it (checked every
   * `NOT_YET_POLL_MS`): the piece a follower asks for next is usually the one arriving here, and
   * handing it over the moment it is verified keeps a region's line one piece deep, where a
   * NOT_YET and a retry would cost a round trip and a back-off at every device.
   */
  async #held(partial: PartialBlob, offset: number, length: number): Promise<boolean> {
    const until = performance.now() + this.#notYetHoldMs;
    while (!partial.has(offset, length)) {
      if (this.#closing || performance.now() >= until) return false;
      await new Promise((resolve) => setTimeout(resolve, NOT_YET_POLL_MS));
    }
    return true;
  }

  /** Stops serving the partial blob of `digest` (a no-op if none). */
  unsharePartial(digest: Uint8Array): void {
    this.#partials.delete(toHex(digest));
  }

  /** Body bytes served so far per blob, by lower-case hex digest. */
  servedByDigest(): Map<string, number> {
    return new Map(this.#served);
  }

  /** Stops listening, closes every open connection and waits for their handlers to finish. */
  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      closeQuietly(this.#listener);
      for (const conn of this.#conns) closeQuietly(conn);
    }
    await this.#acceptLoop;
    while (this.#handlers.size > 0) await Promise.allSettled([...this.#handlers]);
  }

  async #accept(): Promise<void> {
    while (!this.#closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        if (this.#closing) return;
        // E.g. out of file descriptors: back off a little instead of spinning.
        this.errors++;
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      if (this.#closing) {
        closeQuietly(conn);
        return;
      }
      const address = conn.remoteAddr.hostname;
      const fromAddress = this.#perAddress.get(address) ?? 0;
      // Over the address's share, or so many that even BUSY answers would pile up: closed at once.
      if (fromAddress >= this.#maxPerAddress || this.#conns.size >= 2 * this.#maxConnections) {
        this.refused++;
        closeQuietly(conn);
        continue;
      }
      this.#perAddress.set(address, fromAddress + 1);
      const busy = this.#conns.size >= this.#maxConnections;
      this.#conns.add(conn);
      const handler = this.#serve(conn, busy).finally(() => {
        const left = (this.#perAddress.get(address) ?? 1) - 1;
        if (left > 0) this.#perAddress.set(address, left);
        else this.#perAddress.delete(address);
        this.#conns.delete(conn);
        this.#handlers.delete(handler);
      });
      this.#handlers.add(handler);
    }
  }

  /** Serves one connection: one request, one response. Never throws. */
  async #serve(conn: Deno.TcpConn, busy: boolean): Promise<void> {
    const watchdog = new IdleWatchdog(this.#idleTimeoutMs, () => closeQuietly(conn));
    let tooSlow = false;
    const cut = () => {
      tooSlow = true;
      closeQuietly(conn);
    };
    const rate = new RateWatchdog(this.#minRate, cut);
    const requestDeadline = setTimeout(cut, this.#requestTimeoutMs);
    let file: Deno.FsFile | undefined;
    let uploading = false;
    try {
      try {
        conn.setNoDelay(true);
      } catch {
        // Not fatal: only latency.
      }
      const readExact = async (length: number): Promise<Uint8Array> => {
        const bytes = new Uint8Array(length);
        for (let filled = 0; filled < length;) {
          const n = await conn.read(bytes.subarray(filled));
          if (n === null) throw new ProtocolError("peer closed before sending a whole request");
          filled += n;
          watchdog.kick();
          rate.count(n);
        }
        return bytes;
      };
      let nonce: Uint8Array | undefined;
      if (this.#authorize !== undefined) {
        nonce = crypto.getRandomValues(new Uint8Array(NONCE_LENGTH));
        await this.#write(conn, watchdog, encodeHello(nonce), rate);
      }
      const requestBytes = await readExact(REQUEST_SIZE);
      let authenticated: Parameters<BlobAuthorizer>[0] | undefined;
      if (
        nonce !== undefined && (requestBytes[4] === VERSION_2 || requestBytes[4] === VERSION_3)
      ) {
        let head = requestBytes;
        if (requestBytes[4] === VERSION_3) {
          head = new Uint8Array(REQUEST_V3_SIZE);
          head.set(requestBytes, 0);
          head.set(await readExact(REQUEST_V3_SIZE - REQUEST_SIZE), REQUEST_SIZE);
        }
        const idLength = (await readExact(1))[0];
        if (idLength === 0 || idLength > MAX_REQUEST_NODE_ID) {
          clearTimeout(requestDeadline);
          return await this.#refuse(conn, watchdog);
        }
        const nodeId = await readExact(idLength);
        const ticketLength = new DataView((await readExact(2)).buffer).getUint16(0, false);
        if (ticketLength > MAX_TICKET) {
          clearTimeout(requestDeadline);
          return await this.#refuse(conn, watchdog);
        }
        const ticket = await readExact(ticketLength);
        const signature = await readExact(REQUEST_SIGNATURE_LENGTH);
        try {
          authenticated = decodeAuthenticatedRequest(head, nodeId, ticket, signature);
        } catch (err) {
          if (!(err instanceof BlobProtocolError)) throw err;
          clearTimeout(requestDeadline);
          return await this.#reply(conn, watchdog, err.status);
        }
      }
      clearTimeout(requestDeadline);
      if (busy) return await this.#replyBusy(conn, watchdog);

      let request: BlobRequest;
      if (nonce !== undefined) {
        // Version 2: nothing is served, or even looked up, before the request is admitted.
        if (
          authenticated === undefined ||
          !(await this.#authorize!(authenticated, nonce, Date.now()))
        ) {
          return await this.#refuse(conn, watchdog);
        }
        request = authenticated;
      } else {
        try {
          request = decodeRequest(requestBytes);
        } catch (err) {
          if (!(err instanceof BlobProtocolError)) throw err;
          return await this.#reply(conn, watchdog, err.status);
        }
      }
      const ranged = authenticated?.version === VERSION_3;
      const hex = toHex(request.digest);
      const blob = await this.#store.lookup(request.digest);
      const partial = blob === null && ranged ? this.#partials.get(hex) : undefined;
      const size = blob?.size ?? partial?.size;
      if (size === undefined) return await this.#reply(conn, watchdog, BlobStatus.NOT_FOUND);
      if (request.offset > size) {
        return await this.#reply(conn, watchdog, BlobStatus.BAD_OFFSET);
      }
      const wanted = request.length ?? 0;
      const length = wanted === 0 ? size - request.offset : Math.min(wanted, size - request.offset);
      if (partial !== undefined && !(await this.#held(partial, request.offset, length))) {
        this.notYet++;
        return await this.#reply(conn, watchdog, BlobStatus.NOT_YET);
      }
      if (this.#uploads >= this.#maxUploads) return await this.#replyBusy(conn, watchdog);
      this.#uploads++;
      uploading = true;
      this.peakUploads = Math.max(this.peakUploads, this.#uploads);

      let readBody: (into: Uint8Array, at: number) => Promise<number>;
      if (blob !== null) {
        const opened = await Deno.open(blob.path, { read: true });
        file = opened;
        if (request.offset > 0) await opened.seek(request.offset, Deno.SeekMode.Start);
        readBody = (into) => readFull(opened, into);
      } else {
        readBody = (into, at) => partial!.read(at, into);
      }
      const origin = blob?.path ?? `partial blob ${hex}`;

      // Faults are decided when the response starts, so concurrent responses count them in order.
      let bodyLimit = length;
      const dropAfter = this.#faults.serveDropAfterBytes;
      if (
        dropAfter !== undefined && dropAfter < length &&
        this.#dropsDone < (this.#faults.serveDropTimes ?? 1)
      ) {
        this.#dropsDone++;
        bodyLimit = Math.max(0, dropAfter);
      }
      const corrupt = this.#faults.serveCorrupt === true && bodyLimit > 0 &&
        this.#corruptionsDone < (this.#faults.serveCorruptTimes ?? Infinity);
      if (corrupt) this.#corruptionsDone++;

      await this.#write(
        conn,
        watchdog,
        encodeResponseHeader({ status: BlobStatus.OK, length }),
        rate,
      );
      const buf = new Uint8Array(SERVE_BUFFER_SIZE);
      let sent = 0;
      const throttle = this.#faults.serveBytesPerSecond;
      const started = performance.now();
      while (sent < bodyLimit) {
        let want = Math.min(buf.length, bodyLimit - sent);
        if (this.#bucket !== undefined) {
          // Time spent waiting for our own upload cap is not the peer's slowness: it is
          // credited to the connection's rate watchdog as if moved at the minimum rate.
          const waitFrom = performance.now();
          want = await this.#bucket.take(want);
          const waited = performance.now() - waitFrom;
          rate.count(Math.ceil(this.#minRate.bytesPerSecond * waited / 1000));
          watchdog.kick();
        }
        const n = await readBody(buf.subarray(0, want), request.offset + sent);
        if (n === 0) throw new IoError(`${origin} ends before its size ${size}`);
        const piece = buf.subarray(0, n);
        if (corrupt && sent === 0) piece[0] ^= 0xff;
        await this.#write(conn, watchdog, piece, rate);
        sent += n;
        this.bytesServed += n;
        this.#served.set(hex, (this.#served.get(hex) ?? 0) + n);
        if (throttle !== undefined && throttle > 0) {
          const ahead = (sent / throttle) * 1000 - (performance.now() - started);
          if (ahead > 0) await new Promise((resolve) => setTimeout(resolve, ahead));
        }
      }
    } catch {
      if (!this.#closing) {
        this.errors++;
        if (tooSlow) this.cut++;
      }
    } finally {
      if (uploading) this.#uploads--;
      clearTimeout(requestDeadline);
      rate.stop();
      watchdog.stop();
      if (file !== undefined) closeQuietly(file);
      closeQuietly(conn);
    }
  }

  /** FORBIDDEN, counted, then the connection closes. */
  async #refuse(conn: Deno.TcpConn, watchdog: IdleWatchdog): Promise<void> {
    this.forbidden++;
    await this.#reply(conn, watchdog, BlobStatus.FORBIDDEN);
  }

  /** BUSY, counted. */
  async #replyBusy(conn: Deno.TcpConn, watchdog: IdleWatchdog): Promise<void> {
    this.busy++;
    await this.#reply(conn, watchdog, BlobStatus.BUSY);
  }

  async #reply(conn: Deno.TcpConn, watchdog: IdleWatchdog, status: BlobStatusCode): Promise<void> {
    await this.#write(conn, watchdog, encodeResponseHeader({ status, length: 0 }));
  }

  /** Writes all of `data`, kicking the watchdog (and counting for `rate`) after each write that went through. */
  async #write(
    conn: Deno.TcpConn,
    watchdog: IdleWatchdog,
    data: Uint8Array,
    rate?: RateWatchdog,
  ): Promise<void> {
    for (let done = 0; done < data.length;) {
      const n = await conn.write(data.subarray(done));
      done += n;
      watchdog.kick();
      rate?.count(n);
    }
  }
}

/** The limits of a blob server that its command sets (agent and controlplane `--blob-…` flags). */
export type BlobServerLimits = Pick<
  BlobServerOptions,
  "maxConnections" | "maxConnectionsPerAddress" | "minRate" | "maxUploads" | "uploadBytesPerSecond"
>;
