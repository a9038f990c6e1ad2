/**
 * The HTTP/1.1 server in front of the operator API (`http_api.ts`), with the
 * deadlines `Deno.serve` does not have: it is built on `node:http`, whose
 * parser cuts a request whose headers are not complete within
 * `headerTimeoutMs` (answered 408 and closed; `Deno.serve` kept a client that
 * trickles header bytes for as long as it trickled). On top of it:
 *
 * - a body must keep coming: each `bodyTimeoutMs` window must bring at least
 *   `BODY_PROGRESS_BYTES` or end the body, else the handler's read of it fails
 *   with `RequestTimeoutError` (408) and the connection is closed. Time the
 *   body waits for the handler (backpressure) does not count against the client;
 * - at most `connectionsPerAddress` open connections per client address; more
 *   are closed at once;
 * - the body reaches the handler as a stream with backpressure, so nothing is
 *   read ahead of what the handler reads; an answer given before the body is
 *   complete (e.g. 413) closes the connection after a short linger that
 *   discards what the client still sends, so it gets the answer and not a reset.
 *
 * Answers are small JSON documents: they are sent whole with a Content-Length.
 *
 * @module
 */

import http from "node:http";
import type { Socket } from "node:net";
import {
  InvalidArgumentError,
  IoError,
  PoolboyError,
  RequestTimeoutError,
} from "../kernel/errors.ts";

/** The deadlines and the per-address connection cap. */
export interface HttpLimits {
  /** A request's headers must be complete within this. */
  readonly headerTimeoutMs: number;
  /** Each window this long must bring `BODY_PROGRESS_BYTES` of the body or its end. */
  readonly bodyTimeoutMs: number;
  /** Open connections allowed from one client address. */
  readonly connectionsPerAddress: number;
}

/** The defaults of `poolboy controlplane`. */
export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  headerTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  connectionsPerAddress: 16,
};

/** What a body must bring in each body-timeout window, unless it ends. */
export const BODY_PROGRESS_BYTES = 64 * 1024;

/** How long a connection answered before its body was complete keeps discarding input. */
const LINGER_MS = 2_000;

/** Where to listen, the limits (defaults where absent) and a log. */
export interface HttpServerOptions extends Partial<HttpLimits> {
  readonly hostname: string;
  readonly port: number;
  readonly log?: (line: string) => void;
}

