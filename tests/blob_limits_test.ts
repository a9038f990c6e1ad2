/**
 * Specification of the blob transfer limits against bad peers (issue 14):
 * a follower leaves a leader that trickles, says nothing, has nothing to serve
 * or closes, for the control plane, which finishes the download; one address
 * holding 64 trickling connections does not make the server answer BUSY to a
 * device at another address; a request trickled byte by byte and a reader
 * too slow are cut. Addresses 127.0.15.101-112 (tests/fleet_e2e_test.ts uses
 * 127.0.15.1-11). No assertion on durations: the
 * windows are short only so the tests end soon.
 */

import assert from "node:assert/strict";
import * as net from "node:net";
import { blake3 } from "../kernel/blake3.ts";
import { BlobStatus, encodeRequest, encodeResponseHeader } from "../transfer/blob_protocol.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { type BlobSource, downloadBlob, type DownloadOptions } from "../transfer/blob_client.ts";
import type { MinRate } from "../transfer/idle_watchdog.ts";
import { randomBytes, readFile, withTempDir, writeFile } from "./helpers.ts";
import { downloadInto } from "./support/downloads.ts";

const MiB = 1024 * 1024;
const SIZE = 2 * MiB + 777;
const BLOB = randomBytes(SIZE, 1414);
const DIGEST = blake3(BLOB);
/** A short window, so that a cut comes soon; the rate is the default one. */
const FAST_CUT: MinRate = { bytesPerSecond: 64 * 1024, windowMs: 1000 };

/** A store in `dir/name` holding `blob`. */
async function seededStore(dir: string, name: string, blob = BLOB): Promise<BlobStore> {
  const store = await BlobStore.open(`${dir}/${name}`);
  await writeFile(`${dir}/${name}.src`, blob);
  await store.importFile(`${dir}/${name}.src`);
  return store;
}

function sourceOf(server: { hostname: string; port: number }, label: string): BlobSource {
  return { hostname: server.hostname, port: server.port, label };
}

/** Download options for `BLOB` into a fresh store in `dir/local`. */
function into(
  dir: string,
  sources: BlobSource[],
  extra: Partial<DownloadOptions> = {},
): Promise<DownloadOptions> {
  return downloadInto(dir, { digest: DIGEST, size: SIZE }, sources, extra);
}

