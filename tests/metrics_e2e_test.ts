/**
 * `GET /metrics` end to end: the control plane's (in process, through its API
 * handler and over HTTP on its own loopback address) answers the Prometheus
 * text format with its content type, values that match the fleet's state as
 * the status report tells it, and 401 without a valid token (a viewer's
 * `Authorization: Bearer` suffices); the agent's endpoint is off unless
 * `--metrics ADDR:PORT` is given, and then shows the model it runs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createToken, newToken } from "../controlplane/auth.ts";
import type { RolloutInfo, StatusSummary } from "../controlplane/api_types.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import { serveHttp } from "../controlplane/http_server.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../kernel/prometheus.ts";
import { switchTo } from "../agent/model_slots.ts";
import { MOD_PATH, poolboyWith } from "./cli_helpers.ts";
import { randomBytes, withTempDir, writeFile } from "./helpers.ts";
import { type Api, withApi } from "./support/api_harness.ts";
import { registerDevice } from "./support/devices.ts";
import { type ParsedFamily, parsePrometheusText, valueOf } from "./support/prometheus_text.ts";

/** This file's loopback addresses (tests run in their own network namespace, too). */
const CP_HOST = "127.0.77.1";
const AGENT_HOST = "127.0.77.2";
const METRICS_PORT = 17_409;

const AGENT_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.0/8",
  "--allow-env",
  "--allow-sys=osRelease,loadavg,statfs",
];

async function metricsOf(call: Api["call"]): Promise<ParsedFamily[]> {
  const r = await call("GET", "/metrics");
  const text = await r.text();
  assert.equal(r.status, 200, text);
  assert.equal(r.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
  return parsePrometheusText(text);
}

Deno.test("the control plane's GET /metrics parses as the text format, with its content type, and its values match the fleet: devices by region and state as the summary counts them, rollouts by state, an aborted rollout's duration, live elections, drops as the status report's", async () => {
  await withApi({
    controlPlane: { tickMs: 3_600_000, agentTimeoutMs: 10_000, offlineAfterMs: 60_000 },
  }, async ({ call, cp }) => {
    const v1 = randomBytes(1000, 21);
    const put = await call("PUT", "/v1/models/resnet/versions/v1", v1);
    assert.equal(put.status, 201, await put.text());
    const now = Date.now();
    for (let i = 0; i < 7; i++) {
      const region = i < 4 ? "eu" : "us";
      registerDevice(cp, `${region}-${i}`, region, {
        lastSeen: i === 1 || i === 5 ? now - 120_000 : now,
        served: 100 * i,
      });
    }
    const first = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1" }),
    );
    assert.equal(first.status, 201);
    const { id } = await first.json() as RolloutInfo;
    cp.tick(now);
    const aborted = await call("POST", `/v1/rollouts/${id}/abort`);
    assert.equal(aborted.status, 200, await aborted.text());
    const second = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1" }),
    );
    assert.equal(second.status, 201);
    await second.body?.cancel();
    cp.tick(now + 1);

    // The status first: datagrams the ticks queued may still be going out (counters only grow).
    const summary = await (await call("GET", "/v1/status?view=summary")).json() as StatusSummary;
    const report = await cp.status();
    const parsed = await metricsOf(call);
    const v = (name: string, labels: Record<string, string> = {}) => valueOf(parsed, name, labels);
    for (const [region, counts] of Object.entries(summary.devices.byRegion)) {
      assert.equal(v("poolboy_devices", { region, state: "online" }), counts.online, region);
      assert.equal(v("poolboy_devices", { region, state: "offline" }), counts.offline, region);
    }
    assert.deepEqual(Object.keys(summary.devices.byRegion).sort(), ["eu", "us"]);
    assert.equal(v("poolboy_devices", { region: "eu", state: "offline" }), 1);
    assert.equal(v("poolboy_device_served_bytes", { region: "eu" }), 0 + 100 + 200 + 300);
    assert.equal(v("poolboy_device_served_bytes", { region: "us" }), 400 + 500 + 600);
    assert.equal(v("poolboy_rollouts", { state: "aborted" }), 1);
    assert.equal(v("poolboy_rollouts", { state: "running" }), 1);
    assert.equal(v("poolboy_rollouts", { state: "done" }), 0);
    assert.equal(v("poolboy_rollout_duration_seconds_count", { state: "aborted" }), 1);
    assert.equal(v("poolboy_rollout_duration_seconds_count", { state: "done" }), 0);
    const live = report.rollouts.filter((r) => r.state === "running").flatMap((r) => r.elections);
    for (const state of ["announcing", "leading", "closed", "failed"] as const) {
      assert.equal(
        v("poolboy_elections", { state }),
        live.filter((e) => e.state === state).length,
        state,
      );
    }
    assert.ok(live.length > 0, "the running rollout has elections");
    const socketCounters = ["malformed", "faultDropped", "sendErrors", "sendQueueFull"];
    for (const [reason, n] of Object.entries(report.drops)) {
      if (reason === "sent" || reason === "received") continue;
      const shown = v("poolboy_datagrams_dropped_total", { reason });
      // No datagram comes in: the refusals stand still; the socket's own counters may grow.
      if (socketCounters.includes(reason)) assert.ok(shown >= n, reason);
      else assert.equal(shown, n, reason);
    }
    assert.ok(v("poolboy_datagrams_sent_total") >= report.drops.sent);
    assert.equal(v("poolboy_datagrams_received_total"), report.drops.received);
    assert.ok(v("poolboy_process_resident_memory_bytes") > 0);
    assert.ok(v("poolboy_uptime_seconds") >= 0);
    const text = await (await call("GET", "/metrics")).text();
    for (const nodeId of cp.agents.keys()) assert.ok(!text.includes(nodeId), `${nodeId} not shown`);
  });
});

