/**
 * The one error family of poolboy. A `PoolboyError` is a failure meant for a
 * person: its message is one line they can act on, printed without a stack
 * trace, and it carries both the process exit code the CLI ends with and the
 * HTTP status the control plane's API answers with. Anything else that escapes
 * is a bug.
 *
 * Exit codes (documented in the README):
 * - 0 success
 * - 1 internal error (a bug: please report it)
 * - 2 usage error (bad command line, or a request the control plane refused as invalid)
 * - 3 I/O error (missing or unreadable input, unwritable or full output directory,
 *   an unreachable peer)
 * - 4 malformed patch (truncated, bad magic, unknown version or op, out-of-bounds op)
 * - 5 verification failed (wrong base, output digest differs from the patch's)
 *
 * @module
 */

/** Process exit codes, one per kind of failure. */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  io: 3,
  malformedPatch: 4,
  verification: 5,
} as const;

/**
 * A failure whose message is meant for a person: `exitCode` is what the CLI
 * exits with, `httpStatus` what the API answers with (500 unless a subclass
 * says otherwise).
 */
export class PoolboyError extends Error {
  readonly exitCode: number;
  readonly httpStatus: number;
  constructor(message: string, exitCode: number, options?: ErrorOptions, httpStatus = 500) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.httpStatus = httpStatus;
  }
}

/** A value outside what is allowed (a chunk size, a name, a request field): HTTP 400. */
export class InvalidArgumentError extends PoolboyError {
  constructor(message: string, httpStatus = 400) {
    super(message, ExitCode.usage, undefined, httpStatus);
  }
}

/** The command line is wrong: unknown flag, missing argument, bad size. */
export class UsageError extends InvalidArgumentError {}

/** A file could not be read or written (missing, directory, permissions, disk full). */
export class IoError extends PoolboyError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.io, options);
  }
}

/** The patch does not follow the format: it is damaged, truncated or hostile (HTTP 422). */
export class MalformedPatchError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.malformedPatch, undefined, 422);
  }
}

/** The inputs are well-formed but wrong: another base, or output that fails its digest (HTTP 422). */
export class VerificationError extends PoolboyError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.verification, options, 422);
  }
}

/** A request names something that does not exist: an unknown model, rollout or device (HTTP 404). */
export class NotFoundError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.usage, undefined, 404);
  }
}

/** A request conflicts with stored state, e.g. a version published with other bytes (HTTP 409). */
export class ConflictError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.usage, undefined, 409);
  }
}

/**
 * A request without valid credentials: no token, a malformed, unknown or
 * revoked one (HTTP 401). The CLI exits with the usage code.
 */
export class UnauthorizedError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.usage, undefined, 401);
  }
}

/** A request whose token is valid but whose role does not allow it (HTTP 403). */
export class ForbiddenError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.usage, undefined, 403);
  }
}

/** A request uses a method its path does not answer to (HTTP 405). */
export class MethodNotAllowedError extends InvalidArgumentError {
  constructor(message: string) {
    super(message, 405);
  }
}

/** A request body over the size limit (HTTP 413). */
export class PayloadTooLargeError extends InvalidArgumentError {
  constructor(message: string) {
    super(message, 413);
  }
}

/**
 * A request whose headers or body did not arrive in time: a client that
 * trickles them is cut (HTTP 408).
 */
export class RequestTimeoutError extends InvalidArgumentError {
  constructor(message: string) {
    super(message, 408);
  }
}

/** A peer broke a wire protocol (a malformed datagram or blob response): an I/O failure. */
export class ProtocolError extends PoolboyError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.io, options, 502);
  }
}

/**
 * Turns an error thrown by a file operation into an `IoError` naming the path and
 * what was being done, e.g. `cannot read base "a.bin": no such file`.
 * `PoolboyError`s pass through unchanged.
 */
export function ioError(action: string, path: string, err: unknown): PoolboyError {
  if (err instanceof PoolboyError) return err;
  return new IoError(`cannot ${action} "${path}": ${describeOsError(err)}`, { cause: err });
}

/** A short lower-case reason for an OS error, without Deno's call-site decoration. */
export function describeOsError(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "no such file or directory";
  if (err instanceof Deno.errors.AlreadyExists) return "already exists";
  if (err instanceof Deno.errors.IsADirectory) return "is a directory";
  if (err instanceof Deno.errors.NotADirectory) return "a path component is not a directory";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (err instanceof Deno.errors.NotCapable) {
    return "not allowed by this process's Deno permissions (--allow-read/--allow-write)";
  }
  if (err instanceof Deno.errors.AddrInUse) return "address already in use";
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return "address not available (not an address of this machine)";
  }
  if (err instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (err instanceof Deno.errors.TimedOut) return "timed out";
  const message = err instanceof Error ? err.message : String(err);
  if (/No space left on device|os error 28/i.test(message)) return "no space left on device";
  if (/Read-only file system|os error 30/i.test(message)) return "read-only file system";
  if (/Is a directory|os error 21/i.test(message)) return "is a directory";
  // Deno appends ": open '/path'" style context; keep only the OS reason.
  return message.replace(/\s*\(os error \d+\).*$/s, "").replace(/:\s*\w+ '.*'$/s, "");
}

/**
 * The `PoolboyError` for an operating-system error that escaped a command
 * (`Deno.errors.*`: a port in use, an address outside `--allow-net`, a refused
 * connection, a file that vanished), or undefined for anything else. These are
 * I/O failures (exit code 3), not bugs: the message says what happened and,
 * for the network ones, what to do.
 */
export function osErrorToPoolboy(err: unknown): PoolboyError | undefined {
  if (err instanceof PoolboyError) return err;
  if (!isOsError(err)) return undefined;
  if (err instanceof Deno.errors.NotCapable) {
    const address = /net access to "([^"]+)"/.exec(err.message)?.[1];
    if (address !== undefined) {
      return new IoError(
        `cannot use the network address ${address}: this process's Deno permissions (--allow-net) do not include it; use an address inside them (the tasks allow 127.0.0.0/8 and the tailnet 100.64.0.0/10) or run with a wider --allow-net`,
        { cause: err },
      );
    }
  }
  if (err instanceof Deno.errors.AddrInUse) {
    return new IoError(
      "cannot listen: address already in use (another process holds the port); stop it or choose other ports",
      { cause: err },
    );
  }
  // Deno's message ends with the call and path (": mkdir '/x'"); keep them.
  const context = /:\s*(\w+) '(.*)'$/s.exec(err.message);
  return new IoError(
    context
      ? `cannot ${context[1]} "${context[2]}": ${describeOsError(err)}`
      : describeOsError(err),
    { cause: err },
  );
}

/** Whether `err` is one of Deno's operating-system error classes. */
function isOsError(err: unknown): err is Error {
  return Object.values(Deno.errors).some((cls) => err instanceof cls);
}