async function eventually(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 20) {
    if (waited > 30_000) assert.fail(`still not ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * A rogue leader on `hostname`: each connection is handed to `behave` (which
 * may trickle, say nothing or close). Closing it closes every connection.
 */
function rogue(
  hostname: string,
  behave: (conn: Deno.TcpConn, stopped: () => boolean) => Promise<void>,
): { hostname: string; port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname, port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const handlers: Promise<void>[] = [];
  let stopped = false;
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      handlers.push(
        behave(conn, () => stopped).catch(() => {}).finally(() => {
          try {
            conn.close();
          } catch {
            // Already closed.
          }
        }),
      );
    }
  })().catch(() => {});
  return {
    hostname,
    port: listener.addr.port,
    async close() {
      stopped = true;
      listener.close();
      await accepting;
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await Promise.allSettled(handlers);
    },
  };
}

/** Reads a whole request, then answers OK for the whole blob and sends one byte every 50 ms. */
async function trickle(conn: Deno.TcpConn, stopped: () => boolean): Promise<void> {
  const request = new Uint8Array(45);
  for (let filled = 0; filled < request.length;) {
    const n = await conn.read(request.subarray(filled));
    if (n === null) return;
    filled += n;
  }
  const header = encodeResponseHeader({ status: BlobStatus.OK, length: SIZE });
  for (let done = 0; done < header.length;) done += await conn.write(header.subarray(done));
  for (let sent = 0; sent < SIZE && !stopped(); sent++) {
    await conn.write(BLOB.subarray(sent, sent + 1));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test("a follower leaves a leader that trickles for the control plane, which finishes the download", async () => {
  await withTempDir(async (dir) => {
    const leader = rogue("127.0.15.101", trickle);
    const cp = BlobServer.start({ hostname: "127.0.15.102", store: await seededStore(dir, "cp") });
    try {
      const options = await into(dir, [sourceOf(leader, "leader"), sourceOf(cp, "control-plane")], {
        minRate: FAST_CUT,
        // The trickle keeps an idle timeout quiet: only the minimum rate cuts it.
        idleTimeoutMs: 600_000,
      });
      const result = await downloadBlob(options);
      assert.equal(result.source, "control-plane");
      assert.equal(result.attempts[0].label, "leader");
      assert.match(result.attempts[0].error ?? "", /below the minimum rate/);
      assert.ok(result.attempts[0].bytes > 0, "the leader did send a few bytes");
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await leader.close();
      await cp.close();
    }
  });
});

Deno.test("a follower leaves a leader that accepts and says nothing, even with a long idle timeout", async () => {
  await withTempDir(async (dir) => {
    const leader = rogue("127.0.15.103", async (_conn, stopped) => {
      while (!stopped()) await new Promise((resolve) => setTimeout(resolve, 50));
    });
    const cp = BlobServer.start({ hostname: "127.0.15.104", store: await seededStore(dir, "cp") });
    try {
      const options = await into(dir, [sourceOf(leader, "leader"), sourceOf(cp, "control-plane")], {
        minRate: FAST_CUT,
        idleTimeoutMs: 600_000,
      });
      const result = await downloadBlob(options);
      assert.equal(result.source, "control-plane");
      assert.equal(result.attempts.length, 2);
      assert.match(result.attempts[0].error ?? "", /below the minimum rate/);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await leader.close();
      await cp.close();
    }
  });
});

Deno.test("a follower leaves a leader that said ready but has nothing to serve (NOT_FOUND)", async () => {
  await withTempDir(async (dir) => {
    const empty = await BlobStore.open(`${dir}/empty`);
    const leader = BlobServer.start({ hostname: "127.0.15.105", store: empty });
    const cp = BlobServer.start({ hostname: "127.0.15.106", store: await seededStore(dir, "cp") });
    try {
      const options = await into(dir, [sourceOf(leader, "leader"), sourceOf(cp, "control-plane")], {
        minRate: FAST_CUT,
      });
      const result = await downloadBlob(options);
      assert.equal(result.source, "control-plane");
      assert.match(result.attempts[0].error ?? "", /NOT_FOUND/);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await leader.close();
      await cp.close();
    }
  });
});

Deno.test("a follower leaves a leader that said ready but closes every connection", async () => {
  await withTempDir(async (dir) => {
    const leader = rogue("127.0.15.107", async () => {});
    const cp = BlobServer.start({ hostname: "127.0.15.108", store: await seededStore(dir, "cp") });
    try {
      const options = await into(dir, [sourceOf(leader, "leader"), sourceOf(cp, "control-plane")], {
        minRate: FAST_CUT,
      });
      const result = await downloadBlob(options);
      assert.equal(result.source, "control-plane");
      const atLeader = result.attempts.filter((a) => a.label === "leader");
      assert.ok(atLeader.length >= 1);
      assert.ok(atLeader.every((a) => a.error !== undefined && a.bytes === 0));
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await leader.close();
      await cp.close();
    }
  });
});

Deno.test("64 connections trickling from one address do not make the server answer BUSY to a device at another address", async () => {
  await withTempDir(async (dir) => {
    const server = BlobServer.start({
      hostname: "127.0.15.109",
      store: await seededStore(dir, "cp"),
    });
    const request = encodeRequest({ digest: DIGEST, offset: 0 });
    const sockets: net.Socket[] = [];
    const trickling = setInterval(() => {
      for (const socket of sockets) {
        if (!socket.destroyed) socket.write(request.subarray(0, 1));
      }
    }, 1000);
    try {
      for (let i = 0; i < 64; i++) {
        const socket = net.connect({
          host: server.hostname,
          port: server.port,
          localAddress: "127.0.15.110",
        });
        socket.on("error", () => {});
        socket.once("connect", () => socket.write(request.subarray(0, 1)));
        sockets.push(socket);
      }
      await eventually(
        () => server.refused + server.connections === 64,
        "every connection of 127.0.15.110 taken or refused",
      );
      assert.equal(server.connections, 4, "the address holds its share, no more");
      assert.equal(server.refused, 60);
      // A device at another address (the kernel's default, 127.0.0.1) is served at its first attempt.
      const options = await into(dir, [sourceOf(server, "control-plane")]);
      const result = await downloadBlob(options);
      assert.equal(result.attempts.length, 1, "no BUSY, no retry");
      assert.equal(result.attempts[0].error, undefined);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      clearInterval(trickling);
      for (const socket of sockets) socket.destroy();
      await server.close();
    }
  });
});

Deno.test("a request trickled byte by byte is cut at the request deadline", async () => {
  await withTempDir(async (dir) => {
    const server = BlobServer.start({
      hostname: "127.0.15.111",
      store: await seededStore(dir, "cp"),
      requestTimeoutMs: 300,
      idleTimeoutMs: 600_000,
    });
    const conn = await Deno.connect({ hostname: server.hostname, port: server.port });
    try {
      const request = encodeRequest({ digest: DIGEST, offset: 0 });
      const sending = (async () => {
        // 45 bytes, one per 100 ms: the whole request takes longer than the deadline.
        for (let i = 0; i < request.length; i++) {
          await conn.write(request.subarray(i, i + 1));
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })().catch(() => "cut");
      const answer = await conn.read(new Uint8Array(16)).catch(() => null);
      assert.equal(answer, null, "the server closed the connection without an answer");
      await eventually(() => server.cut === 1, "cut");
      assert.equal(server.bytesServed, 0);
      await sending;
    } finally {
      conn.close();
      await server.close();
    }
  });
});

Deno.test("a reader too slow for the minimum rate is cut before it got the blob", async () => {
  await withTempDir(async (dir) => {
    // Larger than what the socket buffers of both sides hold.
    const big = randomBytes(48 * MiB, 1415);
    const digest = blake3(big);
    const server = BlobServer.start({
      hostname: "127.0.15.112",
      store: await seededStore(dir, "big", big),
      minRate: { bytesPerSecond: 4 * MiB, windowMs: 500 },
      idleTimeoutMs: 600_000,
    });
    const conn = await Deno.connect({ hostname: server.hostname, port: server.port });
    try {
      const request = encodeRequest({ digest, offset: 0 });
      for (let done = 0; done < request.length;) done += await conn.write(request.subarray(done));
      const buf = new Uint8Array(1024);
      // 1 KiB every 20 ms: about 50 KiB/s, far below 4 MiB/s.
      while (server.cut === 0) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await eventually(() => server.cut === 1, "cut");
      assert.ok(server.bytesServed < big.length, "the blob was not all sent");
      assert.equal(server.connections, 0);
    } finally {
      conn.close();
      await server.close();
    }
  });
});
