/**
 * The health check of a newly switched model. With a command
 * (`--health-cmd`), it runs `sh -c CMD` with `POOLBOY_MODEL` set to the
 * model's path and every `{model}` in CMD replaced by that path (shell-quoted),
 * killed after a timeout; exit 0 is healthy. Without one, the check is the
 * file's BLAKE3 against the expected digest plus a sanity check of the format
 * where it is recognised: SafeTensors (a u64 little-endian header length and
 * that much JSON object), GGUF (magic and version), ONNX (a protobuf
 * ModelProto starting with ir_version).
 *
 * @module
 */

import { createHasher, toHex } from "../kernel/blake3.ts";

/** The outcome of a health check. */
export type HealthResult = { readonly healthy: true } | {
  readonly healthy: false;
  readonly reason: string;
};

/** Quotes a path for `sh`. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** Runs `command` for the model at `path`; unhealthy on a non-zero exit or a timeout. */
export async function runHealthCommand(
  command: string,
  path: string,
  timeoutMs: number,
): Promise<HealthResult> {
  const script = command.replaceAll("{model}", shellQuote(path));
  const child = new Deno.Command("sh", {
    args: ["-c", script],
    env: { POOLBOY_MODEL: path },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, timeoutMs);
  const output = await child.output();
  clearTimeout(timer);
  if (timedOut) return { healthy: false, reason: `health command timed out after ${timeoutMs} ms` };
  if (output.code === 0) return { healthy: true };
  const stderr = new TextDecoder().decode(output.stderr).trim().split("\n").pop() ?? "";
  return {
    healthy: false,
    reason: `health command exited ${output.code}${stderr ? `: ${stderr.slice(0, 120)}` : ""}`,
  };
}

/** The built-in check: digest, then the format's sanity where recognised. */
export async function builtinHealthCheck(path: string, digest: string): Promise<HealthResult> {
  const actual = await hashInMainThread(path);
  if (actual !== digest) {
    return {
      healthy: false,
      reason: `BLAKE3 ${actual.slice(0, 16)}, expected ${digest.slice(0, 16)}`,
    };
  }
  const problem = await formatProblem(path);
  return problem === null ? { healthy: true } : { healthy: false, reason: problem };
}

/** What is wrong with a recognised format (null: fine, or not a format we know). */
export async function formatProblem(path: string): Promise<string | null> {
  const file = await Deno.open(path);
  try {
    const size = (await file.stat()).size;
    const head = new Uint8Array(Math.min(size, 64 * 1024));
    let filled = 0;
    while (filled < head.length) {
      const n = await file.read(head.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    return sniff(head.subarray(0, filled), size);
  } finally {
    file.close();
  }
}

/** The format check on the first bytes of a file of `size` bytes. */
export function sniff(head: Uint8Array, size: number): string | null {
  const text = (from: number, to: number) => new TextDecoder().decode(head.subarray(from, to));
  if (head.length >= 8 && text(0, 4) === "GGUF") {
    const version = new DataView(head.buffer, head.byteOffset).getUint32(4, true);
    return version >= 1 && version <= 3 ? null : `GGUF version ${version} is not 1-3`;
  }
  if (head.length >= 9 && head[8] === 0x7b /* "{" */) {
    const length = Number(new DataView(head.buffer, head.byteOffset).getBigUint64(0, true));
    if (8 + length > size) return `SafeTensors header of ${length} bytes runs past the file`;
    if (8 + length <= head.length) {
      try {
        const header = JSON.parse(text(8, 8 + length));
        if (typeof header !== "object" || header === null) {
          return "SafeTensors header is not an object";
        }
      } catch {
        return "SafeTensors header is not valid JSON";
      }
    }
    return null;
  }
  if (head.length >= 2 && head[0] === 0x08 && head[1] >= 1 && head[1] <= 20) {
    return null; // ONNX: field 1 (ir_version), varint, a plausible version
  }
  return null; // not a format we recognise: the digest is the check
}

/**
 * BLAKE3 of a file, hashed in this thread through one 1 MiB buffer: the agent
 * starts no Worker for it (a Worker costs ~18 MB of a device's memory).
 */
export async function hashInMainThread(path: string): Promise<string> {
  const hasher = createHasher();
  const file = await Deno.open(path);
  try {
    const buf = new Uint8Array(1024 * 1024);
    while (true) {
      const n = await file.read(buf);
      if (n === null) break;
      hasher.update(buf.subarray(0, n));
    }
  } finally {
    file.close();
  }
  return toHex(hasher.digest());
}
