/**
 * The Worker pipeline must give exactly the chunks and digests of the
 * single-threaded `hashedChunkStream`, for every input, thread count, pool size
 * and read pattern, and hash the whole stream as `blake3` does.
 */

import assert from "node:assert/strict";
import { blake3, DIGEST_LENGTH, toHex } from "../kernel/blake3.ts";
import { filterKernels } from "../codec/filter_kernels.ts";
import { BufferPool, PoolCancelledError } from "../codec/buffer_pool.ts";
import { ChunkPipeline, pipelineBufferSize } from "../codec/chunk_pipeline.ts";
import { hashedChunkStream } from "../codec/chunk_stream.ts";
import { type ChunkParams, DEFAULT_CHUNK_PARAMS } from "../codec/fastcdc.ts";
import { encodeThreads, WORKER_MIN_TARGET } from "../codec/encoder.ts";
import { HashPool } from "../codec/hash_pool.ts";
import { bufferSource, concat, randomBytes } from "./helpers.ts";

const SMALL: ChunkParams = { min: 64, avg: 256, max: 1024 };

type Row = [offset: number, length: number, digest: string];

async function reference(data: Uint8Array, params: ChunkParams): Promise<Row[]> {
  const rows: Row[] = [];
  const source = bufferSource(data, (room) => room);
  for await (const c of hashedChunkStream(source, params)) {
    rows.push([c.offset, c.data.length, toHex(c.digest)]);
  }
  return rows;
}

async function pipelined(
  pipeline: ChunkPipeline,
  data: Uint8Array,
  sizeOf: (room: number) => number = (room) => room,
  hashStream = true,
): Promise<{ rows: Row[]; whole?: string }> {
  const rows: Row[] = [];
  const source = bufferSource(data, sizeOf);
  let expectedOffset = 0;
  for await (const c of pipeline.chunks(source, { hashStream })) {
    assert.equal(c.offset, expectedOffset, "chunks come in order, without gaps");
    expectedOffset += c.data.length;
    rows.push([c.offset, c.data.length, toHex(c.digest)]);
  }
  return { rows, whole: hashStream ? toHex(await pipeline.streamDigest()) : undefined };
}

/** Inputs with repeats, runs of zeros (max-size cuts) and odd lengths. */
function inputs(): Uint8Array[] {
  const r = randomBytes(50_000, 7);
  return [
    new Uint8Array(0),
    randomBytes(1, 1),
    randomBytes(63, 2),
    randomBytes(64, 3),
    randomBytes(1024, 4),
    randomBytes(2049, 5),
    randomBytes(100_003, 6),
    concat(r, new Uint8Array(10_000), r, randomBytes(3, 8)),
    new Uint8Array(7 * 1024 + 5),
  ];
}

for (const threads of [1, 2, 3]) {
  Deno.test(`${threads} thread(s) give the single-threaded chunks, digests and whole-stream hash`, async () => {
    using pool = await HashPool.start(threads);
    for (const bufferCount of [2, 3, 6]) {
      for (const bufferSize of [SMALL.max + 1, pipelineBufferSize(SMALL), 10_000]) {
        const pipeline = new ChunkPipeline(pool, SMALL, { bufferCount, bufferSize });
        for (const data of inputs()) {
          const label = `${data.length} bytes, ${bufferCount} × ${bufferSize}-byte buffers`;
          const got = await pipelined(pipeline, data);
          assert.deepEqual(got.rows, await reference(data, SMALL), label);
          assert.equal(got.whole, toHex(blake3(data)), label);
          assert.ok(pipeline.buffers.allocated <= bufferCount, "never more buffers than the pool");
        }
      }
    }
  });
}

Deno.test("the boundaries do not depend on how many bytes each read returns", async () => {
  using pool = await HashPool.start(2);
  const data = randomBytes(200_000, 11);
  const expected = await reference(data, SMALL);
  const pipeline = new ChunkPipeline(pool, SMALL, { bufferCount: 3 });
  let seed = 1;
  const jitter = (room: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return 1 + (seed % Math.min(room, 3000));
  };
  for (const sizeOf of [() => 1, () => 777, jitter]) {
    assert.deepEqual((await pipelined(pipeline, data, sizeOf)).rows, expected);
  }
});