/** A running server. */
export interface HttpServer {
  /** The port it listens on (the one chosen when asked for 0). */
  readonly port: number;
  /** Settles when the server has closed. */
  readonly finished: Promise<void>;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Serves `handler` on `options.hostname:options.port` until closed. */
export async function serveHttp(
  options: HttpServerOptions,
  handler: (request: Request) => Promise<Response>,
): Promise<HttpServer> {
  const limits: HttpLimits = {
    headerTimeoutMs: options.headerTimeoutMs ?? DEFAULT_HTTP_LIMITS.headerTimeoutMs,
    bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_HTTP_LIMITS.bodyTimeoutMs,
    connectionsPerAddress: options.connectionsPerAddress ??
      DEFAULT_HTTP_LIMITS.connectionsPerAddress,
  };
  const server = http.createServer({
    headersTimeout: limits.headerTimeoutMs,
    // Bodies are timed below (progress, not a total: an upload may take hours).
    requestTimeout: 0,
    // How often the parser's header deadline is checked.
    connectionsCheckingInterval: Math.max(50, Math.min(1000, limits.headerTimeoutMs / 4)),
  });
  const perAddress = new Map<string, number>();
  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress ?? "";
    const open = (perAddress.get(address) ?? 0) + 1;
    if (open > limits.connectionsPerAddress) {
      socket.destroy();
      return;
    }
    perAddress.set(address, open);
    socket.once("close", () => {
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
  });
  const base = `http://${
    options.hostname.includes(":") ? `[${options.hostname}]` : options.hostname
  }`;
  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    // A failure here (e.g. writing to a socket just closed) ends that connection, never the process.
    serveOne(req, res, base, limits.bodyTimeoutMs, handler).catch(() => req.socket.destroy());
  });
  const finished = new Promise<void>((resolve) => server.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) =>
      reject(
        new IoError(`cannot listen on ${options.hostname}:${options.port}: ${err.message}`, {
          cause: err,
        }),
      );
    server.once("error", failed);
    server.listen(options.port, options.hostname, () => {
      server.off("error", failed);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.port;
  options.log?.(`http api on ${options.hostname}:${port}`);
  return {
    port,
    finished,
    close: async () => {
      server.close();
      server.closeAllConnections();
      await finished;
    },
  };
}

/** One request: its Fetch `Request`, the handler's answer, then the connection's fate. */
async function serveOne(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  base: string,
  bodyTimeoutMs: number,
  handler: (request: Request) => Promise<Response>,
): Promise<void> {
  const method = req.method ?? "GET";
  // Any request that sends a body is timed, even one whose body nobody reads (a GET's).
  const hasBody = req.headers["transfer-encoding"] !== undefined ||
    Number(req.headers["content-length"] ?? "0") > 0;
  const body = hasBody ? new BodyStream(req, bodyTimeoutMs) : undefined;
  const passBody = method !== "GET" && method !== "HEAD";
  let response: Response;
  try {
    const target = req.url ?? "";
    if (!target.startsWith("/")) {
      throw new InvalidArgumentError(`bad request target "${target.slice(0, 100)}"`);
    }
    const headers = new Headers();
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
    response = await handler(
      new Request(base + target, {
        method,
        headers,
        body: passBody ? body?.stream : undefined,
      }),
    );
  } catch (err) {
    const status = err instanceof PoolboyError ? err.httpStatus : 500;
    const message = err instanceof Error ? err.message : String(err);
    response = new Response(JSON.stringify({ error: message }) + "\n", {
      status,
      headers: { "content-type": "application/json" },
    });
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const complete = !hasBody || req.complete;
  const headers: Record<string, string> = {};
  response.headers.forEach((value, key) => headers[key] = value);
  headers["content-length"] = String(bytes.length);
  if (!complete) headers["connection"] = "close";
  if (!complete) {
    // The rest of the body is not wanted: discard it for a moment so the
    // client reads the answer rather than a reset, then close.
    body?.discard();
    const socket = req.socket;
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    socket.once("close", () => clearTimeout(timer));
  }
  if (res.destroyed) return;
  res.writeHead(response.status, headers);
  res.end(bytes);
}

/**
 * A request body as a `ReadableStream` with backpressure (the socket is paused
 * while the reader has enough) and the progress deadline.
 */
class BodyStream {
  readonly stream: ReadableStream<Uint8Array>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #req: http.IncomingMessage;
  #timeoutMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #windowBytes = 0;
  #done = false;
  #discarding = false;

  constructor(req: http.IncomingMessage, timeoutMs: number) {
    this.#req = req;
    this.#timeoutMs = timeoutMs;
    this.stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => {
        if (this.#done || this.#discarding || !req.isPaused()) return;
        req.resume();
        this.#arm();
      },
      cancel: () => this.discard(),
    }, { highWaterMark: 4 });
    req.on("data", (chunk: Uint8Array) => this.#data(chunk));
    req.on("end", () => {
      this.#finish();
      if (!this.#discarding) this.#controller.close();
    });
    req.on("close", () => {
      if (this.#done) return;
      this.#finish();
      if (!this.#discarding) {
        // Nobody will read the answer; the audit log says why the call failed.
        this.#controller.error(
          new InvalidArgumentError("the client closed the connection before the body ended"),
        );
      }
    });
    this.#arm();
  }

  /** Stops delivering the body: what still arrives is read and dropped. */
  discard(): void {
    if (this.#discarding) return;
    this.#discarding = true;
    this.#disarm();
    this.#req.resume();
  }

  #data(chunk: Uint8Array): void {
    if (this.#discarding || this.#done) return;
    this.#windowBytes += chunk.length;
    if (this.#windowBytes >= BODY_PROGRESS_BYTES) this.#arm();
    this.#controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    if ((this.#controller.desiredSize ?? 0) <= 0) {
      // The reader has enough: waiting for it is not the client's delay.
      this.#req.pause();
      this.#disarm();
    }
  }

  /** Starts a new progress window. */
  #arm(): void {
    this.#disarm();
    if (this.#done || this.#discarding) return;
    this.#windowBytes = 0;
    this.#timer = setTimeout(() => this.#expired(), this.#timeoutMs);
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #expired(): void {
    this.#timer = undefined;
    if (this.#done || this.#discarding) return;
    this.#discarding = true;
    this.#controller.error(
      new RequestTimeoutError(
        `the request body is too slow: less than ${BODY_PROGRESS_BYTES} bytes in ${this.#timeoutMs} ms`,
      ),
    );
    this.#req.resume();
  }

  #finish(): void {
    this.#done = true;
    this.#disarm();
  }
}
