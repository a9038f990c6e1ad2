/**
 * Option parsing shared by the fleet commands (controlplane, agent, publish,
 * rollout, status, audit): ports, durations, `HOST[:PORT]` addresses, names,
 * the control plane's URL and the operator's token (`--token` or the
 * environment variable POOLBOY_TOKEN).
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { isName, NAME_RULE } from "../kernel/names.ts";
import type { ApiTarget } from "./api_client.ts";
import { operatorApiUrl } from "./control_plane_address.ts";
import { parseSize } from "../kernel/units.ts";
import type { BlobServerLimits } from "../transfer/blob_server.ts";

/** A port option (1-65535), or the default. */
export function portOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 65535)) {
    throw new UsageError(`--${name}: "${value}" is not a port (1-65535)`);
  }
  return n;
}

/** A whole number of at least 1, or the default. */
export function countOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 1_000_000)) {
    throw new UsageError(`--${name}: "${value}" is not a count (1 or more)`);
  }
  return n;
}

/** A duration such as `500ms`, `2s`, `10m` or `1h` (a bare number is milliseconds). */
export function durationOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) {
    throw new UsageError(`--${name}: "${value}" is not a duration (examples: 500ms, 2s, 10m)`);
  }
  const n = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "ms"] ?? 1);
  if (!(n > 0)) throw new UsageError(`--${name}: the duration must be positive`);
  return Math.round(n);
}

/** `--blob-…` options of `agent` and `controlplane`: the blob server's limits and the minimum transfer rate. */
export const blobLimitOptions = {
  "blob-connections": { type: "string" },
  "blob-connections-per-address": { type: "string" },
  "min-transfer-rate": { type: "string" },
  "min-rate-window": { type: "string" },
} as const;

/**
 * Option lines of a command's help: each option at 2 spaces, its text from
 * `column` on, wrapped at `width` characters; an option too long for the gap
 * gets a line of its own. Commands align their options at different columns.
 */
export function optionHelp(
  entries: readonly (readonly [option: string, text: string])[],
  column: number,
  width = 100,
): string {
  const indent = " ".repeat(column);
  const lines: string[] = [];
  for (const [option, text] of entries) {
    let line = `  ${option}`;
    if (line.length > column - 1) {
      lines.push(line);
      line = indent;
    } else {
      line = line.padEnd(column);
    }
    let empty = true;
    for (const word of text.split(/\s+/).filter((w) => w !== "")) {
      if (!empty && line.length + 1 + word.length > width) {
        lines.push(line);
        line = indent;
        empty = true;
      }
      line += empty ? word : ` ${word}`;
      empty = false;
    }
    lines.push(line);
  }
  return lines.join("\n");
}

/**
 * Help lines of `blobLimitOptions` (`who`: whose transfers the minimum rate
 * also cuts), aligned at `column`.
 */
export function blobLimitHelp(who: string, column = 27): string {
  return optionHelp([
    ["--blob-connections N", "blob connections open at once; more get BUSY (default 64)"],
    [
      "--blob-connections-per-address N",
      "blob connections open from one address; more are closed (default 4)",
    ],
    [
      "--min-transfer-rate RATE",
      `a blob transfer slower than this over --min-rate-window is cut, ${who} (default 64KiB/s; 0 turns it off)`,
    ],
    [
      "--min-rate-window T",
      "the window of --min-transfer-rate (default 10s); a blob request must also arrive whole within it",
    ],
  ], column);
}

/** The blob limits the `blobLimitOptions` say. */
export function blobLimitsFrom(values: {
  "blob-connections"?: string;
  "blob-connections-per-address"?: string;
  "min-transfer-rate"?: string;
  "min-rate-window"?: string;
}): Required<Pick<BlobServerLimits, "maxConnections" | "maxConnectionsPerAddress" | "minRate">> {
  return {
    maxConnections: countOption("blob-connections", values["blob-connections"], 64),
    maxConnectionsPerAddress: countOption(
      "blob-connections-per-address",
      values["blob-connections-per-address"],
      4,
    ),
    minRate: {
      bytesPerSecond: rateOption("min-transfer-rate", values["min-transfer-rate"], 64 * 1024),
      windowMs: durationOption("min-rate-window", values["min-rate-window"], 10_000),
    },
  };
}

/** An agent's upload caps: what its blob server gives the devices that download from it. */
export const uploadCapOptions = {
  "upload-slots": { type: "string" },
  "upload-rate": { type: "string" },
} as const;

