/**
 * Operators' tokens and the audit log in the control plane's state store
 * (controlplane/state_store.ts), as a contract run against the SQLite store
 * and the in-memory one of the tests: a token comes back by its hash, names
 * are never reused, revoking marks it; the audit log answers newest first and
 * keeps only its newest entries. Then SQLite alone: a database made before
 * tokens existed opens with its data, and a second connection (the `token`
 * command beside a running control plane) sees and makes changes.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { ConflictError } from "../kernel/errors.ts";
import { DATABASE_FILE, SqliteStore } from "../controlplane/sqlite_store.ts";
import type { AuditRecord, StateStore, TokenRecord } from "../controlplane/state_store.ts";
import { MemoryStore } from "./support/memory_store.ts";
import { withTempDir } from "./helpers.ts";

const ALICE: TokenRecord = {
  name: "alice",
  role: "admin",
  hash: "a".repeat(64),
  created: 10,
  revoked: null,
};
const CI: TokenRecord = {
  name: "ci",
  role: "deployer",
  hash: "c".repeat(64),
  created: 20,
  revoked: null,
};

function entry(n: number): AuditRecord {
  return {
    at: 100 + n,
    token: n % 2 === 0 ? "alice" : null,
    role: n % 2 === 0 ? "admin" : null,
    action: "POST /v1/rollouts",
    target: n % 3 === 0 ? null : `resnet v${n}`,
    status: n % 2 === 0 ? 201 : 401,
    reason: n % 2 === 0 ? "ok" : "no token",
  };
}

const STORES: readonly [string, (path: string, auditKeep?: number) => Promise<StateStore>][] = [
  ["SQLite", (path, auditKeep) => SqliteStore.open(path, { auditKeep })],
  ["in memory", (_path, auditKeep) => Promise.resolve(new MemoryStore({ auditKeep }))],
];

function contract(
  name: string,
  fn: (store: StateStore) => Promise<void>,
  auditKeep?: number,
): void {
  for (const [kind, open] of STORES) {
    Deno.test(`${name} (${kind})`, async () => {
      await withTempDir(async (dir) => {
        const store = await open(`${dir}/${DATABASE_FILE}`, auditKeep);
        try {
          await fn(store);
        } finally {
          await store.close();
        }
      });
    });
  }
}

contract(
  "a token is found by its hash and listed oldest first; an unknown hash finds none",
  async (store) => {
    await store.addToken(CI);
    await store.addToken(ALICE);
    assert.deepEqual(await store.tokenByHash(ALICE.hash), ALICE);
    assert.equal(await store.tokenByHash("f".repeat(64)), undefined);
    assert.deepEqual(await store.tokens(), [ALICE, CI]);
  },
);

contract(
  "a second token of a name is refused with a conflict, even after revoking the first",
  async (store) => {
    await store.addToken(ALICE);
    await assert.rejects(
      store.addToken({ ...CI, name: "alice" }),
      (err) => err instanceof ConflictError && /already exists/.test(err.message),
    );
    assert.equal(await store.revokeToken("alice", 50), true);
    await assert.rejects(store.addToken({ ...CI, name: "alice" }), ConflictError);
    assert.deepEqual((await store.tokens()).map((t) => t.name), ["alice"]);
  },
);

contract(
  "revoking marks the token with the time, once; an unknown name revokes nothing",
  async (store) => {
    await store.addToken(ALICE);
    await store.addToken(CI);
    assert.equal(await store.revokeToken("ci", 77), true);
    assert.equal(await store.revokeToken("ci", 88), false, "already revoked");
    assert.equal(await store.revokeToken("nobody", 88), false);
    assert.deepEqual(await store.tokenByHash(CI.hash), { ...CI, revoked: 77 });
    assert.deepEqual(await store.tokenByHash(ALICE.hash), ALICE);
  },
);

contract("the audit log answers newest first, as many as asked", async (store) => {
  for (let n = 0; n < 5; n++) await store.addAudit(entry(n));
  assert.deepEqual(await store.audit(100), [4, 3, 2, 1, 0].map(entry));
  assert.deepEqual(await store.audit(2), [4, 3].map(entry));
  assert.deepEqual(await store.audit(0), []);
});

contract("the audit log keeps only its newest entries", async (store) => {
  for (let n = 0; n < 10; n++) await store.addAudit(entry(n));
  assert.deepEqual(await store.audit(100), [9, 8, 7, 6].map(entry));
}, 4);

Deno.test("a database made before tokens and the audit log opens with its data and gains both", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/${DATABASE_FILE}`;
    const old = new DatabaseSync(path);
    old.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      INSERT INTO meta VALUES ('boot', '7');
      CREATE TABLE versions (model TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL,
        size INTEGER NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (model, version));
      INSERT INTO versions VALUES ('resnet', 'v1', '${"a".repeat(64)}', 1000, 10);
    `);
    old.close();
    const store = await SqliteStore.open(path);
    try {
      assert.equal(await store.nextBoot(), 8);
      assert.deepEqual((await store.versions()).map((v) => v.version), ["v1"]);
      assert.deepEqual(await store.tokens(), []);
      await store.addToken(ALICE);
      await store.addAudit(entry(0));
      assert.deepEqual(await store.audit(10), [entry(0)]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("a second connection to the same database sees the first one's tokens and revokes them", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/${DATABASE_FILE}`;
    const running = await SqliteStore.open(path);
    try {
      const cli = await SqliteStore.open(path);
      try {
        await cli.addToken(ALICE);
        assert.deepEqual(await running.tokenByHash(ALICE.hash), ALICE);
        await running.addAudit(entry(0));
        assert.equal(await cli.revokeToken("alice", 99), true);
        assert.equal((await running.tokenByHash(ALICE.hash))?.revoked, 99);
      } finally {
        await cli.close();
      }
    } finally {
      await running.close();
    }
  });
});

Deno.test("the tokens table has no column for the token itself: name, role, hash, created, revoked", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/${DATABASE_FILE}`;
    const store = await SqliteStore.open(path);
    await store.addToken(ALICE);
    await store.close();
    const db = new DatabaseSync(path);
    try {
      const columns = (db.prepare("PRAGMA table_info(tokens)").all() as { name: string }[])
        .map((c) => c.name);
      assert.deepEqual(columns, ["name", "role", "hash", "created", "revoked"]);
    } finally {
      db.close();
    }
  });
});
