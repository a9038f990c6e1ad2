/**
 * Specification of the swarm client (transfer/swarm_client.ts, issue 15) with
 * real blob servers on 127.0.0.1: a blob downloaded piece by piece from
 * several peers lands whole, every piece verified against the piece list; a
 * corrupt source is dropped and its piece fetched elsewhere; a source that
 * dies mid-piece costs that piece only; a partial holder answers NOT_YET for
 * what it lacks and serves what it has; the control plane (fallback) is used
 * only when no peer is left; upload caps hold with several clients; and a
 * download aborted half way resumes by piece.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PER_SOURCE } from "../transfer/swarm_client.ts";
import { blake3 } from "../kernel/blake3.ts";
import { BlobServer, type BlobServerOptions } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { buildPieceListFromBytes, type PieceList, pieceRange } from "../transfer/piece_list.ts";
import { FilePieceStore, MemoryPieceStore, type PieceStore } from "../transfer/piece_store.ts";
import {
  downloadPieces,
  type DownloadPiecesOptions,
  SwarmDownloadError,
  type SwarmSourceStats,
} from "../transfer/swarm_client.ts";
import { randomBytes, readFile, withTempDir } from "./helpers.ts";
import { sourceOf, storeWith, type SwarmIdentity, swarmIdentity } from "./support/swarm.ts";

const HOST = "127.0.0.1";
const KiB = 1024;
/** 17 pieces of 64 KiB, the last one short. */
const BLOB = randomBytes(16 * 64 * KiB + 4321, 1515);
const DIGEST = blake3(BLOB);
const LIST: PieceList = buildPieceListFromBytes(BLOB, 64 * KiB);

interface Swarm {
  readonly id: SwarmIdentity;
  readonly dir: string;
  /** A server holding the whole blob. */
  holder(name: string, extra?: Partial<BlobServerOptions>): Promise<BlobServer>;
  /** A server holding only what `partial` holds. */
  partialHolder(partial: PieceStore, notYetHoldMs?: number): Promise<BlobServer>;
  /** A store for the downloaded blob at `dir/<name>/blob`. */
  fileStore(name: string): Promise<{ store: FilePieceStore; destination: string; resumed: number }>;
  /** Options downloading into `store` as node `me`. */
  options(store: PieceStore, extra: Partial<DownloadPiecesOptions>): Promise<DownloadPiecesOptions>;
}

async function withSwarm(fn: (swarm: Swarm) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const id = await swarmIdentity();
    const servers: BlobServer[] = [];
    const swarm: Swarm = {
      id,
      dir,
      async holder(name, extra = {}) {
        const server = BlobServer.start({
          hostname: HOST,
          store: await storeWith(`${dir}/${name}`, BLOB),
          ...id.serverAuth,
          ...extra,
        });
        servers.push(server);
        return server;
      },
      async partialHolder(partial, notYetHoldMs) {
        const server = BlobServer.start({
          hostname: HOST,
          store: await BlobStore.open(`${dir}/empty-${servers.length}`),
          ...id.serverAuth,
          notYetHoldMs,
        });
        server.sharePartial(DIGEST, partial);
        servers.push(server);
        return server;
      },
      async fileStore(name) {
        await Deno.mkdir(`${dir}/${name}`, { recursive: true });
        const destination = `${dir}/${name}/blob`;
        const opened = await FilePieceStore.open(LIST, {
          partialPath: `${dir}/${name}/blob.partial`,
          destination,
        });
        return { store: opened.store, destination, resumed: opened.resumedPieces };
      },
      async options(store, extra) {
        return {
          store,
          sources: [],
          credentials: await id.credentials("me", DIGEST),
          ...extra,
        };
      },
    };
    try {
      await fn(swarm);
    } finally {
      for (const server of servers) await server.close();
    }
  });
}

function statsOf(stats: readonly SwarmSourceStats[], label: string): SwarmSourceStats {
  const found = stats.find((s) => s.label === label);
  assert.ok(found, `no stats for ${label}`);
  return found;
}

/** A port nothing listens on (a server started and closed). */
async function deadPort(): Promise<number> {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  const port = listener.addr.port;
  listener.close();
  await Promise.resolve();
  return port;
}

