/**
 * `--control-plane` has one form in every command: HOST, HOST:PORT or
 * http://HOST[:PORT]. Operator commands reach the HTTP API (default 7402),
 * agents the UDP port (default 7400); a wrong port or form is refused with
 * the line to type instead.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  agentControlPlane,
  operatorApiUrl,
  parseControlPlaneAddress,
} from "../cli/control_plane_address.ts";
import { controlPlaneUrl } from "../cli/fleet_args.ts";
import { UsageError } from "../kernel/errors.ts";

function refused(f: () => unknown, ...mentions: RegExp[]): void {
  assert.throws(f, (err: unknown) => {
    assert.ok(err instanceof UsageError, String(err));
    for (const m of mentions) assert.match(err.message, m);
    return true;
  });
}

Deno.test("an operator command given a bare host talks to the API's default port, not port 80", () => {
  assert.equal(operatorApiUrl("127.0.0.1"), "http://127.0.0.1:7402");
  assert.equal(operatorApiUrl("100.64.0.1"), "http://100.64.0.1:7402");
  assert.equal(controlPlaneUrl("rollout", "127.0.0.1"), "http://127.0.0.1:7402");
});

Deno.test("an operator command takes HOST:PORT and a URL, with or without a trailing slash", () => {
  assert.equal(operatorApiUrl("100.64.0.1:8000"), "http://100.64.0.1:8000");
  assert.equal(operatorApiUrl("http://100.64.0.1:7402"), "http://100.64.0.1:7402");
  assert.equal(operatorApiUrl("http://100.64.0.1:7402/"), "http://100.64.0.1:7402");
  assert.equal(operatorApiUrl("HTTP://100.64.0.1:9"), "http://100.64.0.1:9");
  assert.equal(operatorApiUrl(" 100.64.0.1 "), "http://100.64.0.1:7402");
});

Deno.test("a URL without a port means the API's default port too", () => {
  assert.equal(operatorApiUrl("http://100.64.0.1"), "http://100.64.0.1:7402");
});

Deno.test("IPv6 literals are accepted in brackets or bare, and written back in brackets", () => {
  assert.equal(operatorApiUrl("::1"), "http://[::1]:7402");
  assert.equal(operatorApiUrl("[::1]:8000"), "http://[::1]:8000");
  assert.equal(operatorApiUrl("http://[fd7a::1]:7402"), "http://[fd7a::1]:7402");
});

Deno.test("an operator command given the UDP port is told to type the host alone", () => {
  refused(() => operatorApiUrl("100.64.0.1:7400"), /UDP/, /--control-plane 100\.64\.0\.1 /, /7402/);
});

Deno.test("an agent given a bare host or HOST:PORT sends datagrams to that UDP port (default 7400)", () => {
  assert.deepEqual(agentControlPlane("100.64.0.1"), {
    hostname: "100.64.0.1",
    port: 7400,
    httpPort: undefined,
  });
  assert.deepEqual(agentControlPlane("127.0.0.1:9400"), {
    hostname: "127.0.0.1",
    port: 9400,
    httpPort: undefined,
  });
});

Deno.test("an agent given the operators' URL takes its host, the UDP default port, and the URL's port for enrolment", () => {
  assert.deepEqual(agentControlPlane("http://100.64.0.1:7402"), {
    hostname: "100.64.0.1",
    port: 7400,
    httpPort: 7402,
  });
  assert.deepEqual(agentControlPlane("http://100.64.0.1"), {
    hostname: "100.64.0.1",
    port: 7400,
    httpPort: undefined,
  });
});

Deno.test("an agent given HOST:7402 (the API port) is told to type the host alone", () => {
  refused(() => agentControlPlane("100.64.0.1:7402"), /HTTP API/, /--control-plane 100\.64\.0\.1/);
});

Deno.test("an agent refuses an IPv6 control plane with the IPv4 form to type", () => {
  refused(() => agentControlPlane("::1"), /IPv4/, /--control-plane 100\.64\.0\.1/);
});

Deno.test("names, other schemes, paths, bad ports and empty values are refused with an example to type", () => {
  refused(
    () => parseControlPlaneAddress("controlplane.local"),
    /"controlplane\.local" is not HOST\[:PORT\]/,
    /resolves no names/,
    /e\.g\./,
  );
  refused(() => parseControlPlaneAddress("https://100.64.0.1:7402"), /only http:\/\//);
  refused(() => parseControlPlaneAddress("udp://100.64.0.1"), /only http:\/\//);
  refused(() => parseControlPlaneAddress("http://100.64.0.1:7402/v1"), /no user, path or query/);
  refused(() => parseControlPlaneAddress("http://u@100.64.0.1"), /HOST/);
  refused(() => parseControlPlaneAddress("100.64.0.1:0"), /not 1-65535/);
  refused(() => parseControlPlaneAddress("100.64.0.1:99999"), /not 1-65535/);
  refused(() => parseControlPlaneAddress("100.64.0.1:"), /not 1-65535/);
  refused(() => parseControlPlaneAddress("256.1.1.1"), /not HOST\[:PORT\] with an IP address/);
  refused(() => parseControlPlaneAddress(""), /empty/);
  refused(() => parseControlPlaneAddress("1".repeat(400)), /longer than/);
  refused(() => controlPlaneUrl("status", undefined), /needs --control-plane/);
});

Deno.test("the parsed form says which kind of address was typed", () => {
  assert.deepEqual(parseControlPlaneAddress("10.0.0.1"), {
    kind: "host",
    host: "10.0.0.1",
    port: undefined,
  });
  assert.deepEqual(parseControlPlaneAddress("http://10.0.0.1:1"), {
    kind: "url",
    host: "10.0.0.1",
    port: 1,
  });
});