Deno.test("default chunk sizes: a file of several buffers matches, hashed or not as a whole", async () => {
  using pool = await HashPool.start(2);
  const params = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
  const data = concat(randomBytes(3_000_000, 12), new Uint8Array(1_000_000), randomBytes(5, 1));
  const pipeline = new ChunkPipeline(pool, params);
  const expected = await reference(data, params);
  const hashed = await pipelined(pipeline, data, undefined, true);
  assert.deepEqual(hashed.rows, expected);
  assert.equal(hashed.whole, toHex(blake3(data)));
  const plain = await pipelined(pipeline, data, undefined, false);
  assert.deepEqual(plain.rows, expected);
  await assert.rejects(pipeline.streamDigest(), /not hashed as a whole/);
});

Deno.test("a read error reaches the consumer after the chunks read before it, and stops the reader", async () => {
  using pool = await HashPool.start(2);
  const pipeline = new ChunkPipeline(pool, SMALL, { bufferCount: 2 });
  let reads = 0;
  const data = randomBytes(30_000, 13);
  const inner = bufferSource(data, () => 500);
  const failing = {
    read(buf: Uint8Array) {
      if (++reads > 20) return Promise.reject(new Error("disk on fire"));
      return inner.read(buf);
    },
  };
  let seen = 0;
  await assert.rejects(async () => {
    for await (const c of pipeline.chunks(failing)) seen += c.data.length;
  }, /disk on fire/);
  assert.ok(seen > 0 && seen <= 20 * 500, `${seen} bytes of chunks before the error`);
});

Deno.test("a consumer that stops early leaves no reader running", async () => {
  using pool = await HashPool.start(1);
  const pipeline = new ChunkPipeline(pool, SMALL, { bufferCount: 2 });
  let readsAfterStop = 0;
  let stopped = false;
  const inner = bufferSource(randomBytes(100_000, 14), (room) => room);
  const source = {
    read(buf: Uint8Array) {
      if (stopped) readsAfterStop++;
      return inner.read(buf);
    },
  };
  for await (const _ of pipeline.chunks(source)) break;
  stopped = true;
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(readsAfterStop, 0);
});

Deno.test("closing the pool mid-stream fails the iteration instead of hanging", async () => {
  for (const hashStream of [false, true]) {
    const pool = await HashPool.start(2);
    const pipeline = new ChunkPipeline(pool, SMALL, { bufferCount: 3 });
    const source = bufferSource(randomBytes(500_000, 15), (room) => room);
    let chunks = 0;
    await assert.rejects(async () => {
      for await (const _ of pipeline.chunks(source, { hashStream })) {
        if (++chunks === 50) pool.close();
      }
    }, /hash pool closed/);
  }
});

Deno.test("a closed pool fails the jobs still outstanding", async () => {
  const pool = await HashPool.start(1);
  const job = pool.hashChunks(new ArrayBuffer(1 << 20), Uint32Array.from([1 << 20]));
  pool.close();
  await assert.rejects(job, /hash pool closed/);
  await assert.rejects(pool.streamDigest(), /hash pool closed/);
  pool.close(); // twice is fine
});

Deno.test("HashPool of 0 Workers hashes chunks and the stream on the calling thread, as a Worker does", async () => {
  const data = randomBytes(300_000, 5);
  const cuts = new Uint32Array([1000, 70_000, 300_000]);
  const results: { digests: Uint8Array; stream: Uint8Array }[] = [];
  for (const threads of [0, 1]) {
    const pool = await HashPool.start(threads);
    try {
      assert.equal(pool.threads, threads);
      const { buffer, digests } = await pool.hashChunks(data.slice().buffer, cuts);
      assert.equal(buffer.byteLength, data.length, "the buffer comes back");
      await pool.streamUpdate(data.slice().buffer, data.length);
      results.push({ digests, stream: await pool.streamDigest() });
    } finally {
      pool.close();
    }
  }
  assert.deepEqual(results[0], results[1]);
  assert.deepEqual(results[0].digests.subarray(0, 32), blake3(data.subarray(0, 1000)));
  assert.deepEqual(results[0].stream, blake3(data));
});

