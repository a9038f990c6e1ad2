/**
 * The metrics' text (kernel/prometheus.ts) and the control plane's snapshot
 * (controlplane/metrics.ts), without sockets: what is written parses with a
 * strict reader of the format (tests/support/prometheus_text.ts), label values
 * and help texts are escaped, every family has one HELP and one TYPE line,
 * histograms are cumulative and end with +Inf, the snapshot counts a known
 * state, the number of series does not grow with the fleet, and every metric
 * is listed in docs/metrics.md.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  escapeLabelValue,
  Histogram,
  type MetricFamily,
  MetricsFormatError,
  renderPrometheus,
} from "../kernel/prometheus.ts";
import {
  type ControlPlaneMetrics,
  ELECTION_BUCKETS,
  gatherMetrics,
  metricFamilies,
  type MetricsInput,
  renderMetrics,
} from "../controlplane/metrics.ts";
import type { AgentProgress } from "../controlplane/agent_progress.ts";
import type { ElectionState } from "../controlplane/election.ts";
import type { AgentRecord, RolloutRecord, RolloutState } from "../controlplane/state_store.ts";
import { DEFAULT_PLAN } from "../controlplane/state_store.ts";
import { authDropCounters } from "../transfer/datagram_auth.ts";
import { agentMetricFamilies, type AgentMetrics } from "../agent/metrics_server.ts";
import { parsePrometheusText, valueOf } from "./support/prometheus_text.ts";

const NOW = 1_800_000_000_000;

function device(nodeId: string, region: string, lastSeenAgo: number, served = 0): AgentRecord {
  return {
    nodeId,
    region,
    host: "127.0.0.2",
    udpPort: 9,
    p2pPort: 9,
    active: {},
    held: [],
    served,
    startedAt: 1,
    lastSeen: NOW - lastSeenAgo,
  };
}

function rollout(id: number, state: RolloutState, seconds: number | null): RolloutRecord {
  return {
    ...DEFAULT_PLAN,
    id,
    model: "resnet",
    version: `v${id}`,
    digest: "00".repeat(32),
    region: null,
    state,
    created: NOW - 100_000,
    finished: seconds === null ? null : NOW - 100_000 + seconds * 1000,
    reason: "",
  };
}

/** A control plane's state, as gatherMetrics reads it. */
function input(overrides: Partial<MetricsInput> = {}): MetricsInput {
  const elections = new Histogram(ELECTION_BUCKETS);
  elections.observe(0.3);
  elections.observe(2);
  elections.observe(2000);
  return {
    boot: 4,
    now: NOW,
    startedAt: NOW - 90_000,
    residentBytes: 123_456_789,
    agentTimeoutMs: 10_000,
    agents: [
      device("eu-1", "eu", 0, 1000),
      device("eu-2", "eu", 5_000, 24),
      device("eu-3", "eu", 60_000, 0),
      device("us-1", "us", 0, 7),
      device("us-2", "us", 20_000, 0),
    ],
    rollouts: [
      rollout(1, "done", 30),
      rollout(2, "done", 400),
      rollout(3, "aborted", 2),
      rollout(4, "superseded", 100_000),
      rollout(5, "halted", 50),
      rollout(6, "running", null),
    ],
    progress: [
      [
        6,
        new Map<string, AgentProgress>([
          ["eu-1", { kind: "active", detail: "" }],
          ["eu-2", { kind: "failed", reason: "poisoned: failed 3 times", poisoned: true }],
          ["us-1", { kind: "downloading", detail: "" }],
          ["us-2", { kind: "failed", reason: "disk", poisoned: false }],
        ]),
      ],
      [
        5,
        new Map<string, AgentProgress>([["us-1", { kind: "failed", reason: "p", poisoned: true }]]),
      ],
      // A rollout that is over: not counted.
      [
        1,
        new Map<string, AgentProgress>([["eu-3", { kind: "failed", reason: "p", poisoned: true }]]),
      ],
    ],
    liveElections: ["closed", "closed", "leading"] as ElectionState[],
    electionsFailed: 2,
    electionDurations: elections.snapshot(),
    drops: {
      ...authDropCounters(),
      unexpectedSender: 3,
      unknownElection: 1,
      wrongDirection: 0,
      backlogFull: 0,
      outboxFull: 5,
      badSignature: 2,
    },
    socket: {
      sent: 100,
      received: 90,
      malformed: 4,
      faultDropped: 0,
      sendErrors: 1,
      sendQueueFull: 6,
    },
    datagramBacklog: 2,
    outboxQueued: 3,
    blobServedBytes: 5_000_000,
    tick: { count: 10, totalMs: 250, maxMs: 50, lastMs: 20 },
    ...overrides,
  };
}

