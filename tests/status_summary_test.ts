/**
 * The status summary (`GET /v1/status?view=summary`) and the paged device
 * listings (`GET /v1/devices?offset&limit`, `GET /v1/rollouts/{id}/devices`):
 * the summary's counts are the whole report's, counted; pages put together are
 * the whole list; bad parameters are refused. Run against both stores.
 *
 * @module
 */

import assert from "node:assert/strict";
import { blake3, toHex } from "../kernel/blake3.ts";
import type {
  DeviceCounts,
  DeviceInfo,
  DeviceList,
  DevicePage,
  RolloutAgentInfo,
  RolloutAgentPage,
  RolloutInfo,
  StatusReport,
  StatusSummary,
} from "../controlplane/api_types.ts";
import type { StateStore } from "../controlplane/state_store.ts";
import { randomBytes } from "./helpers.ts";
import { type Api, withApi } from "./support/api_harness.ts";
import { registerDevice } from "./support/devices.ts";
import { MemoryStore } from "./support/memory_store.ts";

async function json<T>(response: Response): Promise<T> {
  assert.equal(response.status, 200, `HTTP ${response.status}`);
  return await response.json() as T;
}

/** Publishes resnet `version`. */
async function published(
  call: Api["call"],
  version: string,
  bytes: Uint8Array<ArrayBuffer>,
): Promise<void> {
  const r = await call("PUT", `/v1/models/resnet/versions/${version}`, bytes);
  assert.equal(r.status, 201, await r.clone().text());
  await r.body?.cancel();
}

/** Rolls resnet `version` out to every region. */
async function rollout(call: Api["call"], version: string): Promise<RolloutInfo> {
  const r = await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version }));
  assert.equal(r.status, 201);
  return await r.json() as RolloutInfo;
}

/** Both stores: SQLite (the control plane's default) and the one in memory. */
const STORES: readonly { name: string; make: () => StateStore | undefined }[] = [
  { name: "SQLite", make: () => undefined },
  { name: "memory", make: () => new MemoryStore() },
];

/**
 * A small fleet: 13 devices in three regions (two silent for long), v1 on
 * some, one finished rollout of v1 and a running one of v2 with its elections.
 */
async function smallFleet(store: StateStore | undefined, fn: (api: Api) => Promise<void>) {
  await withApi({
    controlPlane: {
      tickMs: 3_600_000,
      agentTimeoutMs: 10_000,
      offlineAfterMs: 60_000,
      ...(store ? { stateStore: store } : {}),
    },
  }, async (api) => {
    const { call, cp } = api;
    const v1 = randomBytes(1000, 11);
    await published(call, "v1", v1);
    const now = Date.now();
    const regions = ["eu", "us", "ap"];
    for (let i = 0; i < 13; i++) {
      const region = regions[i % 3];
      registerDevice(cp, `${region}-${String(i).padStart(2, "0")}`, region, {
        active: i % 2 === 0 ? { resnet: toHex(blake3(v1)) } : {},
        lastSeen: i === 4 || i === 7 ? now - 120_000 : now,
      });
    }
    await rollout(call, "v1");
    cp.tick(now);
    const v2 = randomBytes(1000, 12);
    await published(call, "v2", v2);
    await rollout(call, "v2");
    cp.tick(now + 1);
    // The patch v1 → v2 the tick started computing, then the elections that send it.
    await cp.patches.ensure(toHex(blake3(v1)), toHex(blake3(v2)));
    cp.tick(now + 2);
    await fn(api);
  });
}

/** Devices counted from the whole report's list. */
function countedFromReport(agents: readonly DeviceInfo[]) {
  const count = (list: readonly DeviceInfo[]): DeviceCounts => ({
    total: list.length,
    online: list.filter((a) => a.online).length,
    offline: list.filter((a) => !a.online).length,
  });
  const regions = [...new Set(agents.map((a) => a.region))].sort();
  return {
    ...count(agents),
    byRegion: Object.fromEntries(
      regions.map((r) => [r, count(agents.filter((a) => a.region === r))]),
    ),
  };
}

function statesOf(agents: readonly RolloutAgentInfo[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of agents) counts[a.state] = (counts[a.state] ?? 0) + 1;
  return counts;
}

