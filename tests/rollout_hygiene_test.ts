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
import { poolboyArgs, poolboyWith } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
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

/** The permissions `poolboy controlplane` and `poolboy token` run with in these tests. */
const CP_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.0/8",
  "--allow-env=CBOR_NATIVE_ACCELERATION_DISABLED",
];

/** `poolboy controlplane` on `dir` at a loopback address of its own (default ports). */
function spawnControlPlane(dir: string, host: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: poolboyArgs(["controlplane", "--bind", host, "--data", dir], CP_PERMISSIONS),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

/** Reads a child's stderr until a line contains `text`; the rest is drained in the background. */
async function waitForLine(child: Deno.ChildProcess, text: string): Promise<void> {
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes(text)) {
    const { done, value } = await lines.read();
    if (done) throw new Error(`the control plane ended before saying "${text}": ${seen}`);
    seen += value;
  }
  (async () => {
    while (!(await lines.read()).done) { /* drain */ }
  })();
}

Deno.test("a second control plane on a data directory in use is refused (exit 3, naming the directory and the holder's pid); poolboy token still works", async () => {
  await withTempDir(async (dir) => {
    const host = `127.77.${1 + Math.floor(Math.random() * 250)}.${
      1 + Math.floor(Math.random() * 250)
    }`;
    const first = spawnControlPlane(dir, host);
    try {
      await waitForLine(first, "http api on");
      const second = await poolboyWith(CP_PERMISSIONS, dir, [
        "controlplane",
        "--bind",
        host,
        "--data",
        dir,
      ]);
      assert.equal(second.code, 3, second.stderr);
      assert.match(second.stderr, /data directory .* is in use by another control plane/);
      assert.ok(second.stderr.includes(dir), second.stderr);
      assert.ok(second.stderr.includes(`pid ${first.pid}`), second.stderr);
      const token = await poolboyWith(CP_PERMISSIONS, dir, [
        "token",
        "create",
        "--data",
        dir,
        "--role",
        "viewer",
        "--name",
        "beside-a-running-control-plane",
      ]);
      assert.equal(token.code, 0, token.stderr);
      assert.match(token.stdout, /^pbt_/);
    } finally {
      first.kill("SIGTERM");
      await first.status;
    }
    // Once the holder is gone (even killed), the directory can be used again.
    const third = spawnControlPlane(dir, host);
    try {
      await waitForLine(third, "http api on");
    } finally {
      third.kill("SIGTERM");
      await third.status;
    }
  });
});
