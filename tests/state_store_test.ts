/**
 * The control plane's state store (controlplane/state_store.ts) as a
 * contract, run against the SQLite store (controlplane/sqlite_store.ts) and
 * the in-memory one of the tests (tests/support/memory_store.ts): each kind
 * of record comes back as it was stored, the boot counter grows. Then the
 * SQLite store alone: a reopened store still has every record, and a
 * database from before the rollout plan columns opens with them added.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { DATABASE_FILE, SqliteStore } from "../controlplane/sqlite_store.ts";
import { MemoryStore } from "./support/memory_store.ts";
import {
  type AgentRecord,
  DEFAULT_PLAN,
  type HistoryRecord,
  type PatchRecord,
  type RolloutAgentRecord,
  type StateStore,
  type VersionRecord,
} from "../controlplane/state_store.ts";
import { withTempDir } from "./helpers.ts";

const A = "a".repeat(64);
const B = "b".repeat(64);
const P = "c".repeat(64);

const V1: VersionRecord = { model: "resnet", version: "v1", digest: A, size: 1000, created: 10 };
const V2: VersionRecord = { model: "resnet", version: "v2", digest: B, size: 2000, created: 20 };
const BERT: VersionRecord = { model: "bert", version: "v1", digest: P, size: 5, created: 30 };
const PATCH: PatchRecord = { base: A, target: B, digest: P, size: 77 };
const AGENT: AgentRecord = {
  nodeId: "eu-0",
  region: "eu",
  host: "127.0.0.2",
  udpPort: 7400,
  p2pPort: 7401,
  active: { resnet: A },
  held: [A, B],
  served: 12345,
  startedAt: 111,
  lastSeen: 222,
};
const PROGRESS: RolloutAgentRecord = {
  rolloutId: 1,
  nodeId: "eu-0",
  state: "failed",
  detail: "poisoned: failed 3 times",
  updated: 333,
};
const HISTORY: HistoryRecord[] = [
  { nodeId: "eu-0", model: "resnet", at: 5, event: "running", digest: A, detail: "" },
  { nodeId: "eu-1", model: "resnet", at: 6, event: "running", digest: A, detail: "" },
  { nodeId: "eu-0", model: "resnet", at: 7, event: "failed", digest: B, detail: "health check" },
];

async function withStore(fn: (path: string) => Promise<void>): Promise<void> {
  await withTempDir((dir) => fn(`${dir}/${DATABASE_FILE}`));
}

/** Each implementation, by name, opened on a database path (the memory store ignores it). */
const STORES: readonly [string, (path: string) => Promise<StateStore>][] = [
  ["SQLite", (path) => SqliteStore.open(path)],
  ["in memory", () => Promise.resolve(new MemoryStore())],
];

/** A test of the contract, once per implementation. */
function contract(name: string, fn: (store: StateStore) => Promise<void>): void {
  for (const [kind, open] of STORES) {
    Deno.test(`${name} (${kind})`, async () => {
      await withStore(async (path) => {
        const store = await open(path);
        try {
          await fn(store);
        } finally {
          await store.close();
        }
      });
    });
  }
}

contract("the boot counter starts at 1 and grows by one per boot", async (store) => {
  assert.equal(await store.nextBoot(), 1);
  assert.equal(await store.nextBoot(), 2);
});

contract(
  "removing an agent forgets its row, its progress in every rollout and its history, and nobody else's",
  async (store) => {
    const other = { ...AGENT, nodeId: "eu-1" };
    await store.putAgent(AGENT);
    await store.putAgent(other);
    await store.setRolloutAgent(PROGRESS);
    await store.setRolloutAgent({ ...PROGRESS, rolloutId: 2 });
    await store.setRolloutAgent({ ...PROGRESS, nodeId: "eu-1" });
    for (const h of HISTORY) await store.addHistory(h);
    assert.equal(await store.removeAgent("eu-0"), true);
    assert.deepEqual(await store.agents(), [other]);
    assert.deepEqual((await store.rolloutAgents(1)).map((a) => a.nodeId), ["eu-1"]);
    assert.deepEqual(await store.rolloutAgents(2), []);
    assert.deepEqual(await store.history("eu-0"), []);
    assert.deepEqual(await store.history(), [HISTORY[1]]);
    assert.equal(await store.removeAgent("eu-0"), false, "already gone");
    assert.equal(await store.removeAgent("nobody"), false);
    assert.deepEqual(await store.agents(), [other]);
  },
);