Deno.test("over HTTP, GET /metrics without a token, with an unknown one or a malformed header is 401 and says why; Prometheus's Authorization: Bearer with a viewer's token gets the metrics", async () => {
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({ bind: CP_HOST, dataDir: dir, udpPort: 0, p2pPort: 0 });
    const { token: viewer } = await createToken(cp.stateStore, "viewer", "prometheus", 0);
    const server = await serveHttp({ hostname: CP_HOST, port: 0 }, apiHandler(cp));
    const url = `http://${CP_HOST}:${server.port}/metrics`;
    try {
      for (
        const headers of [
          {},
          { authorization: `Bearer ${newToken()}` },
          { authorization: "Basic dXNlcjpwYXNz" },
        ] as Record<string, string>[]
      ) {
        const r = await fetch(url, { headers });
        const text = await r.text();
        assert.equal(r.status, 401, `${JSON.stringify(headers)}: ${text}`);
        assert.match((JSON.parse(text) as { error: string }).error, /token/);
        assert.ok(!text.includes("poolboy_"), "nothing of the metrics");
      }
      const r = await fetch(url, { headers: { authorization: `Bearer ${viewer}` } });
      const text = await r.text();
      assert.equal(r.status, 200, text);
      assert.equal(r.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
      const parsed = parsePrometheusText(text);
      assert.equal(valueOf(parsed, "poolboy_rollouts", { state: "running" }), 0);
      assert.equal(valueOf(parsed, "poolboy_control_plane_boot"), cp.boot);
      const post = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${viewer}` },
      });
      assert.equal(post.status, 405, await post.text());
    } finally {
      await server.close();
      await cp.close();
    }
  });
});

/** Reads `stream`'s lines until one matches `pattern`; throws after 30 s or at its end. */
async function lineMatching(
  reader: ReadableStreamDefaultReader<string>,
  seen: string[],
  pattern: RegExp,
): Promise<string> {
  const deadline = Date.now() + 30_000;
  let buffer = "";
  for (;;) {
    const lines = buffer.split("\n");
    buffer = lines.pop()!;
    for (const line of lines) {
      seen.push(line);
      if (pattern.test(line)) return line;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no line matching ${pattern}: ${seen.join("\n")}`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<{ done: true; value: undefined }>((resolve) => {
      timer = setTimeout(() => resolve({ done: true, value: undefined }), left);
    });
    const next = await Promise.race([reader.read(), timeout]);
    clearTimeout(timer);
    if (next.done) throw new Error(`no line matching ${pattern}: ${seen.join("\n")}`);
    buffer += next.value;
  }
}

/** Runs `poolboy agent` on AGENT_HOST with `extra` arguments until `fn` is done. */
async function withAgent(
  data: string,
  extra: string[],
  fn: (wait: (pattern: RegExp) => Promise<string>, seen: string[]) => Promise<void>,
): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...AGENT_PERMISSIONS,
      MOD_PATH,
      "agent",
      "--control-plane",
      CP_HOST,
      "--bind",
      AGENT_HOST,
      "--node-id",
      "m1",
      "--data",
      data,
      "--insecure",
      "--udp-port",
      "17401",
      "--p2p-port",
      "17402",
      ...extra,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const seen: string[] = [];
  try {
    await fn((pattern) => lineMatching(reader, seen, pattern), seen);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reader.cancel().catch(() => {});
  }
}

Deno.test("the agent serves no metrics unless asked: without --metrics nothing answers on the port, and its log names no metrics address", async () => {
  await withTempDir(async (dir) => {
    await withAgent(`${dir}/data`, [], async (wait, seen) => {
      await wait(/agent m1 \(default\) on 127\.0\.77\.2/);
      const refused = await fetch(`http://${AGENT_HOST}:${METRICS_PORT}/metrics`).then(
        async (r) => {
          await r.body?.cancel();
          return false;
        },
        () => true,
      );
      assert.ok(refused, "nothing listens for metrics");
      assert.ok(!seen.some((line) => line.includes("metrics on")), seen.join("\n"));
    });
  });
});

Deno.test("with --metrics ADDR:PORT the agent serves GET /metrics without a token: the model it runs with its digest, no update yet, nothing served, not enrolled; other paths are 404 and other methods 405", async () => {
  await withTempDir(async (dir) => {
    const data = `${dir}/data`;
    const model = randomBytes(4096, 22);
    const digest = toHex(blake3(model));
    await Deno.mkdir(`${data}/blobs`, { recursive: true });
    await writeFile(`${data}/blobs/${digest}`, model);
    await switchTo(data, "resnet", digest);
    await withAgent(data, ["--metrics", `${AGENT_HOST}:${METRICS_PORT}`], async (wait) => {
      await wait(/metrics on http:\/\/127\.0\.77\.2:17409\/metrics/);
      const url = `http://${AGENT_HOST}:${METRICS_PORT}/metrics`;
      const r = await fetch(url);
      const text = await r.text();
      assert.equal(r.status, 200, text);
      assert.equal(r.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
      const parsed = parsePrometheusText(text);
      assert.equal(
        valueOf(parsed, "poolboy_agent_model_info", { model: "resnet", digest, version: "" }),
        1,
      );
      assert.equal(valueOf(parsed, "poolboy_agent_updates_total", { outcome: "committed" }), 0);
      assert.equal(valueOf(parsed, "poolboy_agent_served_bytes_total"), 0);
      assert.equal(valueOf(parsed, "poolboy_agent_downloaded_bytes_total", { source: "peer" }), 0);
      assert.equal(valueOf(parsed, "poolboy_agent_enrolled"), 0);
      const other = await fetch(`http://${AGENT_HOST}:${METRICS_PORT}/v1/status`);
      assert.equal(other.status, 404, await other.text());
      const post = await fetch(url, { method: "POST", body: "x" });
      assert.equal(post.status, 405, await post.text());
    });
  });
});

Deno.test("--metrics without a port, or with an address that is not IPv4, is a usage error (exit 2) that says what to type", async () => {
  for (const value of ["127.0.0.1", "localhost:9464"]) {
    const run = await poolboyWith(AGENT_PERMISSIONS, Deno.cwd(), [
      "agent",
      "--control-plane",
      CP_HOST,
      "--bind",
      AGENT_HOST,
      "--node-id",
      "m1",
      "--data",
      "/nonexistent/poolboy-metrics",
      "--insecure",
      "--metrics",
      value,
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /--metrics/);
  }
});
