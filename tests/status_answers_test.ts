/**
 * `poolboy status` answers the operator's questions: when each rollout and
 * election started and ended and how long it took, when each device was last
 * heard from, devices by region then node id, bytes served kept across an
 * agent's restarts (and the control plane's), a legend of the states, and an
 * election that moved nothing is neither shown as "whole file" nor kept.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Announce } from "../transfer/control_messages.ts";
import { Election } from "../controlplane/election.ts";
import { ElectionBook } from "../controlplane/election_book.ts";
import { buildStatusReport, electionTransfer } from "../controlplane/status_report.ts";
import { type AgentRecord, servedTotal } from "../controlplane/state_store.ts";
import { DATABASE_FILE, SqliteStore } from "../controlplane/sqlite_store.ts";
import type { StatusReport } from "../controlplane/api_types.ts";
import {
  formatDuration,
  formatStatus,
  formatSummary,
  formatTime,
  STATE_LEGEND,
} from "../cli/status.ts";
import { withTempDir } from "./helpers.ts";

const D = (n: number) => new Uint8Array(32).fill(n);
const HEX = (n: number) => n.toString(16).padStart(2, "0").repeat(32);
const T0 = Date.UTC(2026, 10, 30, 2, 50, 0);

function announce(manifestId: string, base: Uint8Array | null): Announce {
  return {
    type: "announce",
    manifestId,
    model: "resnet",
    version: "v2",
    targetDigest: D(2),
    targetSize: 1000,
    baseDigest: base,
    blobDigest: base === null ? D(2) : D(3),
    blobSize: base === null ? 1000 : 100,
    cpHost: "100.64.0.1",
    cpP2pPort: 7401,
    releaseDigest: null,
    delegationDigest: null,
  };
}

const TIMING = { retryMs: 100, maxRetryMs: 400, leaderTimeoutMs: 5000 };

function agent(nodeId: string, region: string, lastSeen = T0): AgentRecord {
  return {
    nodeId,
    region,
    host: "100.64.0.10",
    udpPort: 7410,
    p2pPort: 7411,
    active: {},
    held: [],
    served: 0,
    startedAt: 1,
    lastSeen,
  };
}

Deno.test("an agent's served bytes add up across its restarts: a counter that goes down or a new start adds the new value", () => {
  let kept = servedTotal(undefined, 100, 1);
  assert.deepEqual(kept, { served: 100, servedReported: 100 });
  kept = servedTotal({ ...kept, startedAt: 1 }, 250, 1);
  assert.deepEqual(kept, { served: 250, servedReported: 250 }, "an increase is added");
  kept = servedTotal({ ...kept, startedAt: 1 }, 40, 1);
  assert.deepEqual(kept, { served: 290, servedReported: 40 }, "went down: restarted, 40 added");
  kept = servedTotal({ ...kept, startedAt: 1 }, 500, 2);
  assert.deepEqual(kept, { served: 790, servedReported: 500 }, "another start: all 500 added");
  kept = servedTotal({ ...kept, startedAt: 2 }, 500, 2);
  assert.deepEqual(kept, { served: 790, servedReported: 500 }, "the same counter adds nothing");
  assert.deepEqual(
    servedTotal({ served: 70, startedAt: 2 }, 90, 2),
    { served: 90, servedReported: 90 },
    "a record from before issue 16 (no servedReported) counts its served as the counter",
  );
  assert.deepEqual(
    servedTotal({ served: 70, servedReported: 70, startedAt: 2 }, -5, 2).served,
    70,
    "a hostile counter adds nothing",
  );
});

Deno.test("the SQLite store keeps an agent's served total and last counter, and opens a database from before the column", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/${DATABASE_FILE}`;
    const old = new DatabaseSync(path);
    old.exec(`CREATE TABLE agents (
      node_id TEXT PRIMARY KEY, region TEXT NOT NULL, host TEXT NOT NULL, udp_port INTEGER NOT NULL,
      p2p_port INTEGER NOT NULL, active TEXT NOT NULL, held TEXT NOT NULL, served INTEGER NOT NULL,
      started_at INTEGER NOT NULL, last_seen INTEGER NOT NULL)`);
    old.exec(
      `INSERT INTO agents VALUES ('old', 'eu', '100.64.0.9', 7410, 7411, '{}', '[]', 55, 1, 2)`,
    );
    old.close();
    const store = await SqliteStore.open(path);
    try {
      const [before] = await store.agents();
      assert.equal(before.served, 55);
      assert.equal(before.servedReported, undefined, "absent: servedTotal counts served");
      await store.putAgent({ ...agent("eu-1", "eu"), served: 900, servedReported: 40 });
      await store.close();
      const reopened = await SqliteStore.open(path);
      try {
        const eu1 = (await reopened.agents()).find((a) => a.nodeId === "eu-1")!;
        assert.equal(eu1.served, 900);
        assert.equal(eu1.servedReported, 40);
      } finally {
        await reopened.close();
      }
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  });
});

function report(entries: ReturnType<ElectionBook["all"]>, agents: AgentRecord[]): StatusReport {
  return buildStatusReport({
    boot: 1,
    now: T0 + 90_000,
    agentTimeoutMs: 10_000,
    versions: [],
    releaseOf: () => undefined,
    patches: [],
    agents,
    rollouts: [{
      rollout: {
        id: 4,
        model: "resnet",
        version: "v1",
        digest: HEX(2),
        region: null,
        state: "done",
        created: T0,
        finished: T0 + 8_200,
        reason: "",
        strategy: "all",
        canary: 1,
        canaryPercent: false,
        batch: 1,
        maxFailures: 0.2,
        rollback: true,
      },
      agents: [
        { rolloutId: 4, nodeId: "eu-b", state: "active", detail: "", updated: T0 },
        {
          rolloutId: 4,
          nodeId: "us-a",
          state: "failed",
          detail: "health check failed: tensor nan",
          updated: T0,
        },
      ],
    }],
    elections: entries,
    served: {},
    drops: {},
    patchErrors: {},
    tick: { count: 0, totalMs: 0, maxMs: 0, lastMs: 0 },
    datagramBacklog: 0,
  });
}

Deno.test("the report lists devices by region then node id, with when each was last seen", () => {
  const r = report([], [
    agent("us-a", "us", T0 + 89_000),
    agent("eu-b", "eu", T0 + 80_000),
    agent("eu-a", "eu", T0),
  ]);
  assert.deepEqual(r.agents.map((a) => a.nodeId), ["eu-a", "eu-b", "us-a"]);
  assert.equal(r.agents[1].lastSeen, T0 + 80_000);
  assert.equal(r.agents[1].lastSeenMsAgo, 10_000);
  assert.equal(r.now, T0 + 90_000);
  const text = formatStatus(r).join("\n");
  assert.match(text, /eu-a .*; last seen 1 min 30 s ago \(2026-11-30 02:50:00Z\)/);
  assert.ok(
    text.indexOf("eu-a") < text.indexOf("eu-b") && text.indexOf("eu-b") < text.indexOf("us-a"),
  );
});

Deno.test("a rollback's election where every member holds the target is a local switch, not a whole file", () => {
  const held = new Election(announce("r4.b1.e1", null), "eu", TIMING);
  held.addMember("eu-b", T0);
  held.tick(T0 + 1_000);
  held.onBid("eu-b", T0 + 1_500);
  held.onLeaderReady("eu-b", { host: "100.64.0.10", p2pPort: 7411 }, T0 + 3_500);
  const whole = new Election(announce("r4.b1.e2", null), "us", TIMING);
  whole.addMember("us-a", T0);
  whole.tick(T0 + 2_000);
  whole.fail("leader us-a went silent", T0 + 7_000);
  const patch = new Election(announce("r4.b1.e3", D(1)), "us", TIMING);
  const entries = [
    { election: held, rolloutId: 4, key: "eu|held" },
    { election: whole, rolloutId: 4, key: "us|none" },
    { election: patch, rolloutId: 4, key: `us|${HEX(1)}` },
  ];
  assert.deepEqual(entries.map(electionTransfer), ["localSwitch", "wholeFile", "patch"]);
  const r = report(entries, [agent("eu-b", "eu"), agent("us-a", "us")]);
  const [e1, e2, e3] = r.rollouts[0].elections;
  assert.equal(e1.transfer, "localSwitch");
  assert.equal(e1.started, T0 + 1_000);
  assert.equal(e1.finished, T0 + 3_500);
  assert.equal(e2.finished, T0 + 7_000, "a failed election ends when it failed");
  assert.equal(e2.timeline.failed, T0 + 7_000);
  assert.equal(e3.started, null, "never announced yet");
  const text = formatStatus(r).join("\n");
  assert.match(
    text,
    /election r4\.b1\.e1 eu: closed, leader eu-b, local switch \(nothing downloaded\), 1\/1 pending; started 2026-11-30 02:50:01Z, closed after 2\.5 s/,
  );
  assert.doesNotMatch(text, /r4\.b1\.e1 eu: .*whole file/);
  assert.match(text, /election r4\.b1\.e2 us: failed, whole file 1000 B, .*failed after 5\.0 s/);
});

Deno.test("a rollout shows when it started, when it finished and how long it took; a failed device its reason once", () => {
  const text = formatStatus(report([], [agent("eu-b", "eu"), agent("us-a", "us")])).join("\n");
  assert.match(text, /started 2026-11-30 02:50:00Z, done 2026-11-30 02:50:08Z after 8\.2 s/);
  assert.match(text, /us-a: failed \(health check failed: tensor nan\)/);
  assert.doesNotMatch(text, /failed health check failed/);
  assert.doesNotMatch(text, /abortd/);
  assert.ok(text.includes(STATE_LEGEND), "one legend line of the states");
  assert.equal(text.split("\n").filter((l) => l.includes("states: ")).length, 1);
});

Deno.test("a running rollout says how long it has run, from the report's own clock", () => {
  const r = report([], []);
  const running = {
    ...r,
    rollouts: [{ ...r.rollouts[0], state: "running" as const, finished: null }],
  };
  assert.match(
    formatStatus(running).join("\n"),
    /started 2026-11-30 02:50:00Z, running for 1 min 30 s/,
  );
});

Deno.test("the summary has the legend and each rollout's times too", () => {
  const lines = formatSummary({
    view: "summary",
    boot: 1,
    now: T0 + 5_000,
    versions: [],
    patches: [],
    devices: { total: 0, online: 0, offline: 0, byRegion: {} },
    rollouts: [{
      ...report([], []).rollouts[0],
      agents: 0,
      agentStates: {},
      elections: [],
    }],
    controlPlane: {
      served: 0,
      servedByDigest: {},
      tick: { count: 0, totalMs: 0, maxMs: 0, lastMs: 0 },
      datagramBacklog: 0,
    },
    drops: {},
    patchErrors: {},
  }).join("\n");
  assert.ok(lines.includes(STATE_LEGEND));
  assert.match(lines, /started 2026-11-30 02:50:00Z, done 2026-11-30 02:50:08Z after 8\.2 s/);
});

Deno.test("an election whose members all moved on before anyone bid is forgotten, not shown stuck announcing", () => {
  const book = new ElectionBook();
  const phantom = new Election(announce("r5.b1.e1", null), "eu", TIMING);
  phantom.addMember("eu-a", T0);
  phantom.tick(T0);
  const real = new Election(announce("r5.b1.e2", D(1)), "eu", TIMING);
  real.addMember("eu-a", T0);
  book.add({ election: phantom, rolloutId: 5, key: "eu|none" });
  book.add({ election: real, rolloutId: 5, key: `eu|${HEX(1)}` });
  phantom.removeMember("eu-a"); // its base showed up in a heartbeat: it joined the patch election
  book.forgetEmpty(5);
  assert.deepEqual(book.all().map((e) => e.election.manifestId), ["r5.b1.e2"]);
  book.endRollout(5);
  assert.deepEqual(book.all().map((e) => e.election.manifestId), ["r5.b1.e2"]);
});

Deno.test("times are UTC to the second and durations read at a glance", () => {
  assert.equal(formatTime(T0 + 1_499), "2026-11-30 02:50:01Z");
  assert.equal(formatDuration(850), "850 ms");
  assert.equal(formatDuration(8_200), "8.2 s");
  assert.equal(formatDuration(185_000), "3 min 05 s");
  assert.equal(formatDuration(7_380_000), "2 h 03 min");
  assert.equal(formatDuration(-1), "?");
});

Deno.test({
  name:
    "a device that holds the target because its election brought it finishes in that election; only one that held it before switches locally",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { ControlPlane } = await import("../controlplane/control_plane.ts");
  const { MemoryStore } = await import("./support/memory_store.ts");
  const { registerDevice } = await import("./support/devices.ts");
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
      stateStore: new MemoryStore(),
      tickMs: 3_600_000, // ticked by hand below
    });
    try {
      await cp.publish("resnet", "v1", new Blob([D(7)]).stream());
      const digest = (await cp.versions())[0].digest;
      registerDevice(cp, "eu-0");
      registerDevice(cp, "eu-1");
      registerDevice(cp, "us-0", "us", { held: [digest] }); // had v1 before (a rollback)
      await cp.rollout("resnet", "v1", null);
      cp.tick(Date.now());
      // eu-1 downloaded v1 through its election and has not switched yet: its heartbeat says held.
      registerDevice(cp, "eu-1", "eu", { held: [digest] });
      cp.tick(Date.now());
      cp.tick(Date.now());
      const [rollout] = (await cp.status()).rollouts;
      const byRegion = (region: string) => rollout.elections.filter((e) => e.region === region);
      assert.deepEqual(byRegion("eu").map((e) => [e.transfer, e.members.sort()]), [
        ["wholeFile", ["eu-0", "eu-1"]],
      ]);
      assert.deepEqual(byRegion("us").map((e) => [e.transfer, e.members]), [
        ["localSwitch", ["us-0"]],
      ]);
    } finally {
      await cp.close();
    }
  });
});