Deno.test("the SQLite boot counter goes on growing across reopenings", async () => {
  await withStore(async (path) => {
    const store = await SqliteStore.open(path);
    assert.equal(await store.nextBoot(), 1);
    assert.equal(await store.nextBoot(), 2);
    await store.close();
    const reopened = await SqliteStore.open(path);
    assert.equal(await reopened.nextBoot(), 3);
    await reopened.close();
  });
});

contract(
  "versions come back by model then age, by name, and a version can be replaced",
  async (store) => {
    for (const v of [V2, BERT, V1]) await store.putVersion(v);
    assert.deepEqual(await store.versions(), [BERT, V1, V2]);
    assert.deepEqual(await store.version("resnet", "v2"), V2);
    assert.equal(await store.version("resnet", "v9"), undefined);
    await store.putVersion({ ...V1, size: 999 });
    assert.equal((await store.version("resnet", "v1"))?.size, 999);
    assert.equal((await store.versions()).length, 3);
  },
);

contract("patches, agents, history and served bytes come back as stored", async (store) => {
  await store.putPatch(PATCH);
  assert.deepEqual(await store.patches(), [PATCH]);
  await store.putAgent({ ...AGENT, nodeId: "us-0" });
  await store.putAgent(AGENT);
  assert.deepEqual((await store.agents()).map((a) => a.nodeId), ["eu-0", "us-0"], "by node id");
  assert.deepEqual((await store.agents())[0], AGENT);
  await store.putAgent({ ...AGENT, lastSeen: 999 });
  assert.equal((await store.agents())[0].lastSeen, 999, "an agent is replaced");
  for (const h of [HISTORY[2], HISTORY[0], HISTORY[1]]) await store.addHistory(h);
  assert.deepEqual(await store.history(), HISTORY, "oldest first");
  assert.deepEqual(await store.history("eu-0"), [HISTORY[0], HISTORY[2]]);
  assert.deepEqual(await store.history("nobody"), []);
  await store.addServed(A, 100);
  await store.addServed(A, 50);
  await store.addServed(B, 7);
  assert.deepEqual(await store.served(), { [A]: 150, [B]: 7 }, "bytes add up");
});

contract(
  "agents and rollout progress written in batches come back as if written one by one, the last of each winning",
  async (store) => {
    const many = Array.from({ length: 1200 }, (_, i) => ({
      ...AGENT,
      nodeId: `d${String(i).padStart(4, "0")}`,
    }));
    await store.putAgents(many);
    await store.putAgents([{ ...many[5], lastSeen: 999 }]);
    const agents = await store.agents();
    assert.equal(agents.length, 1200);
    assert.deepEqual(agents[0], many[0]);
    assert.equal(agents[5].lastSeen, 999, "a batch replaces an agent too");
    await store.setRolloutAgents([
      PROGRESS,
      { ...PROGRESS, nodeId: "eu-1", state: "pending", detail: "" },
      { ...PROGRESS, rolloutId: 2 },
    ]);
    await store.setRolloutAgents([{ ...PROGRESS, state: "active", detail: "", updated: 444 }]);
    assert.deepEqual(await store.rolloutAgents(1), [
      { ...PROGRESS, state: "active", detail: "", updated: 444 },
      { ...PROGRESS, nodeId: "eu-1", state: "pending", detail: "" },
    ]);
    assert.deepEqual(await store.rolloutAgents(2), [{ ...PROGRESS, rolloutId: 2 }]);
    await store.putAgents([]);
    await store.setRolloutAgents([]);
    assert.equal((await store.agents()).length, 1200, "an empty batch changes nothing");
  },
);

