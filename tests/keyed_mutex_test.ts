/**
 * agent/keyed_mutex.ts: holders of one key run one after the other in the
 * order they asked; different keys run concurrently; a holder that throws
 * releases the key.
 */

import assert from "node:assert/strict";
import { KeyedMutex } from "../agent/keyed_mutex.ts";

const tick = () => new Promise<void>((r) => setTimeout(r, 5));

Deno.test("holders of one key run one at a time, in the order they asked", async () => {
  const mutex = new KeyedMutex();
  const events: string[] = [];
  let inside = 0;
  const job = (name: string, delay: number) =>
    mutex.run("resnet", async () => {
      inside += 1;
      assert.equal(inside, 1, `${name} alone in the critical section`);
      events.push(`${name} in`);
      await new Promise((r) => setTimeout(r, delay));
      events.push(`${name} out`);
      inside -= 1;
      return name;
    });
  const results = await Promise.all([job("a", 30), job("b", 1), job("c", 10)]);
  assert.deepEqual(results, ["a", "b", "c"]);
  assert.deepEqual(events, ["a in", "a out", "b in", "b out", "c in", "c out"]);
  assert.equal(mutex.isLocked("resnet"), false, "forgotten once free");
});

Deno.test("holders of different keys run concurrently", async () => {
  const mutex = new KeyedMutex();
  const releaseA = await mutex.acquire("resnet");
  // bert is not held up by resnet.
  const bert = await Promise.race([
    mutex.run("bert", () => Promise.resolve("bert ran")),
    tick().then(() => "bert waited"),
  ]);
  assert.equal(bert, "bert ran");
  // A second resnet holder waits for the first.
  let second = false;
  const waiting = mutex.run("resnet", () => {
    second = true;
    return Promise.resolve();
  });
  await tick();
  assert.equal(second, false, "the second resnet holder waits");
  releaseA();
  releaseA(); // a second call does nothing
  await waiting;
  assert.equal(second, true);
  assert.equal(mutex.isLocked("resnet"), false);
  assert.equal(mutex.isLocked("bert"), false);
});

Deno.test("a holder that throws releases the key; the error reaches its caller", async () => {
  const mutex = new KeyedMutex();
  const failing = mutex.run("resnet", async () => {
    await tick();
    throw new RangeError("boom");
  });
  const next = mutex.run("resnet", () => Promise.resolve("next ran"));
  await assert.rejects(
    failing,
    (err: unknown) => err instanceof RangeError && err.message === "boom",
  );
  assert.equal(await next, "next ran");
  assert.equal(mutex.isLocked("resnet"), false);
});