Deno.test("a blob downloaded from three holders arrives whole, every piece verified once, and the fallback is not used while peers deliver", async () => {
  await withSwarm(async (swarm) => {
    const holders = await Promise.all(["a", "b", "c"].map((n) => swarm.holder(n)));
    const cp = await swarm.holder("cp");
    const { store, destination } = await swarm.fileStore("me");
    const seen: number[] = [];
    try {
      const result = await downloadPieces(
        await swarm.options(store, {
          sources: holders.map((h, i) => sourceOf(h, `peer ${i}`)),
          fallback: sourceOf(cp, "control plane"),
          onPiece: (i) => seen.push(i),
        }),
      );
      assert.equal(result.pieceCount, LIST.pieceCount);
      assert.equal(result.piecesFetched, LIST.pieceCount);
      assert.equal(result.fallbackBytes, 0);
      assert.equal(cp.bytesServed, 0);
      assert.equal(result.bytesReceived, BLOB.length);
      assert.deepEqual([...seen].sort((x, y) => x - y), [...Array(LIST.pieceCount).keys()]);
      assert.equal(result.sources.reduce((n, s) => n + s.pieces, 0), LIST.pieceCount);
      for (const s of result.sources) assert.equal(s.dropped, null);
    } finally {
      await store.close();
    }
    assert.deepEqual(await readFile(destination), BLOB);
  });
});

