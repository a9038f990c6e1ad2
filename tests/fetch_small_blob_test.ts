/**
 * `fetchSmallBlob` (transfer/blob_client.ts), how an agent fetches a signed
 * document: the verified bytes come back in memory; a source that offers more
 * than the cap, serves other bytes, does not hold the blob, is not there or
 * never answers is a `BlobDownloadError` saying which, and nothing is written.
 */

import assert from "node:assert/strict";
import { blake3 } from "../kernel/blake3.ts";
import { BlobDownloadError, fetchSmallBlob } from "../transfer/blob_client.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import type { TransportFaults } from "../transfer/faults.ts";
import { randomBytes, withTempDir } from "./helpers.ts";

/** This file's address. */
const HOST = "127.0.13.10";
const DOCUMENT = randomBytes(3000, 1310);

async function withServer(
  fn: (server: BlobServer, dir: string) => Promise<void>,
  faults?: TransportFaults,
): Promise<void> {
  await withTempDir(async (dir) => {
    const store = await BlobStore.open(`${dir}/blobs`);
    await Deno.writeFile(`${dir}/doc`, DOCUMENT);
    await store.importFile(`${dir}/doc`);
    const server = BlobServer.start({ hostname: HOST, port: 0, store, faults });
    try {
      await fn(server, dir);
    } finally {
      await server.close();
    }
  });
}

function source(port: number) {
  return { hostname: HOST, port, label: "control-plane" };
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof BlobDownloadError, String(err));
    return err.message;
  }
  throw new Error("the fetch did not fail");
}

Deno.test("a small blob comes back in memory, verified against its digest", async () => {
  await withServer(async (server) => {
    const bytes = await fetchSmallBlob({
      source: source(server.port),
      digest: blake3(DOCUMENT),
      maxBytes: 64 * 1024,
      deadlineMs: 10_000,
    });
    assert.deepEqual(bytes, DOCUMENT);
  });
});

Deno.test("a source offering more than the cap is refused from its header, whatever its body", async () => {
  await withServer(async (server) => {
    const message = await refusal(fetchSmallBlob({
      source: source(server.port),
      digest: blake3(DOCUMENT),
      maxBytes: 1000,
      deadlineMs: 10_000,
    }));
    assert.match(message, /offers 3000 bytes, more than the 1000 allowed/);
  });
});

Deno.test("bytes that do not hash to the digest are refused", async () => {
  await withServer(async (server) => {
    const message = await refusal(fetchSmallBlob({
      source: source(server.port),
      digest: blake3(DOCUMENT),
      maxBytes: 64 * 1024,
      deadlineMs: 10_000,
    }));
    assert.match(message, /the bytes received hash to [0-9a-f]{64}; refused/);
  }, { serveCorrupt: true });
});

Deno.test("a source without the blob, or not listening, is named in the error", async () => {
  await withServer(async (server) => {
    const missing = await refusal(fetchSmallBlob({
      source: source(server.port),
      digest: blake3(new Uint8Array([1, 2, 3])),
      maxBytes: 64 * 1024,
      deadlineMs: 10_000,
    }));
    assert.match(
      missing,
      /from control-plane \(127\.0\.13\.10:\d+\): the source answered NOT_FOUND/,
    );
  });
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  const port = listener.addr.port;
  listener.close();
  const absent = await refusal(fetchSmallBlob({
    source: source(port),
    digest: blake3(DOCUMENT),
    maxBytes: 64 * 1024,
    deadlineMs: 10_000,
  }));
  assert.match(absent, /cannot connect: connection refused/);
});

Deno.test("a source that accepts and never answers is given up at the deadline", async () => {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const message = await refusal(fetchSmallBlob({
      source: source(listener.addr.port),
      digest: blake3(DOCUMENT),
      maxBytes: 64 * 1024,
      deadlineMs: 200,
    }));
    assert.match(message, /no complete answer within 200 ms/);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
});

Deno.test("an aborted fetch rejects with the abort's reason", async () => {
  await withServer(async (server) => {
    const controller = new AbortController();
    controller.abort(new Error("agent closing"));
    await assert.rejects(
      () =>
        fetchSmallBlob({
          source: source(server.port),
          digest: blake3(DOCUMENT),
          maxBytes: 64 * 1024,
          deadlineMs: 10_000,
          signal: controller.signal,
        }),
      /agent closing/,
    );
  });
});
