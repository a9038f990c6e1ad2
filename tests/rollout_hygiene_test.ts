/**
 * Rollout hygiene (issue 14), against an in-process control plane and its
 * HTTP API, and, for the data directory's lock, real processes: concurrent
 * conflicting publishes never leave a version without its bytes; a rollout to
 * a selection with no device is refused and creates nothing; rollouts of one
 * model in two regions run side by side; a device silent longer than
 * --offline-after does not hold its rollout, and is offered it again when it
 * returns; an admin removes a device; a second control plane on a data
 * directory in use is refused.
 */

import assert from "node:assert/strict";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import { randomBytes } from "./helpers.ts";
import { withApi } from "./support/api_harness.ts";

/** A request body that arrives in `pieces` chunks, each after a turn of the event loop. */
function trickled(bytes: Uint8Array, pieces: number): ReadableStream<Uint8Array> {
  const size = Math.ceil(bytes.length / pieces);
  let at = 0;
  return new ReadableStream({
    async pull(controller) {
      await new Promise((r) => setTimeout(r, 0));
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

Deno.test("12 concurrent conflicting publishes: every version answered 201 has its bytes", async () => {
  await withApi({}, async ({ call, cp }) => {
    for (let round = 0; round < 4; round++) {
      const model = `m${round}`;
      assert.equal(
        (await call("PUT", `/v1/models/${model}/versions/v0`, randomBytes(4096, 1000 + round)))
          .status,
        201,
      );
      // Six files, each sent twice at once: as v0 again (a conflict) and as a new version.
      const files = Array.from({ length: 6 }, (_, k) => randomBytes(64 * 1024, round * 10 + k));
      const calls = files.flatMap((file, k) => [
        { version: "v0", file, pieces: 1 + ((k + round) % 4) },
        { version: `v${k + 1}`, file, pieces: 1 + ((k + round + 2) % 4) },
      ]);
      const answers = await Promise.all(calls.map(async (c) => {
        const r = await call(
          "PUT",
          `/v1/models/${model}/versions/${c.version}`,
          trickled(c.file, c.pieces),
        );
        await r.body?.cancel();
        return { ...c, status: r.status };
      }));
      for (const a of answers) {
        assert.equal(a.status, a.version === "v0" ? 409 : 201, `${model} ${a.version}`);
      }
      for (const v of (await cp.versions()).filter((v) => v.model === model)) {
        const path = cp.store.pathOf(fromHex(v.digest));
        const bytes = await Deno.readFile(path).catch(() => undefined);
        assert.ok(bytes, `${model} ${v.version}: its blob ${v.digest} is missing`);
        assert.equal(toHex(blake3(bytes)), v.digest, `${model} ${v.version}: its bytes`);
      }
    }
    // Nothing refused is left behind: the blobs are exactly the versions' files.
    const blobs = [];
    for await (const e of Deno.readDir(cp.store.dir)) {
      if (/^[0-9a-f]{64}$/.test(e.name)) blobs.push(e.name);
    }
    const digests = new Set((await cp.versions()).map((v) => v.digest));
    assert.deepEqual(blobs.sort(), [...digests].sort());
  });
});