for (const { name, make } of STORES) {
  Deno.test(`(${name} store) the summary counts exactly what the whole report lists: devices online and offline in all and by region, each rollout's agents by state, each election's members and pending`, async () => {
    await smallFleet(make(), async ({ call }) => {
      const report = await json<StatusReport>(await call("GET", "/v1/status"));
      const summary = await json<StatusSummary>(await call("GET", "/v1/status?view=summary"));
      assert.equal(summary.view, "summary");
      assert.equal(summary.boot, report.boot);
      assert.deepEqual(summary.devices, countedFromReport(report.agents));
      assert.equal(summary.devices.total, 13);
      assert.equal(summary.devices.offline, 2);
      assert.deepEqual(summary.versions, report.versions);
      assert.deepEqual(summary.patches, report.patches);
      assert.deepEqual(summary.drops, report.drops);
      assert.deepEqual(summary.patchErrors, report.patchErrors);
      assert.equal(summary.controlPlane.served, report.controlPlane.served);
      assert.equal(summary.rollouts.length, 2);
      assert.deepEqual(summary.rollouts.map((r) => r.id), report.rollouts.map((r) => r.id));
      for (const full of report.rollouts) {
        const r = summary.rollouts.find((x) => x.id === full.id)!;
        const { agents: _agents, elections: _elections, ...info } = full;
        const { agents, agentStates, elections, ...summaryInfo } = r;
        assert.deepEqual(summaryInfo, info, `rollout ${full.id}'s fields`);
        assert.equal(agents, full.agents.length);
        assert.deepEqual(agentStates, statesOf(full.agents), `rollout ${full.id}'s agents`);
        assert.equal(elections.length, full.elections.length);
        for (const e of full.elections) {
          const s = elections.find((x) => x.manifestId === e.manifestId)!;
          const { members, pending, ...rest } = e;
          const { members: m, pending: p, ...summaryRest } = s;
          assert.deepEqual(summaryRest, rest, `election ${e.manifestId}`);
          assert.equal(m, members.length);
          assert.equal(p, pending.length);
        }
      }
      const running = summary.rollouts.find((r) => r.state === "running")!;
      assert.ok(running.elections.length > 0, "the running rollout has elections");
      assert.ok(running.agents > 0, "the running rollout has agents");
    });
  });
}

Deno.test("the summary names no device but an election's leader: no per-device list in it", async () => {
  await smallFleet(undefined, async ({ call }) => {
    const text = await (await call("GET", "/v1/status?view=summary")).text();
    const summary = JSON.parse(text) as StatusSummary;
    const leaders = new Set(
      summary.rollouts.flatMap((r) => r.elections.map((e) => e.leader)).filter((l) => l !== null),
    );
    for (const id of ["eu-00", "us-01", "ap-02", "eu-03", "us-04", "ap-05", "eu-12"]) {
      if (!leaders.has(id)) assert.ok(!text.includes(`"${id}"`), `${id} is not listed`);
    }
    assert.equal(typeof summary.rollouts[0].agents, "number");
  });
});

Deno.test("GET /v1/status?view=full is the whole report, and any other view is refused with 400", async () => {
  await smallFleet(undefined, async ({ call }) => {
    const full = await json<StatusReport>(await call("GET", "/v1/status?view=full"));
    assert.equal(full.agents.length, 13);
    for (const view of ["", "sumary", "SUMMARY", "x".repeat(100)]) {
      const r = await call("GET", `/v1/status?view=${view}`);
      assert.equal(r.status, 400, `view=${view.slice(0, 10)}`);
      assert.match((await r.json() as { error: string }).error, /view must be "summary" or "full"/);
    }
  });
});