Deno.test("HashPool refuses a thread count outside 0..64", async () => {
  for (const bad of [-1, 1.5, 65, NaN]) {
    await assert.rejects(HashPool.start(bad), RangeError, String(bad));
  }
});

Deno.test("BufferPool: at most count buffers, waiters served in order, cancel wakes them", async () => {
  const pool = new BufferPool(2, 16);
  const a = await pool.acquire();
  const b = await pool.acquire();
  assert.equal(pool.allocated, 2);
  const order: string[] = [];
  const first = pool.acquire().then((buf) => (order.push("first"), buf));
  const second = pool.acquire().then((buf) => (order.push("second"), buf));
  pool.release(a);
  assert.equal(await first, a);
  pool.release(b);
  assert.equal(await second, b);
  assert.deepEqual(order, ["first", "second"]);
  const waiting = pool.acquire();
  pool.cancel();
  await assert.rejects(waiting, PoolCancelledError);
  await assert.rejects(pool.acquire(), PoolCancelledError);
  assert.throws(() => pool.release(new ArrayBuffer(8)), RangeError);
  assert.throws(() => new BufferPool(1, 16), RangeError);
});

Deno.test("ChunkPipeline refuses buffers no larger than the largest chunk", async () => {
  using pool = await HashPool.start(1);
  assert.throws(() => new ChunkPipeline(pool, SMALL, { bufferSize: SMALL.max }), RangeError);
});

Deno.test("with fingerprint identity the chunks are the same and each digest is its chunk's fingerprint", async () => {
  const kernels = filterKernels();
  assert.ok(kernels, "the WebAssembly kernels load here");
  for (const threads of [0, 1]) {
    using pool = await HashPool.start(threads);
    const pipeline = new ChunkPipeline(pool, SMALL, { bufferCount: 2 });
    for (const data of inputs()) {
      const expected = await reference(data, SMALL);
      const rows: Row[] = [];
      for await (
        const c of pipeline.chunks(bufferSource(data, (r) => r), {
          identity: "fingerprint",
          hashStream: true,
        })
      ) {
        const fingerprint = new Uint8Array(DIGEST_LENGTH);
        kernels.fingerprint(c.data, fingerprint);
        assert.deepEqual(
          c.digest,
          fingerprint,
          "the fingerprint, zero-padded to a digest's length",
        );
        rows.push([c.offset, c.data.length, toHex(c.digest)]);
      }
      assert.deepEqual(rows.map(([o, n]) => [o, n]), expected.map(([o, n]) => [o, n]));
      assert.equal(
        toHex(await pipeline.streamDigest()),
        toHex(blake3(data)),
        "the whole stream is still BLAKE3",
      );
    }
  }
});

Deno.test("an encode hashes on one Worker only for a target of 256 MiB or more without quantized tensors, on a machine with a second core", () => {
  const second = navigator.hardwareConcurrency > 1 ? 1 : 0;
  assert.equal(encodeThreads(WORKER_MIN_TARGET, false), second);
  assert.equal(encodeThreads(4 * 1024 ** 3, false), second);
  assert.equal(encodeThreads(WORKER_MIN_TARGET - 1, false), 0, "small files keep the memory");
  assert.equal(
    encodeThreads(4 * 1024 ** 3, true),
    0,
    "record coding's state leaves no room for it",
  );
  assert.equal(WORKER_MIN_TARGET, 256 * 1024 * 1024);
});

Deno.test("the largest default chunk is 2 MiB: three pipeline buffers of 2.5 MiB", () => {
  assert.deepEqual(DEFAULT_CHUNK_PARAMS, {
    min: 256 * 1024,
    avg: 1024 * 1024,
    max: 2 * 1024 * 1024,
  });
  assert.equal(pipelineBufferSize(DEFAULT_CHUNK_PARAMS), 2.5 * 1024 * 1024);
});