Deno.test("with two stripes, the even pieces come from the first source and the odd ones from the second, in order, both at once", async () => {
  await withSwarm(async (swarm) => {
    const even = await swarm.holder("even");
    const odd = await swarm.holder("odd");
    const store = new MemoryPieceStore(LIST);
    const seen: number[] = [];
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [sourceOf(even, "even"), sourceOf(odd, "odd")],
        stripes: 2,
        startPiece: 0,
        onPiece: (i) => seen.push(i),
      }),
    );
    assert.equal(statsOf(result.sources, "even").pieces, Math.ceil(LIST.pieceCount / 2));
    assert.equal(statsOf(result.sources, "odd").pieces, Math.floor(LIST.pieceCount / 2));
    for (const parity of [0, 1]) {
      const stripe = seen.filter((i) => i % 2 === parity);
      assert.deepEqual(stripe, [...stripe].sort((x, y) => x - y), "each stripe in order");
    }
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("with two stripes, a stripe whose source is gone goes on from the sources after the first two, never from the other stripe's", async () => {
  await withSwarm(async (swarm) => {
    const odd = await swarm.holder("odd");
    const leader = await swarm.holder("leader");
    const store = new MemoryPieceStore(LIST);
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [
          { hostname: HOST, port: await deadPort(), label: "gone" },
          sourceOf(odd, "odd"),
          sourceOf(leader, "leader"),
        ],
        stripes: 2,
        startPiece: 0,
      }),
    );
    assert.equal(statsOf(result.sources, "gone").pieces, 0);
    assert.equal(statsOf(result.sources, "leader").pieces, Math.ceil(LIST.pieceCount / 2));
    assert.equal(statsOf(result.sources, "odd").pieces, Math.floor(LIST.pieceCount / 2));
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("with two stripes, a stripe left without a source is taken from the fallback while the other stripe's source goes on", async () => {
  await withSwarm(async (swarm) => {
    const odd = await swarm.holder("odd");
    const cp = await swarm.holder("cp");
    const store = new MemoryPieceStore(LIST);
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [{ hostname: HOST, port: await deadPort(), label: "gone" }, sourceOf(odd, "odd")],
        fallback: sourceOf(cp, "control plane"),
        stripes: 2,
        startPiece: 0,
      }),
    );
    assert.notEqual(statsOf(result.sources, "gone").dropped, null);
    assert.equal(statsOf(result.sources, "odd").pieces, Math.floor(LIST.pieceCount / 2));
    assert.equal(statsOf(result.sources, "control plane").pieces, Math.ceil(LIST.pieceCount / 2));
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("with two stripes and no fallback, a stripe left without a source fails the download, saying so", async () => {
  await withSwarm(async (swarm) => {
    const odd = await swarm.holder("odd");
    const store = new MemoryPieceStore(LIST);
    await assert.rejects(
      downloadPieces(
        await swarm.options(store, {
          sources: [
            { hostname: HOST, port: await deadPort(), label: "gone" },
            sourceOf(odd, "odd"),
          ],
          stripes: 2,
          startPiece: 0,
        }),
      ),
      (err) => err instanceof SwarmDownloadError && /every source failed/.test(err.message),
    );
  });
});

Deno.test("a piece from a corrupt source is refused, the source dropped, and the piece fetched from another source", async () => {
  await withSwarm(async (swarm) => {
    const corrupt = await swarm.holder("bad", { faults: { serveCorrupt: true } });
    const good = await swarm.holder("good");
    const store = new MemoryPieceStore(LIST);
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [sourceOf(corrupt, "corrupt"), sourceOf(good, "good")],
        startPiece: 0,
        parallel: 2,
      }),
    );
    const bad = statsOf(result.sources, "corrupt");
    assert.match(bad.dropped ?? "", /does not match its digest/);
    assert.equal(bad.pieces, 0);
    assert.ok(bad.bytes > 0, "the corrupt source was asked");
    assert.equal(statsOf(result.sources, "good").pieces, LIST.pieceCount);
    assert.equal(corrupt.servedByDigest().size, 1);
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("a source that dies mid-piece costs that piece only: the piece is fetched from another source and the download completes", async () => {
  await withSwarm(async (swarm) => {
    // Every answer of this source stops after 1000 body bytes, as if it died mid-piece.
    const dying = await swarm.holder("dying", {
      faults: { serveDropAfterBytes: 1000, serveDropTimes: Infinity },
    });
    const good = await swarm.holder("good");
    const store = new MemoryPieceStore(LIST);
    let killed = false;
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [sourceOf(dying, "dying"), sourceOf(good, "good")],
        startPiece: 0,
        parallel: 2,
        onPiece: () => {
          // And then it is killed for good (its open connections closed too).
          if (!killed) {
            killed = true;
            void dying.close();
          }
        },
      }),
    );
    const d = statsOf(result.sources, "dying");
    assert.equal(d.pieces, 0);
    assert.ok(d.failures >= 1 && d.failures <= 3, `${d.failures} failures`);
    // Three failures in a row drop a source (whether it got there depends on the other's speed).
    if (d.failures === 3) assert.notEqual(d.dropped, null);
    assert.equal(statsOf(result.sources, "good").pieces, LIST.pieceCount);
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("a partial holder answers NOT_YET for the pieces it lacks and serves the ones it has, as it gets them", async () => {
  await withSwarm(async (swarm) => {
    const holderPieces = new MemoryPieceStore(LIST);
    const put = (i: number) => {
      const { offset, length } = pieceRange(LIST, i);
      return holderPieces.putPiece(i, BLOB.subarray(offset, offset + length));
    };
    // The holder is half way down the blob (pieces travel in order down a region's line).
    const half = Math.ceil(LIST.pieceCount / 2);
    for (let i = 0; i < half; i++) await put(i);
    const partial = await swarm.partialHolder(holderPieces, 0); // NOT_YET at once
    const store = new MemoryPieceStore(LIST);
    let got = 0;
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [sourceOf(partial, "partial")],
        startPiece: 0,
        onPiece: () => {
          // The holder's own download goes on: once we have all it had, it gets the rest.
          if (++got === half) {
            void (async () => {
              await new Promise((r) => setTimeout(r, 300)); // we are asked NOT_YET meanwhile
              for (let i = half; i < LIST.pieceCount; i++) await put(i);
            })();
          }
        },
      }),
    );
    const p = statsOf(result.sources, "partial");
    assert.equal(p.pieces, LIST.pieceCount);
    assert.ok(p.refusals >= 1);
    assert.ok(partial.notYet >= 1);
    assert.equal(p.failures, 0);
    assert.equal(p.dropped, null);
    assert.equal(partial.bytesServed, BLOB.length);
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("a request for a piece a partial holder is about to get waits for it (the hold) and is served without a NOT_YET", async () => {
  await withSwarm(async (swarm) => {
    const holderPieces = new MemoryPieceStore(LIST);
    const partial = await swarm.partialHolder(holderPieces, 5_000);
    const store = new MemoryPieceStore(LIST);
    // The holder gets its pieces one by one, 20 ms apart, while we download from it.
    const feeding = (async () => {
      for (let i = 0; i < LIST.pieceCount; i++) {
        await new Promise((r) => setTimeout(r, 20));
        const { offset, length } = pieceRange(LIST, i);
        await holderPieces.putPiece(i, BLOB.subarray(offset, offset + length));
      }
    })();
    const result = await downloadPieces(
      await swarm.options(store, { sources: [sourceOf(partial, "partial")], startPiece: 0 }),
    );
    await feeding;
    assert.equal(statsOf(result.sources, "partial").pieces, LIST.pieceCount);
    assert.equal(partial.notYet, 0, "every request was held until its piece came");
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("the fallback is used when every peer is gone, and without a fallback the download fails saying why", async () => {
  await withSwarm(async (swarm) => {
    const cp = await swarm.holder("cp");
    const dead = [await deadPort(), await deadPort()];
    const sources = dead.map((port, i) => ({ hostname: HOST, port, label: `gone ${i}` }));
    const store = new MemoryPieceStore(LIST);
    const result = await downloadPieces(
      await swarm.options(store, { sources, fallback: sourceOf(cp, "control plane") }),
    );
    assert.equal(result.fallbackBytes, BLOB.length);
    assert.equal(statsOf(result.sources, "control plane").pieces, LIST.pieceCount);
    for (const s of result.sources.filter((s) => !s.fallback)) {
      // 3 failures in a row drop a source; requests already on their way to it may add one each.
      assert.ok(s.failures >= 3 && s.failures <= 3 + PER_SOURCE - 1, `${s.failures} failures`);
      assert.notEqual(s.dropped, null);
    }
    assert.deepEqual(store.bytes(), BLOB);

    const alone = new MemoryPieceStore(LIST);
    await assert.rejects(
      downloadPieces(await swarm.options(alone, { sources })),
      (err: unknown) =>
        err instanceof SwarmDownloadError && /every source failed/.test(err.message) &&
        err.sources.length === 2,
    );
    assert.equal(alone.heldCount, 0);
  });
});

Deno.test("with maxUploads 1, three clients downloading at once from one holder all finish and the holder never has more than one body in flight", async () => {
  await withSwarm(async (swarm) => {
    const holder = await swarm.holder("one-slot", { maxUploads: 1 });
    const stores = [0, 1, 2].map(() => new MemoryPieceStore(LIST));
    const results = await Promise.all(
      stores.map(async (store, i) =>
        downloadPieces(
          await swarm.options(store, {
            sources: [sourceOf(holder, "holder")],
            credentials: await swarm.id.credentials(`client-${i}`, DIGEST),
          }),
        )
      ),
    );
    for (const store of stores) assert.deepEqual(store.bytes(), BLOB);
    assert.equal(holder.peakUploads, 1);
    assert.equal(holder.uploadsInFlight, 0);
    assert.equal(holder.bytesServed, 3 * BLOB.length);
    // Every BUSY answer the holder gave was a refusal some client counted.
    const refusals = results.reduce((n, r) => n + r.sources[0].refusals, 0);
    assert.equal(refusals, holder.busy);
  });
});

Deno.test("a download aborted half way resumes by piece: the second run fetches only the missing pieces", async () => {
  await withSwarm(async (swarm) => {
    const holder = await swarm.holder("h");
    const first = await swarm.fileStore("me");
    assert.equal(first.resumed, 0);
    const stop = new AbortController();
    let pieces = 0;
    await assert.rejects(
      downloadPieces(
        await swarm.options(first.store, {
          sources: [sourceOf(holder, "holder")],
          parallel: 1,
          signal: stop.signal,
          onPiece: () => {
            if (++pieces === 5) stop.abort(new Error("stopped by the test"));
          },
        }),
      ),
      /stopped by the test/,
    );
    assert.equal(first.store.heldCount, 5);
    let missingBytes = 0;
    for (let i = 0; i < LIST.pieceCount; i++) {
      if (!first.store.hasPiece(i)) missingBytes += pieceRange(LIST, i).length;
    }
    await first.store.close();
    const servedBefore = holder.bytesServed;

    // A new process: the store reopened from its files, the kept pieces re-verified.
    const second = await swarm.fileStore("me");
    assert.equal(second.resumed, 5);
    try {
      const result = await downloadPieces(
        await swarm.options(second.store, { sources: [sourceOf(holder, "holder")] }),
      );
      assert.equal(result.piecesResumed, 5);
      assert.equal(result.piecesFetched, LIST.pieceCount - 5);
      // Exactly the missing pieces crossed the network; the kept ones were not fetched again.
      assert.equal(result.bytesReceived, missingBytes);
      assert.equal(holder.bytesServed - servedBefore, missingBytes);
    } finally {
      await second.store.close();
    }
    assert.deepEqual(await readFile(second.destination), BLOB);
  });
});

Deno.test("a resumed store forgets a kept piece whose bytes were damaged on disk, and fetches it again", async () => {
  await withSwarm(async (swarm) => {
    const holder = await swarm.holder("h");
    const first = await swarm.fileStore("me");
    for (const i of [0, 1, 2]) {
      const { offset, length } = pieceRange(LIST, i);
      await first.store.putPiece(i, BLOB.subarray(offset, offset + length));
    }
    await first.store.close();
    const file = await Deno.open(`${swarm.dir}/me/blob.partial`, { write: true });
    await file.seek(64 * KiB + 7, Deno.SeekMode.Start);
    await file.write(new Uint8Array([0xee]));
    file.close();
    const second = await swarm.fileStore("me");
    assert.equal(second.resumed, 2);
    assert.equal(second.store.hasPiece(1), false);
    try {
      const result = await downloadPieces(
        await swarm.options(second.store, { sources: [sourceOf(holder, "holder")] }),
      );
      assert.equal(result.piecesFetched, LIST.pieceCount - 2);
    } finally {
      await second.store.close();
    }
    assert.deepEqual(await readFile(second.destination), BLOB);
  });
});

Deno.test("when no peer delivers a byte for stallMs, the fallback takes over", async () => {
  await withSwarm(async (swarm) => {
    // A peer that has started its own download but holds nothing yet: NOT_YET for every piece.
    const empty = await swarm.partialHolder(new MemoryPieceStore(LIST));
    const cp = await swarm.holder("cp");
    const store = new MemoryPieceStore(LIST);
    const result = await downloadPieces(
      await swarm.options(store, {
        sources: [sourceOf(empty, "empty peer")],
        fallback: sourceOf(cp, "control plane"),
        stallMs: 300,
      }),
    );
    assert.equal(result.fallbackBytes, BLOB.length);
    assert.ok(statsOf(result.sources, "empty peer").refusals >= 1);
    assert.equal(statsOf(result.sources, "empty peer").dropped, null);
    assert.deepEqual(store.bytes(), BLOB);
  });
});

Deno.test("a source that accepts and then says nothing fails after the idle timeout, and its piece comes from another source", async () => {
  await withSwarm(async (swarm) => {
    const silent = Deno.listen({ hostname: HOST, port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      try {
        for await (const conn of silent) held.push(conn);
      } catch {
        // Closed by the test.
      }
    })();
    const good = await swarm.holder("good");
    const store = new MemoryPieceStore(LIST);
    try {
      const result = await downloadPieces(
        await swarm.options(store, {
          sources: [
            { hostname: HOST, port: silent.addr.port, label: "silent" },
            sourceOf(good, "good"),
          ],
          parallel: 2,
          idleTimeoutMs: 200,
        }),
      );
      const s = statsOf(result.sources, "silent");
      assert.ok(s.failures >= 1);
      assert.equal(s.pieces, 0);
      assert.deepEqual(store.bytes(), BLOB);
    } finally {
      silent.close();
      for (const conn of held) conn.close();
      await accepting;
    }
  });
});
