/**
 * Typed errors of poolboy, each carrying the process exit code the CLI uses.
 *
 * A `PoolboyError` is a user-facing failure: its message is one line a user can
 * act on, printed without a stack trace. Anything else that escapes is a bug.
 *
 * Exit codes (documented in the README):
 * - 0 success
 * - 1 internal error (a bug: please report it)
 * - 2 usage error (bad command line)
 * - 3 I/O error (missing or unreadable input, unwritable or full output directory)
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

/** A failure whose message is meant for the user; `exitCode` says which kind. */
export class PoolboyError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** The command line is wrong: unknown flag, missing argument, bad size. */
export class UsageError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.usage);
  }
}

/** A file could not be read or written (missing, directory, permissions, disk full). */
export class IoError extends PoolboyError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.io, options);
  }
}

/** The patch does not follow the format: it is damaged, truncated or hostile. */
export class MalformedPatchError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.malformedPatch);
  }
}

/** The inputs are well-formed but wrong: another base, or output that fails its digest. */
export class VerificationError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.verification);
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
  const message = err instanceof Error ? err.message : String(err);
  if (/No space left on device|os error 28/i.test(message)) return "no space left on device";
  if (/Read-only file system|os error 30/i.test(message)) return "read-only file system";
  if (/Is a directory|os error 21/i.test(message)) return "is a directory";
  // Deno appends ": open '/path'" style context; keep only the OS reason.
  return message.replace(/\s*\(os error \d+\).*$/s, "").replace(/:\s*\w+ '.*'$/s, "");
}