Deno.test("a label value with a backslash, a quote and a newline, and a help text with a backslash and a newline, are escaped as the format says and read back the same", () => {
  const nasty = 'a\\b"c\nd';
  const text = renderPrometheus([{
    name: "poolboy_test",
    help: 'line one\nline two \\ and "quotes"',
    type: "gauge",
    samples: [{ labels: { region: nasty }, value: 1 }],
  }]);
  assert.match(text, /^# HELP poolboy_test line one\\nline two \\\\ and "quotes"\n/);
  assert.ok(text.includes(`poolboy_test{region="a\\\\b\\"c\\nd"} 1\n`), text);
  assert.equal(escapeLabelValue(nasty), 'a\\\\b\\"c\\nd');
  const [family] = parsePrometheusText(text);
  assert.equal(family.help, 'line one\nline two \\ and "quotes"');
  assert.deepEqual(family.samples[0].labels, { region: nasty });
});

Deno.test("families come out in the order given, each with one HELP and one TYPE line before its samples, and a family's samples ordered by their labels", () => {
  const text = renderPrometheus([
    {
      name: "poolboy_b",
      help: "b",
      type: "counter",
      samples: [
        { labels: { region: "us" }, value: 2 },
        { labels: { region: "eu" }, value: 1 },
      ],
    },
    { name: "poolboy_a", help: "a", type: "gauge", samples: [{ labels: {}, value: 0.5 }] },
    { name: "poolboy_empty", help: "none yet", type: "gauge", samples: [] },
  ]);
  assert.equal(
    text,
    [
      "# HELP poolboy_b b",
      "# TYPE poolboy_b counter",
      'poolboy_b{region="eu"} 1',
      'poolboy_b{region="us"} 2',
      "# HELP poolboy_a a",
      "# TYPE poolboy_a gauge",
      "poolboy_a 0.5",
      "# HELP poolboy_empty none yet",
      "# TYPE poolboy_empty gauge",
      "",
    ].join("\n"),
  );
  assert.deepEqual(parsePrometheusText(text).map((f) => f.name), [
    "poolboy_b",
    "poolboy_a",
    "poolboy_empty",
  ]);
});

Deno.test("special values are written as the format spells them: +Inf, -Inf and NaN", () => {
  const text = renderPrometheus([{
    name: "poolboy_x",
    help: "x",
    type: "gauge",
    samples: [
      { labels: { k: "a" }, value: Infinity },
      { labels: { k: "b" }, value: -Infinity },
      { labels: { k: "c" }, value: NaN },
    ],
  }]);
  assert.ok(text.includes('poolboy_x{k="a"} +Inf\n'));
  assert.ok(text.includes('poolboy_x{k="b"} -Inf\n'));
  assert.ok(text.includes('poolboy_x{k="c"} NaN\n'));
  parsePrometheusText(text);
});

Deno.test('a histogram\'s buckets are cumulative, in increasing le, and end with le="+Inf" equal to its count; sum and count follow', () => {
  const h = new Histogram([1, 5, 10]);
  for (const v of [0.5, 1, 3, 7, 7, 100]) h.observe(v);
  h.observe(NaN); // ignored
  const text = renderPrometheus([{
    name: "poolboy_d_seconds",
    help: "d",
    type: "histogram",
    series: [{ labels: { state: "done" }, histogram: h.snapshot() }],
  }]);
  assert.equal(
    text,
    [
      "# HELP poolboy_d_seconds d",
      "# TYPE poolboy_d_seconds histogram",
      'poolboy_d_seconds_bucket{state="done",le="1"} 2',
      'poolboy_d_seconds_bucket{state="done",le="5"} 3',
      'poolboy_d_seconds_bucket{state="done",le="10"} 5',
      'poolboy_d_seconds_bucket{state="done",le="+Inf"} 6',
      'poolboy_d_seconds_sum{state="done"} 118.5',
      'poolboy_d_seconds_count{state="done"} 6',
      "",
    ].join("\n"),
  );
  parsePrometheusText(text);
});

Deno.test("what the format cannot express is refused as a bug: a bad metric or label name, a reserved label, a family named twice, a label set repeated, bounds not increasing", () => {
  const gauge = (name: string, labels: Record<string, string> = {}): MetricFamily => ({
    name,
    help: "h",
    type: "gauge",
    samples: [{ labels, value: 1 }],
  });
  const refused: MetricFamily[][] = [
    [gauge("poolboy-dash")],
    [gauge("9poolboy")],
    [gauge("poolboy_x", { "bad-label": "v" })],
    [gauge("poolboy_x", { __reserved: "v" })],
    [gauge("poolboy_x", { le: "1" })],
    [gauge("poolboy_x"), gauge("poolboy_x")],
    [{
      name: "poolboy_x",
      help: "h",
      type: "gauge",
      samples: [{ labels: { a: "1" }, value: 1 }, { labels: { a: "1" }, value: 2 }],
    }],
    [{
      name: "poolboy_h",
      help: "h",
      type: "histogram",
      series: [{ labels: {}, histogram: { bounds: [2, 1], cumulative: [0, 0], sum: 0, count: 0 } }],
    }],
    [{
      name: "poolboy_h",
      help: "h",
      type: "histogram",
      series: [{ labels: {}, histogram: { bounds: [1, 2], cumulative: [3, 1], sum: 0, count: 3 } }],
    }],
  ];
  for (const families of refused) {
    assert.throws(() => renderPrometheus(families), MetricsFormatError, JSON.stringify(families));
  }
  assert.throws(() => new Histogram([1, 1]), MetricsFormatError);
  assert.throws(() => new Histogram([1, Infinity]), MetricsFormatError);
});

Deno.test("the control plane's snapshot counts a known state: devices by region and state, poisoned devices of rollouts not over, served bytes by region, rollouts by state, devices in rollouts by state, elections, drops by reason, the process", () => {
  const m = gatherMetrics(input());
  const parsed = parsePrometheusText(renderMetrics(m));
  const v = (name: string, labels: Record<string, string> = {}) => valueOf(parsed, name, labels);
  assert.equal(v("poolboy_devices", { region: "eu", state: "online" }), 2);
  assert.equal(v("poolboy_devices", { region: "eu", state: "offline" }), 1);
  assert.equal(v("poolboy_devices", { region: "us", state: "online" }), 1);
  assert.equal(v("poolboy_devices", { region: "us", state: "offline" }), 1);
  // eu-2 in the running rollout, us-1 in the halted one; eu-3's is in a finished rollout.
  assert.equal(v("poolboy_devices_poisoned", { region: "eu" }), 1);
  assert.equal(v("poolboy_devices_poisoned", { region: "us" }), 1);
  assert.equal(v("poolboy_device_served_bytes", { region: "eu" }), 1024);
  assert.equal(v("poolboy_device_served_bytes", { region: "us" }), 7);
  for (
    const [state, n] of Object.entries({
      running: 1,
      paused: 0,
      halted: 1,
      aborted: 1,
      superseded: 1,
      done: 2,
    })
  ) {
    assert.equal(v("poolboy_rollouts", { state }), n, state);
  }
  assert.equal(v("poolboy_rollout_devices", { state: "failed" }), 3);
  assert.equal(v("poolboy_rollout_devices", { state: "active" }), 1);
  assert.equal(v("poolboy_rollout_devices", { state: "downloading" }), 1);
  assert.equal(v("poolboy_rollout_devices", { state: "waiting" }), 0);
  // Rollout durations: done in 30 s and 400 s; aborted after 2 s; superseded after 100,000 s.
  assert.equal(v("poolboy_rollout_duration_seconds_count", { state: "done" }), 2);
  assert.equal(v("poolboy_rollout_duration_seconds_sum", { state: "done" }), 430);
  assert.equal(v("poolboy_rollout_duration_seconds_bucket", { state: "done", le: "60" }), 1);
  assert.equal(v("poolboy_rollout_duration_seconds_bucket", { state: "done", le: "900" }), 2);
  assert.equal(v("poolboy_rollout_duration_seconds_bucket", { state: "aborted", le: "5" }), 1);
  assert.equal(
    v("poolboy_rollout_duration_seconds_bucket", { state: "superseded", le: "86400" }),
    0,
  );
  assert.equal(
    v("poolboy_rollout_duration_seconds_bucket", { state: "superseded", le: "+Inf" }),
    1,
  );
  assert.equal(v("poolboy_rollout_duration_seconds_count", { state: "halted" }), 1);
  assert.equal(v("poolboy_elections", { state: "closed" }), 2);
  assert.equal(v("poolboy_elections", { state: "leading" }), 1);
  assert.equal(v("poolboy_elections", { state: "announcing" }), 0);
  assert.equal(v("poolboy_elections_failed_total"), 2);
  assert.equal(v("poolboy_election_duration_seconds_count"), 3);
  assert.equal(v("poolboy_election_duration_seconds_bucket", { le: "0.5" }), 1);
  assert.equal(v("poolboy_election_duration_seconds_bucket", { le: "600" }), 2);
  assert.equal(v("poolboy_datagrams_received_total"), 90);
  assert.equal(v("poolboy_datagrams_sent_total"), 100);
  assert.equal(v("poolboy_datagrams_dropped_total", { reason: "unexpectedSender" }), 3);
  assert.equal(v("poolboy_datagrams_dropped_total", { reason: "badSignature" }), 2);
  assert.equal(v("poolboy_datagrams_dropped_total", { reason: "outboxFull" }), 5);
  assert.equal(v("poolboy_datagrams_dropped_total", { reason: "malformed" }), 4);
  assert.equal(v("poolboy_datagrams_dropped_total", { reason: "sendQueueFull" }), 6);
  assert.equal(v("poolboy_datagrams_dropped_total", { reason: "sendErrors" }), 1);
  assert.equal(v("poolboy_datagram_backlog"), 2);
  assert.equal(v("poolboy_outbox_datagrams"), 3);
  assert.equal(v("poolboy_control_plane_served_bytes_total"), 5_000_000);
  assert.equal(v("poolboy_ticks_total"), 10);
  assert.equal(v("poolboy_tick_seconds_total"), 0.25);
  assert.equal(v("poolboy_control_plane_boot"), 4);
  assert.equal(v("poolboy_process_resident_memory_bytes"), 123_456_789);
  assert.equal(v("poolboy_uptime_seconds"), 90);
  for (const family of parsed) {
    assert.match(family.name, /^poolboy_[a-z0-9_]+$/, "snake case with the poolboy_ prefix");
    if (family.type === "counter") assert.match(family.name, /_total$/);
  }
});

Deno.test("the number of series depends on regions and states only: 10,000 devices in three regions give as many lines as 30, and no node id appears", () => {
  const fleet = (n: number) => {
    const agents: AgentRecord[] = [];
    const progress = new Map<string, AgentProgress>();
    for (let i = 0; i < n; i++) {
      const nodeId = `node-${i}`;
      agents.push(device(nodeId, ["eu", "us", "ap"][i % 3], i % 2 === 0 ? 0 : 60_000, i));
      progress.set(nodeId, { kind: "failed", reason: "p", poisoned: i % 5 === 0 });
    }
    return renderMetrics(gatherMetrics(input({ agents, progress: [[6, progress]] })));
  };
  const small = fleet(30);
  const large = fleet(10_000);
  assert.equal(large.split("\n").length, small.split("\n").length);
  assert.ok(!large.includes("node-"), "no node id in any label");
  const parsed = parsePrometheusText(large);
  assert.equal(valueOf(parsed, "poolboy_devices", { region: "eu", state: "online" }), 1667);
  assert.equal(valueOf(parsed, "poolboy_rollout_devices", { state: "failed" }), 10_000);
  assert.equal(
    ["eu", "us", "ap"].reduce(
      (sum, region) => sum + valueOf(parsed, "poolboy_devices_poisoned", { region }),
      0,
    ),
    2000,
  );
});

/** The metric names docs/metrics.md lists in its tables (first column, in backquotes). */
async function documented(): Promise<Set<string>> {
  const doc = await Deno.readTextFile(new URL("../docs/metrics.md", import.meta.url));
  return new Set([...doc.matchAll(/^\| `(poolboy_[a-z0-9_]+)`/gm)].map((m) => m[1]));
}

Deno.test("every metric of the control plane and of the agent is listed in docs/metrics.md, and the doc lists none that does not exist", async () => {
  const cp: ControlPlaneMetrics = gatherMetrics(input());
  const agent: AgentMetrics = {
    models: [],
    counters: {
      updates: {},
      downloadedBytes: { peer: 0, controlPlane: 0 },
      piecesVerified: { peer: 0, controlPlane: 0 },
      pieceRefusals: { peer: 0, controlPlane: 0 },
    },
    updatesInProgress: 0,
    servedBytes: 0,
    drops: {},
    enrolled: false,
    uptimeSeconds: 0,
    residentBytes: 0,
  };
  const names = [...metricFamilies(cp), ...agentMetricFamilies(agent)].map((f) => f.name);
  const doc = await documented();
  for (const name of names) assert.ok(doc.has(name), `${name} is in docs/metrics.md`);
  for (const name of doc) assert.ok(names.includes(name), `${name} (docs/metrics.md) exists`);
});

Deno.test("the agent's metrics show each model's version, its step, updates by outcome and bytes by source, with the source kinds' label values", () => {
  const text = renderPrometheus(agentMetricFamilies({
    models: [
      { model: "resnet", digest: "ab".repeat(32), version: "v2", step: "committed" },
      { model: "bert", digest: null, version: "", step: "downloading" },
    ],
    counters: {
      updates: { committed: 2, failed: 1 },
      downloadedBytes: { peer: 900, controlPlane: 100 },
      piecesVerified: { peer: 9, controlPlane: 1 },
      pieceRefusals: { peer: 3, controlPlane: 0 },
    },
    updatesInProgress: 1,
    servedBytes: 4096,
    drops: { ...authDropCounters(), unexpectedSender: 1 },
    enrolled: true,
    uptimeSeconds: 12,
    residentBytes: 1000,
  }));
  const parsed = parsePrometheusText(text);
  const v = (name: string, labels: Record<string, string> = {}) => valueOf(parsed, name, labels);
  assert.equal(
    v("poolboy_agent_model_info", { model: "resnet", digest: "ab".repeat(32), version: "v2" }),
    1,
  );
  assert.ok(!text.includes('poolboy_agent_model_info{digest="",model="bert"'));
  assert.equal(v("poolboy_agent_model_step", { model: "resnet", step: "committed" }), 1);
  assert.equal(v("poolboy_agent_model_step", { model: "resnet", step: "idle" }), 0);
  assert.equal(v("poolboy_agent_model_step", { model: "bert", step: "downloading" }), 1);
  assert.equal(v("poolboy_agent_updates_total", { outcome: "committed" }), 2);
  assert.equal(v("poolboy_agent_updates_total", { outcome: "failed" }), 1);
  assert.equal(v("poolboy_agent_updates_total", { outcome: "rolledBack" }), 0);
  assert.equal(v("poolboy_agent_updates_in_progress"), 1);
  assert.equal(v("poolboy_agent_downloaded_bytes_total", { source: "peer" }), 900);
  assert.equal(v("poolboy_agent_downloaded_bytes_total", { source: "control_plane" }), 100);
  assert.equal(v("poolboy_agent_pieces_verified_total", { source: "peer" }), 9);
  assert.equal(v("poolboy_agent_piece_refusals_total", { source: "peer" }), 3);
  assert.equal(v("poolboy_agent_served_bytes_total"), 4096);
  assert.equal(v("poolboy_agent_datagrams_dropped_total", { reason: "unexpectedSender" }), 1);
  assert.equal(v("poolboy_agent_enrolled"), 1);
});