contract(
  "rollouts get growing ids, start running, and keep their plan, state, reason and finish time",
  async (store) => {
    const plan = {
      strategy: "canary",
      canary: 10,
      canaryPercent: true,
      batch: 3,
      maxFailures: 0.5,
      rollback: true,
    } as const;
    const first = await store.createRollout({
      model: "resnet",
      version: "v1",
      digest: A,
      region: "eu",
      plan,
      created: 40,
    });
    assert.deepEqual(first, {
      ...plan,
      reason: "",
      id: 1,
      model: "resnet",
      version: "v1",
      digest: A,
      region: "eu",
      state: "running",
      created: 40,
      finished: null,
    });
    const second = await store.createRollout({
      model: "resnet",
      version: "v2",
      digest: B,
      region: null,
      plan: DEFAULT_PLAN,
      created: 50,
    });
    assert.equal(second.id, 2);
    assert.equal(second.region, null);
    await store.setRolloutState(1, "superseded", "superseded by rollout 2", 60);
    assert.deepEqual(await store.rollout(1), {
      ...first,
      state: "superseded",
      reason: "superseded by rollout 2",
      finished: 60,
    });
    await store.setRolloutState(2, "paused", "paused by the operator", null);
    assert.deepEqual((await store.rollouts()).map((r) => [r.id, r.state, r.finished]), [
      [1, "superseded", 60],
      [2, "paused", null],
    ]);
    assert.equal(await store.rollout(3), undefined);
  },
);

contract(
  "an agent's progress in a rollout is replaced, not added, and listed per rollout by node id",
  async (store) => {
    await store.setRolloutAgent({ ...PROGRESS, nodeId: "us-0", state: "waiting", detail: "x" });
    await store.setRolloutAgent({ ...PROGRESS, state: "pending", detail: "r1.b1.e1" });
    await store.setRolloutAgent(PROGRESS);
    await store.setRolloutAgent({ ...PROGRESS, rolloutId: 2, state: "active", detail: "" });
    const agents = await store.rolloutAgents(1);
    assert.deepEqual(agents.map((a) => a.nodeId), ["eu-0", "us-0"]);
    assert.deepEqual(agents[0], PROGRESS);
    assert.deepEqual((await store.rolloutAgents(2)).map((a) => a.state), ["active"]);
    assert.deepEqual(await store.rolloutAgents(3), []);
  },
);

Deno.test("a reopened SQLite store still has every kind of record", async () => {
  await withStore(async (path) => {
    const store = await SqliteStore.open(path);
    await store.putVersion(V1);
    await store.putPatch(PATCH);
    await store.putAgent(AGENT);
    const rollout = await store.createRollout({
      model: "resnet",
      version: "v1",
      digest: A,
      region: null,
      plan: DEFAULT_PLAN,
      created: 1,
    });
    await store.setRolloutAgent(PROGRESS);
    await store.addHistory(HISTORY[0]);
    await store.addServed(A, 42);
    await store.close();
    const reopened = await SqliteStore.open(path);
    assert.deepEqual(await reopened.versions(), [V1]);
    assert.deepEqual(await reopened.patches(), [PATCH]);
    assert.deepEqual(await reopened.agents(), [AGENT]);
    assert.deepEqual(await reopened.rollouts(), [rollout]);
    assert.deepEqual(await reopened.rolloutAgents(1), [PROGRESS]);
    assert.deepEqual(await reopened.history(), [HISTORY[0]]);
    assert.deepEqual(await reopened.served(), { [A]: 42 });
    await reopened.close();
  });
});

Deno.test("a database from before rollout plans opens: its rollouts get the default plan and no reason", async () => {
  await withStore(async (path) => {
    // The first version's rollouts table, with one rollout in it.
    const old = new DatabaseSync(path);
    old.exec(`CREATE TABLE rollouts (
      id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
      digest TEXT NOT NULL, region TEXT, state TEXT NOT NULL, created INTEGER NOT NULL,
      finished INTEGER)`);
    old.prepare(
      "INSERT INTO rollouts (model, version, digest, region, state, created) VALUES (?, ?, ?, ?, ?, ?)",
    ).run("resnet", "v1", A, "eu", "running", 5);
    old.close();
    const store = await SqliteStore.open(path);
    assert.deepEqual(await store.rollouts(), [{
      ...DEFAULT_PLAN,
      reason: "",
      id: 1,
      model: "resnet",
      version: "v1",
      digest: A,
      region: "eu",
      state: "running",
      created: 5,
      finished: null,
    }]);
    const next = await store.createRollout({
      model: "resnet",
      version: "v2",
      digest: B,
      region: null,
      plan: { ...DEFAULT_PLAN, strategy: "rolling", batch: 2 },
      created: 6,
    });
    assert.deepEqual([next.id, next.strategy, next.batch], [2, "rolling", 2]);
    await store.close();
  });
});
