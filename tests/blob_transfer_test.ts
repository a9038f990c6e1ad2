/**
 * Specification of blob transfer end to end (transfer/blob_store.ts,
 * transfer/blob_server.ts, transfer/blob_client.ts) on 127.0.0.1: a blob
 * downloaded from a peer lands verified at its destination or not at all;
 * a dropped transfer resumes instead of starting over; a corrupt, silent or
 * missing source is left for the next one; the server survives bad peers and
 * closes cleanly. Faults are injected per server (its `faults` option; there
 * is no process-wide fault state).
 */

import assert from "node:assert/strict";
import { blake3, toHex } from "../kernel/blake3.ts";
import { VerificationError } from "../kernel/errors.ts";
import {
  BlobStatus,
  decodeResponseHeader,
  encodeRequest,
  RESPONSE_HEADER_SIZE,
} from "../transfer/blob_protocol.ts";
import { BlobServer, type BlobServerOptions } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import {
  BlobDownloadError,
  type BlobSource,
  downloadBlob,
  type DownloadOptions,
} from "../transfer/blob_client.ts";
import { concat, randomBytes, readFile, withTempDir, writeFile } from "./helpers.ts";
import { downloadInto } from "./support/downloads.ts";

const HOST = "127.0.0.1";
const MiB = 1024 * 1024;
/** A blob of a few buffers, not a multiple of any of them. */
const SIZE = 2 * MiB + 12_345;
const BLOB = randomBytes(SIZE, 42);
const DIGEST = blake3(BLOB);

/** A store in `dir/name` holding `BLOB`. */
async function seededStore(dir: string, name = "seed"): Promise<BlobStore> {
  const store = await BlobStore.open(`${dir}/${name}`);
  await writeFile(`${dir}/${name}.src`, BLOB);
  const { digest } = await store.importFile(`${dir}/${name}.src`);
  assert.deepEqual(digest, DIGEST);
  return store;
}

/** A server on 127.0.0.1, any port, without faults unless given. */
function serve(store: BlobStore, options: Partial<BlobServerOptions> = {}): BlobServer {
  return BlobServer.start({ hostname: HOST, port: 0, store, ...options });
}

function sourceOf(server: { hostname: string; port: number }, label: string): BlobSource {
  return { hostname: server.hostname, port: server.port, label };
}

async function closeAll(...servers: BlobServer[]): Promise<void> {
  for (const server of servers) await server.close();
}