/** Help lines of `uploadCapOptions`, aligned at `column`. */
export function uploadCapHelp(column = 27): string {
  return optionHelp([
    [
      "--upload-slots N",
      "blob bodies this device sends at once to other devices of its region; more get BUSY and ask elsewhere (default 4)",
    ],
    [
      "--upload-rate RATE",
      "all of them together at most this fast, e.g. 2MB/s (default 0: no cap)",
    ],
  ], column);
}

/** The upload caps the `uploadCapOptions` say. */
export function uploadCapsFrom(values: {
  "upload-slots"?: string;
  "upload-rate"?: string;
}): { maxUploads: number; uploadBytesPerSecond: number } {
  return {
    maxUploads: countOption("upload-slots", values["upload-slots"], 4),
    uploadBytesPerSecond: rateOption("upload-rate", values["upload-rate"], 0),
  };
}

/** A rate such as `64KiB/s` (the `/s` may be left out), or the default. */
export function rateOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = parseSize(value.trim().replace(/\/s$/i, ""));
  if (n === undefined) {
    throw new UsageError(`--${name}: "${value}" is not a rate (examples: 64KiB/s, 1MB/s, 0)`);
  }
  return n;
}

/** A required option. */
export function required(command: string, name: string, value: string | undefined): string {
  if (value === undefined || value === "") {
    throw new UsageError(`${command} needs --${name} (see poolboy ${command} --help)`);
  }
  return value;
}

/** An IP address to bind or reach (v4 dotted quad or a bracket-free v6 literal). */
export function addressOption(name: string, value: string): string {
  if (!/^[0-9.]+$/.test(value) && !/^[0-9a-fA-F:]+$/.test(value)) {
    throw new UsageError(
      `--${name}: "${value}" is not an IP address (poolboy resolves no names: use the tailnet address, e.g. 100.64.0.1)`,
    );
  }
  return value;
}

/** `HOST[:PORT]` → host and port (the default port if absent). */
export function hostPortOption(
  name: string,
  value: string,
  defaultPort: number,
): { hostname: string; port: number } {
  const m = /^([0-9.]+)(?::([0-9]+))?$/.exec(value);
  if (!m) throw new UsageError(`--${name}: "${value}" is not HOST[:PORT] with an IPv4 address`);
  return { hostname: m[1], port: portOption(name, m[2], defaultPort) };
}

/**
 * Names of nodes, regions, models, versions and device classes: the one name
 * rule (kernel/names.ts) the control messages and the API apply too.
 */
export function nameOption(name: string, value: string): string {
  if (!isName(value)) throw new UsageError(`--${name}: "${value}" must be ${NAME_RULE}`);
  return value;
}

/**
 * The control plane's HTTP base URL (`http://HOST:PORT`), from `--control-plane`
 * in any of its forms (cli/control_plane_address.ts: `HOST`, `HOST:PORT`, a URL).
 */
export function controlPlaneUrl(command: string, value: string | undefined): string {
  return operatorApiUrl(required(command, "control-plane", value));
}

/** The environment variable an operator's token may come from. */
export const TOKEN_ENV = "POOLBOY_TOKEN";

/** The `--token T` option of the commands that call the control plane's API. */
export const tokenOptions = {
  token: { type: "string" },
} as const;

/** What every command that calls the API says about its token in `--help`. */
export const TOKEN_OPTION_HELP =
  `  --token T             the operator's API token (default: env ${TOKEN_ENV}); an admin
                        makes one: poolboy token create --data DIR --role R --name N`;

/**
 * The operator's token: `--token`, else the environment variable
 * POOLBOY_TOKEN if this process may read it (`--allow-env=POOLBOY_TOKEN`),
 * else none (the control plane then answers 401, and the error says so).
 */
export function apiToken(value: string | undefined): string | undefined {
  if (value !== undefined) {
    if (value.trim() === "") throw new UsageError("--token: the token is empty");
    return value.trim();
  }
  if (Deno.permissions.querySync({ name: "env", variable: TOKEN_ENV }).state !== "granted") {
    return undefined;
  }
  const fromEnv = Deno.env.get(TOKEN_ENV)?.trim();
  return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
}

/** The control plane's URL (`--control-plane`) and the operator's token (`apiToken`). */
export function apiTarget(
  command: string,
  values: { readonly "control-plane"?: string; readonly token?: string },
): ApiTarget {
  return { url: controlPlaneUrl(command, values["control-plane"]), token: apiToken(values.token) };
}
