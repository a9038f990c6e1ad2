/**
 * Turns a failure to open the ports of a long-running command (controlplane,
 * agent) into one line that names the address and port and says what to do:
 * a port already in use, a bind address outside this process's `--allow-net`,
 * an address this machine does not have, a privileged port. Exit code 3 (I/O),
 * never "internal error".
 *
 * @module
 */

import { IoError, osErrorToPoolboy, PoolboyError } from "../kernel/errors.ts";

/** One port a command listens on, and the option that sets it. */
export interface ListenPort {
  readonly flag: string;
  readonly port: number;
  readonly transport: "tcp" | "udp";
  /** What the port is for, e.g. "operator HTTP API". */
  readonly purpose: string;
}

/**
 * The error to report for `err`, thrown while listening on `ports` of
 * `hostname` (in the order they are bound; `bindFlag` is the option that set
 * the address): a clear `IoError` for the
 * OS errors of binding, `err` itself for a `PoolboyError`, and any other
 * OS error mapped by class (`osErrorToPoolboy`). Anything else is returned
 * unchanged (a bug).
 */
export function explainBindFailure(
  err: unknown,
  hostname: string,
  bindFlag: string,
  ports: readonly ListenPort[],
): unknown {
  // node:http (the operator API) reports its listen failure as an IoError
  // whose cause is Node's error: the cause says which kind it is.
  const cause = err instanceof PoolboyError ? err.cause : err;
  const kind = bindFailureKind(cause, ports);
  if (kind === undefined) return err instanceof PoolboyError ? err : osErrorToPoolboy(err) ?? err;
  const list = ports.map((p) => `${p.transport} ${p.port}`).join(", ");
  if (kind === "in use") {
    // `ports` are in bind order, and a failed start may keep its earlier
    // sockets open: the last port in use is the one that failed.
    const taken = [...ports].reverse().find((p) => portInUse(hostname, p));
    const where = taken
      ? `${hostPort(hostname, taken.port)} (${taken.transport}, ${taken.purpose})`
      : `${hostname} (ports ${list})`;
    const fix = taken
      ? `stop the process that holds it, or choose another port with --${taken.flag} N`
      : `stop the process that holds one, or choose other ports with ${
        ports.map((p) => `--${p.flag}`).join(", ")
      }`;
    return new IoError(`cannot listen on ${where}: address already in use; ${fix}`, { cause });
  }
  if (kind === "outside --allow-net") {
    const denied = /net access to "([^"]+)"/.exec(String((cause as Error).message))?.[1];
    if (denied !== undefined && denied !== hostname && !denied.startsWith(`${hostname}:`)) {
      return osErrorToPoolboy(cause) ?? err; // another address (the control plane's, say)
    }
    return new IoError(
      `cannot listen on ${
        denied ?? hostname
      }: this process's Deno permissions (--allow-net) do not include it; use --${bindFlag} with an address inside them (the tasks allow 127.0.0.0/8 and the tailnet 100.64.0.0/10) or run with a wider --allow-net`,
      { cause },
    );
  }
  if (kind === "not available") {
    return new IoError(
      `cannot listen on ${hostname}: it is not an address of this machine (is the tailnet up?); use --${bindFlag} with one of its addresses`,
      { cause },
    );
  }
  const low = ports.filter((p) => p.port < 1024).map((p) => `--${p.flag} ${p.port}`).join(", ");
  return new IoError(
    `cannot listen on ${hostname} (${low}): permission denied (ports below 1024 need privileges); choose ports from 1024 up`,
    { cause },
  );
}

/** Why binding failed, from Deno's error class or Node's error code; undefined if not a bind failure. */
function bindFailureKind(
  err: unknown,
  ports: readonly ListenPort[],
): "in use" | "outside --allow-net" | "not available" | "privileged" | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (err instanceof Deno.errors.AddrInUse || code === "EADDRINUSE") return "in use";
  if (err instanceof Deno.errors.AddrNotAvailable || code === "EADDRNOTAVAIL") {
    return "not available";
  }
  if (err instanceof Deno.errors.PermissionDenied || code === "EACCES") {
    // Only a port below 1024 is refused for privileges; else it is a file's.
    return ports.some((p) => p.port < 1024) ? "privileged" : undefined;
  }
  if (err instanceof Error && /Requires net access/.test(err.message)) {
    return "outside --allow-net";
  }
  return undefined;
}

/** `host:port`, with brackets around an IPv6 host. */
function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * Whether `port` of `hostname` is taken now: a bind that fails with
 * `AddrInUse`. The probe's socket is closed at once.
 */
function portInUse(hostname: string, p: ListenPort): boolean {
  try {
    const socket = p.transport === "tcp"
      ? Deno.listen({ hostname, port: p.port, transport: "tcp" })
      : Deno.listenDatagram({ hostname, port: p.port, transport: "udp" });
    socket.close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.AddrInUse;
  }
}
