/**
 * The one address form of `--control-plane`, for every command: `HOST`,
 * `HOST:PORT` or a URL `http://HOST[:PORT]`. Operator commands (publish,
 * rollout, rollback, status, audit, device) talk to the control plane's HTTP
 * API (default port 7402); `agent` sends it UDP datagrams (default port 7400)
 * and enrols over its HTTP API. Pure functions: the errors say what to type
 * instead.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { DEFAULT_CP_HTTP_PORT, DEFAULT_CP_UDP_PORT } from "../transfer/default_ports.ts";

/** The longest `--control-plane` value looked at (anything longer is refused unread). */
export const MAX_ADDRESS_LENGTH = 300;

/** What `--control-plane` said, before the command's default port is applied. */
export type ControlPlaneAddress =
  /** `HOST` or `HOST:PORT` (a bare host; `port` undefined when absent). */
  | { readonly kind: "host"; readonly host: string; readonly port: number | undefined }
  /** `http://HOST[:PORT]` (`port` undefined when the URL names none). */
  | { readonly kind: "url"; readonly host: string; readonly port: number | undefined };

const IPV4 =
  /^(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;
const IPV6 = /^[0-9a-fA-F:.]{2,45}$/;

function port(text: string, value: string): number {
  const n = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535)) {
    throw new UsageError(
      `--control-plane: "${value}" has no valid port ("${text}" is not 1-65535); type HOST, HOST:PORT or http://HOST:PORT, e.g. --control-plane 100.64.0.1`,
    );
  }
  return n;
}

/** Parses `HOST`, `HOST:PORT`, `[V6]:PORT` or `http://HOST[:PORT][/]`; anything else is a `UsageError`. */
export function parseControlPlaneAddress(value: string): ControlPlaneAddress {
  const text = value.trim();
  if (text === "") {
    throw new UsageError(
      "--control-plane is empty: type the control plane's address, e.g. --control-plane 100.64.0.1",
    );
  }
  if (text.length > MAX_ADDRESS_LENGTH) {
    throw new UsageError(`--control-plane: longer than ${MAX_ADDRESS_LENGTH} characters`);
  }
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(text);
  if (scheme) {
    if (scheme[1].toLowerCase() !== "http") {
      throw new UsageError(
        `--control-plane: "${text}": only http:// is spoken (the API is plain HTTP on the tailnet); type http://HOST:PORT or just HOST, e.g. --control-plane 100.64.0.1`,
      );
    }
    const m = /^http:\/\/(\[[0-9a-fA-F:.]+\]|[^/:?#@\[\]]+)(?::([^/?#]*))?\/?$/i.exec(text);
    if (!m) {
      throw new UsageError(
        `--control-plane: "${text}" is not http://HOST[:PORT] (no user, path or query); type e.g. --control-plane http://100.64.0.1:${DEFAULT_CP_HTTP_PORT}`,
      );
    }
    const host = m[1].startsWith("[") ? m[1].slice(1, -1) : m[1];
    checkHost(host, text);
    return { kind: "url", host, port: m[2] === undefined ? undefined : port(m[2], text) };
  }
  const bracketed = /^\[([0-9a-fA-F:.]+)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    checkHost(bracketed[1], text);
    return {
      kind: "host",
      host: bracketed[1],
      port: bracketed[2] === undefined ? undefined : port(bracketed[2], text),
    };
  }
  if ((text.match(/:/g) ?? []).length > 1) {
    // A bare IPv6 literal: no port can follow without brackets.
    checkHost(text, text);
    return { kind: "host", host: text, port: undefined };
  }
  const [host, portText] = text.split(":");
  checkHost(host, text);
  return { kind: "host", host, port: portText === undefined ? undefined : port(portText, text) };
}

function checkHost(host: string, value: string): void {
  if (IPV4.test(host) || (host.includes(":") && IPV6.test(host))) return;
  throw new UsageError(
    `--control-plane: "${value}" is not HOST[:PORT] with an IP address ("${host}": poolboy resolves no names); type the tailnet address, e.g. --control-plane 100.64.0.1`,
  );
}

function bracket(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/**
 * The HTTP API's base URL (`http://HOST:PORT`) for the operator commands.
 * `HOST` and a URL without a port mean the API's default port 7402; the UDP
 * port 7400 is refused with the line to type instead.
 */
export function operatorApiUrl(value: string): string {
  const address = parseControlPlaneAddress(value);
  const p = address.port ?? DEFAULT_CP_HTTP_PORT;
  if (p === DEFAULT_CP_UDP_PORT) {
    throw new UsageError(
      `--control-plane: port ${DEFAULT_CP_UDP_PORT} is the control plane's UDP port (the agents'); operator commands use its HTTP API: type --control-plane ${
        bracket(address.host)
      } (port ${DEFAULT_CP_HTTP_PORT}) or http://${bracket(address.host)}:PORT`,
    );
  }
  return `http://${bracket(address.host)}:${p}`;
}

/** Where an agent reaches the control plane: its UDP address, and the HTTP port it enrols on. */
export interface AgentControlPlane {
  readonly hostname: string;
  /** The control plane's UDP port (control messages). */
  readonly port: number;
  /** The HTTP API's port from a URL form; undefined: `--control-plane-http` or its default. */
  readonly httpPort: number | undefined;
}

/**
 * The agent's control plane: `HOST` (UDP 7400), `HOST:PORT` (that UDP port),
 * or `http://HOST[:PORT]`, the operators' form: its host, UDP 7400, and its
 * port as the HTTP API's. An IPv4 address only (agents speak IPv4 datagrams).
 * `HOST:7402` is refused with the line to type instead.
 */
export function agentControlPlane(value: string): AgentControlPlane {
  const address = parseControlPlaneAddress(value);
  if (!IPV4.test(address.host)) {
    throw new UsageError(
      `--control-plane: "${value}": agents reach the control plane over IPv4; type its tailnet IPv4 address, e.g. --control-plane 100.64.0.1`,
    );
  }
  if (address.kind === "url") {
    return { hostname: address.host, port: DEFAULT_CP_UDP_PORT, httpPort: address.port };
  }
  if (address.port === DEFAULT_CP_HTTP_PORT) {
    throw new UsageError(
      `--control-plane: port ${DEFAULT_CP_HTTP_PORT} is the control plane's HTTP API; agents send it UDP datagrams on port ${DEFAULT_CP_UDP_PORT}: type --control-plane ${address.host} (or http://${address.host}:${DEFAULT_CP_HTTP_PORT}, the operators' form)`,
    );
  }
  return { hostname: address.host, port: address.port ?? DEFAULT_CP_UDP_PORT, httpPort: undefined };
}