/** Download options into a fresh store in `dir/local`, for `BLOB`. */
function into(
  dir: string,
  sources: BlobSource[],
  extra: Partial<DownloadOptions> = {},
): Promise<DownloadOptions> {
  return downloadInto(dir, { digest: DIGEST, size: SIZE }, sources, extra);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Waits (polling) until `condition` holds; fails after a generous 5 s. */
async function eventually(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited > 5000) assert.fail(`still not ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Sends raw request bytes and reads the whole response: header and body. */
async function exchange(
  port: number,
  request: Uint8Array,
): Promise<{ status: number; length: number; body: Uint8Array }> {
  const conn = await Deno.connect({ hostname: HOST, port });
  try {
    for (let done = 0; done < request.length;) done += await conn.write(request.subarray(done));
    const parts: Uint8Array[] = [];
    const buf = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      parts.push(buf.slice(0, n));
    }
    const all = concat(...parts);
    const header = decodeResponseHeader(all.subarray(0, RESPONSE_HEADER_SIZE));
    return { ...header, body: all.subarray(RESPONSE_HEADER_SIZE) };
  } finally {
    conn.close();
  }
}

// The store.

Deno.test("a store keeps an imported file under the hex of its digest, once", async () => {
  await withTempDir(async (dir) => {
    const store = await seededStore(dir);
    assert.equal(store.pathOf(DIGEST), `${dir}/seed/${toHex(DIGEST)}`);
    assert.equal(store.partialPathOf(DIGEST), `${dir}/seed/.partial/${toHex(DIGEST)}.part`);
    assert.deepEqual(await readFile(store.pathOf(DIGEST)), BLOB);
    assert.equal(await store.has(DIGEST), true);
    assert.equal(await store.sizeOf(DIGEST), SIZE);
    assert.deepEqual(await store.lookup(DIGEST), { path: store.pathOf(DIGEST), size: SIZE });
    assert.deepEqual(await store.importFile(`${dir}/seed.src`), { digest: DIGEST, size: SIZE });
    assert.deepEqual(await store.list(), [DIGEST]);
    const names: string[] = [];
    for await (const entry of Deno.readDir(`${dir}/seed`)) names.push(entry.name);
    assert.deepEqual(names.sort(), [".partial", toHex(DIGEST)], "no temporary file is left");

    await store.remove(DIGEST);
    assert.equal(await store.has(DIGEST), false);
    assert.equal(await store.lookup(DIGEST), null);
    assert.deepEqual(await store.list(), []);
    await store.remove(DIGEST);
  });
});

Deno.test("a store lists complete blobs only, not partial downloads or stray files", async () => {
  await withTempDir(async (dir) => {
    const store = await seededStore(dir);
    await writeFile(store.partialPathOf(blake3(new Uint8Array([1]))), new Uint8Array(10));
    await writeFile(`${dir}/seed/notes.txt`, new Uint8Array(3));
    await writeFile(`${dir}/seed/${"A".repeat(64)}`, new Uint8Array(3));
    assert.deepEqual(await store.list(), [DIGEST]);
  });
});

Deno.test("an uploaded stream is stored under its digest when it matches the expected one", async () => {
  await withTempDir(async (dir) => {
    const store = await BlobStore.open(`${dir}/store`);
    const imported = await store.importStream(new Blob([BLOB]).stream(), DIGEST);
    assert.deepEqual(imported, { digest: DIGEST, size: SIZE });
    assert.deepEqual(await readFile(store.pathOf(DIGEST)), BLOB);
  });
});

Deno.test("an uploaded stream whose digest differs from the expected one is refused and not stored", async () => {
  await withTempDir(async (dir) => {
    const store = await BlobStore.open(`${dir}/store`);
    const other = blake3(new Uint8Array([7]));
    await assert.rejects(
      store.importStream(new Blob([BLOB]).stream(), other),
      (err) => err instanceof VerificationError && err.message.includes(toHex(other)),
    );
    const names: string[] = [];
    for await (const entry of Deno.readDir(`${dir}/store`)) names.push(entry.name);
    assert.deepEqual(names, [".partial"], "neither the blob nor a temporary file is left");
  });
});

// Downloads.

Deno.test("a downloaded blob lands verified at its destination, and the partial file is gone", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const progress: number[] = [];
      const options = await into(dir, [sourceOf(server, "cp")], {
        onProgress: (done, total) => {
          assert.equal(total, SIZE);
          progress.push(done);
        },
      });
      const result = await downloadBlob(options);
      assert.deepEqual(result, {
        source: "cp",
        bytesReceived: SIZE,
        resumedFrom: 0,
        attempts: [{ label: "cp", bytes: SIZE }],
      });
      assert.deepEqual(await readFile(options.destination), BLOB);
      assert.equal(await exists(options.partialPath), false);
      assert.equal(progress.at(-1), SIZE);
      assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
      assert.equal(server.bytesServed, SIZE);
      assert.deepEqual(server.servedByDigest(), new Map([[toHex(DIGEST), SIZE]]));
    } finally {
      await server.close();
    }
  });
});

Deno.test("a source without the blob answers NOT_FOUND and the error names it", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await BlobStore.open(`${dir}/empty`));
    try {
      const options = await into(dir, [sourceOf(server, "leader node-7")]);
      await assert.rejects(downloadBlob(options), (err) => {
        assert.ok(err instanceof BlobDownloadError);
        assert.match(err.message, /leader node-7 \(127\.0\.0\.1:\d+\): .*NOT_FOUND/);
        assert.equal(err.exitCode, 3);
        assert.deepEqual(err.attempts.map((a) => a.bytes), [0]);
        return true;
      });
      assert.equal(await exists(options.destination), false);
      assert.equal(await exists(options.partialPath), false);
      assert.equal(server.bytesServed, 0);
    } finally {
      await server.close();
    }
  });
});

Deno.test("a transfer dropped halfway resumes from where it stopped, not from zero", async () => {
  await withTempDir(async (dir) => {
    const half = Math.floor(SIZE / 2);
    const server = serve(await seededStore(dir), {
      faults: { serveDropAfterBytes: half, serveDropTimes: 1 },
    });
    try {
      const options = await into(dir, [sourceOf(server, "cp")]);
      const result = await downloadBlob(options);
      assert.deepEqual(await readFile(options.destination), BLOB);
      assert.equal(result.source, "cp");
      assert.equal(result.attempts.length, 2);
      assert.match(result.attempts[0].error ?? "", /connection closed after \d+ of \d+ bytes/);
      assert.equal(result.attempts[0].bytes, half);
      assert.deepEqual(result.attempts[1], { label: "cp", bytes: SIZE - half });
      assert.ok(result.bytesReceived < 1.1 * SIZE, `received ${result.bytesReceived}`);
      assert.ok(server.bytesServed < 1.1 * SIZE, `served ${server.bytesServed}`);
    } finally {
      await server.close();
    }
  });
});

Deno.test("a partial file left by an earlier run is resumed: only the rest crosses the network", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const options = await into(dir, [sourceOf(server, "cp")]);
      const k = MiB + 3;
      await writeFile(options.partialPath, BLOB.subarray(0, k));
      const result = await downloadBlob(options);
      assert.equal(result.resumedFrom, k);
      assert.equal(result.bytesReceived, SIZE - k);
      assert.equal(server.bytesServed, SIZE - k);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await server.close();
    }
  });
});

Deno.test("a complete partial file is verified and kept without downloading it again", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const options = await into(dir, [sourceOf(server, "cp")]);
      await writeFile(options.partialPath, BLOB);
      const result = await downloadBlob(options);
      assert.equal(result.resumedFrom, SIZE);
      assert.equal(result.bytesReceived, 0);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await server.close();
    }
  });
});

Deno.test("a wrong partial file is not blamed on the source: the blob is fetched again from zero", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const options = await into(dir, [sourceOf(server, "cp")]);
      const k = MiB;
      await writeFile(options.partialPath, randomBytes(k, 7));
      const result = await downloadBlob(options);
      assert.equal(result.source, "cp");
      assert.equal(result.attempts.length, 2);
      assert.match(result.attempts[0].error ?? "", /digest mismatch/);
      assert.equal(result.bytesReceived, SIZE - k + SIZE);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await server.close();
    }
  });
});

Deno.test("a corrupt source is refused and the next source delivers the blob", async () => {
  await withTempDir(async (dir) => {
    const store = await seededStore(dir);
    const corrupt = serve(store, { faults: { serveCorrupt: true } });
    const good = serve(store);
    try {
      const options = await into(dir, [sourceOf(corrupt, "corrupt"), sourceOf(good, "good")]);
      const result = await downloadBlob(options);
      assert.equal(result.source, "good");
      assert.deepEqual(result.attempts.map((a) => a.label), ["corrupt", "good"]);
      assert.match(result.attempts[0].error ?? "", /digest mismatch/);
      assert.equal(result.attempts[1].bytes, SIZE, "the good source sends it all, from zero");
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await closeAll(corrupt, good);
    }
  });
});

Deno.test("when every source is corrupt, nothing is written: no destination, no partial file", async () => {
  await withTempDir(async (dir) => {
    const store = await seededStore(dir);
    const a = serve(store, { faults: { serveCorrupt: true } });
    const b = serve(store, { faults: { serveCorrupt: true } });
    try {
      const options = await into(dir, [sourceOf(a, "a"), sourceOf(b, "b")]);
      await assert.rejects(downloadBlob(options), (err) => {
        assert.ok(err instanceof BlobDownloadError);
        assert.match(
          err.message,
          /a \(127\.0\.0\.1:\d+\): digest mismatch.*; b \(.*digest mismatch/,
        );
        return true;
      });
      assert.equal(await exists(options.destination), false);
      assert.equal(await exists(options.partialPath), false);
    } finally {
      await closeAll(a, b);
    }
  });
});

Deno.test("a source that accepts and never answers times out and the next source is used", async () => {
  await withTempDir(async (dir) => {
    const silent = Deno.listen({ hostname: HOST, port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) held.push(conn);
    })().catch(() => {});
    const good = serve(await seededStore(dir));
    try {
      const options = await into(dir, [sourceOf(silent.addr, "silent"), sourceOf(good, "good")], {
        idleTimeoutMs: 300,
      });
      const result = await downloadBlob(options);
      assert.equal(result.source, "good");
      assert.equal(result.attempts.length, 2, "a timeout is not retried on the same source");
      assert.match(result.attempts[0].error ?? "", /no data for 300 ms .*\(idle timeout\)/);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      silent.close();
      await accepting;
      for (const conn of held) conn.close();
      await good.close();
    }
  });
});

Deno.test("a source that refuses connections is skipped for the next one", async () => {
  await withTempDir(async (dir) => {
    const closed = Deno.listen({ hostname: HOST, port: 0 });
    const port = closed.addr.port;
    closed.close();
    const good = serve(await seededStore(dir));
    try {
      const options = await into(dir, [
        { hostname: HOST, port, label: "gone" },
        sourceOf(good, "good"),
      ]);
      const result = await downloadBlob(options);
      assert.equal(result.source, "good");
      assert.match(result.attempts[0].error ?? "", /cannot connect/);
    } finally {
      await good.close();
    }
  });
});

Deno.test("a source whose blob has another size is refused", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const options = await into(dir, [sourceOf(server, "cp")], { size: SIZE + 1 });
      await assert.rejects(downloadBlob(options), /cp \(.*\): the source offers .*another size/);
      assert.equal(await exists(options.destination), false);
    } finally {
      await server.close();
    }
  });
});

Deno.test("an aborted download keeps its partial file, and the next download resumes it", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const controller = new AbortController();
      const options = await into(dir, [sourceOf(server, "cp")], {
        signal: controller.signal,
        onProgress: () => controller.abort(new Error("operator stop")),
      });
      await assert.rejects(downloadBlob(options), /operator stop/);
      const kept = (await Deno.stat(options.partialPath)).size;
      assert.ok(kept > 0 && kept < SIZE, `kept ${kept}`);
      assert.equal(await exists(options.destination), false);

      const result = await downloadBlob({ ...options, signal: undefined, onProgress: undefined });
      assert.equal(result.resumedFrom, kept);
      assert.deepEqual(await readFile(options.destination), BLOB);
    } finally {
      await server.close();
    }
  });
});

Deno.test("four concurrent downloads of the same blob all succeed", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const results = await Promise.all([0, 1, 2, 3].map(async (i) => {
        const local = await BlobStore.open(`${dir}/local-${i}`);
        const destination = local.pathOf(DIGEST);
        const result = await downloadBlob({
          sources: [sourceOf(server, "cp")],
          digest: DIGEST,
          size: SIZE,
          destination,
          partialPath: local.partialPathOf(DIGEST),
        });
        assert.deepEqual(await readFile(destination), BLOB);
        return result;
      }));
      assert.deepEqual(results.map((r) => r.bytesReceived), [SIZE, SIZE, SIZE, SIZE]);
      assert.equal(server.bytesServed, 4 * SIZE);
    } finally {
      await server.close();
    }
  });
});

// The server against raw peers.

Deno.test("the server answers an offset past the end with BAD_OFFSET, and the end itself with nothing", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const past = await exchange(server.port, encodeRequest({ digest: DIGEST, offset: SIZE + 1 }));
      assert.deepEqual(past, { status: BlobStatus.BAD_OFFSET, length: 0, body: new Uint8Array() });
      const end = await exchange(server.port, encodeRequest({ digest: DIGEST, offset: SIZE }));
      assert.deepEqual(end, { status: BlobStatus.OK, length: 0, body: new Uint8Array() });
      const tail = await exchange(
        server.port,
        encodeRequest({ digest: DIGEST, offset: SIZE - 10 }),
      );
      assert.deepEqual(tail, { status: BlobStatus.OK, length: 10, body: BLOB.subarray(SIZE - 10) });
    } finally {
      await server.close();
    }
  });
});

Deno.test("the server answers an unknown digest with NOT_FOUND and a bad request with BAD_REQUEST", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    try {
      const unknown = blake3(new Uint8Array([1, 2, 3]));
      const missing = await exchange(server.port, encodeRequest({ digest: unknown, offset: 0 }));
      assert.equal(missing.status, BlobStatus.NOT_FOUND);
      const http = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n".padEnd(45, " "));
      const bad = await exchange(server.port, http);
      assert.deepEqual(bad, { status: BlobStatus.BAD_REQUEST, length: 0, body: new Uint8Array() });
      const options = await into(dir, [sourceOf(server, "cp")]);
      await downloadBlob(options);
      assert.deepEqual(await readFile(options.destination), BLOB, "the server is still up");
    } finally {
      await server.close();
    }
  });
});

Deno.test("the server disconnects a client that connects and sends nothing", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir), { idleTimeoutMs: 200 });
    const conn = await Deno.connect({ hostname: HOST, port: server.port });
    try {
      assert.equal(await conn.read(new Uint8Array(16)), null, "the server closed the connection");
      await eventually(() => server.connections === 0, "disconnected");
      assert.equal(server.errors, 1);
    } finally {
      conn.close();
      await server.close();
    }
  });
});

Deno.test("the server answers BUSY beyond maxConnections", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir), { maxConnections: 1 });
    const idle = await Deno.connect({ hostname: HOST, port: server.port });
    try {
      await eventually(() => server.connections === 1, "connected");
      const busy = await exchange(server.port, encodeRequest({ digest: DIGEST, offset: 0 }));
      assert.deepEqual(busy, { status: BlobStatus.BUSY, length: 0, body: new Uint8Array() });
    } finally {
      idle.close();
      await server.close();
    }
  });
});

Deno.test("closing the server closes its open connections and leaves nothing pending", async () => {
  await withTempDir(async (dir) => {
    const server = serve(await seededStore(dir));
    const conn = await Deno.connect({ hostname: HOST, port: server.port });
    try {
      await eventually(() => server.connections === 1, "connected");
      await server.close();
      assert.equal(server.connections, 0);
      assert.equal(await conn.read(new Uint8Array(16)), null);
      await server.close();
    } finally {
      conn.close();
    }
  });
});