Deno.test("GET /v1/devices pages the devices by node id: the pages put together are the whole list, total counts them all, a page past the end is empty", async () => {
  await smallFleet(undefined, async ({ call }) => {
    const whole = await json<DeviceList>(await call("GET", "/v1/devices"));
    const ids = whole.agents.map((a) => a.nodeId).sort();
    assert.equal(ids.length, 13);
    const paged: DeviceInfo[] = [];
    for (let offset = 0; offset < 13; offset += 5) {
      const page = await json<DevicePage>(
        await call("GET", `/v1/devices?offset=${offset}&limit=5`),
      );
      assert.equal(page.total, 13);
      assert.equal(page.offset, offset);
      assert.equal(page.limit, 5);
      assert.equal(page.agents.length, Math.min(5, 13 - offset));
      paged.push(...page.agents);
    }
    assert.deepEqual(paged.map((a) => a.nodeId), ids);
    const byId = new Map(whole.agents.map((a) => [a.nodeId, a]));
    for (const a of paged) {
      const { lastSeenMsAgo: _a, ...rest } = a;
      const { lastSeenMsAgo: _b, ...expected } = byId.get(a.nodeId)!;
      assert.deepEqual(rest, expected);
    }
    const defaults = await json<DevicePage>(await call("GET", "/v1/devices?offset=0"));
    assert.equal(defaults.limit, 100);
    assert.equal(defaults.agents.length, 13);
    const past = await json<DevicePage>(await call("GET", "/v1/devices?offset=13&limit=1000"));
    assert.deepEqual([past.agents, past.total], [[], 13]);
    assert.ok(!("total" in whole), "without parameters: the whole list, as before");
    assert.ok(Array.isArray(whole.pending));
  });
});

Deno.test("GET /v1/rollouts/{id}/devices pages a rollout's agents by node id, the same as the whole report lists them; an unknown rollout is 404", async () => {
  await smallFleet(undefined, async ({ call }) => {
    const report = await json<StatusReport>(await call("GET", "/v1/status"));
    for (const r of report.rollouts) {
      const paged: RolloutAgentInfo[] = [];
      for (let offset = 0; offset < r.agents.length; offset += 4) {
        const page = await json<RolloutAgentPage>(
          await call("GET", `/v1/rollouts/${r.id}/devices?offset=${offset}&limit=4`),
        );
        assert.deepEqual([page.rolloutId, page.total, page.offset, page.limit], [
          r.id,
          r.agents.length,
          offset,
          4,
        ]);
        paged.push(...page.agents);
      }
      assert.deepEqual(paged, r.agents);
    }
    const missing = await call("GET", "/v1/rollouts/999/devices");
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });
});

Deno.test("page parameters that are not whole numbers in range are refused with 400, before anything is listed", async () => {
  await smallFleet(undefined, async ({ call }) => {
    const bad = [
      "offset=-1",
      "offset=1.5",
      "offset=abc",
      "offset=",
      "offset=123456789",
      "limit=0",
      "limit=1001",
      "limit=1e3",
      "limit=%2010",
      "limit=99999999999999999999",
    ];
    for (const query of bad) {
      for (const path of ["/v1/devices", "/v1/rollouts/1/devices"]) {
        const r = await call("GET", `${path}?${query}`);
        assert.equal(r.status, 400, `${path}?${query}`);
        assert.match(
          (await r.json() as { error: string }).error,
          /(offset|limit) must be a whole number from/,
        );
      }
    }
    const largest = await json<DevicePage>(await call("GET", "/v1/devices?limit=1000"));
    assert.equal(largest.limit, 1000);
  });
});

Deno.test("poolboy status's summary shows the devices counted by region, each rollout's agents by state and each election's members counted", async () => {
  const { formatSummary } = await import("../cli/status.ts");
  await smallFleet(undefined, async ({ call }) => {
    const summary = await json<StatusSummary>(await call("GET", "/v1/status?view=summary"));
    const lines = formatSummary(summary);
    assert.ok(lines.includes("agents (13): 11 online, 2 offline, in 3 regions"), lines.join("\n"));
    assert.ok(lines.includes("  us         4: 2 online, 2 offline"), lines.join("\n"));
    const running = summary.rollouts.find((r) => r.state === "running")!;
    assert.ok(
      lines.some((l) => l.startsWith(`  #${running.id} resnet v2 → all regions: running, `)),
      lines.join("\n"),
    );
    for (const e of running.elections) {
      assert.ok(
        lines.some((l) =>
          l.startsWith(`    election ${e.manifestId} ${e.region}: `) &&
          l.includes(`${e.pending}/${e.members} pending`)
        ),
        e.manifestId,
      );
    }
    assert.ok(!lines.some((l) => l.includes("eu-00:")), "no line per device");
  });
});
