/**
 * The persisted update state (agent/lifecycle_state.ts) and the health check
 * (agent/health_check.ts).
 */

import assert from "node:assert/strict";
import {
  initialState,
  isPoisoned,
  ModelStateFiles,
  readState,
  statePath,
  withFailure,
  writeState,
} from "../agent/lifecycle_state.ts";
import { runHealthCommand, sniff } from "../agent/health_check.ts";
import { withTempDir } from "./helpers.ts";

const T = "t".repeat(64);

Deno.test("a missing state file reads as idle; a written one reads back; no temporary is left", async () => {
  await withTempDir(async (dir) => {
    assert.deepEqual(await readState(dir, "m"), initialState("m"));
    const state = {
      ...initialState("m"),
      step: "applied" as const,
      target: T,
      manifestId: "r1.b1.e1",
    };
    await writeState(dir, state);
    assert.deepEqual(await readState(dir, "m"), state);
    const names = [];
    for await (const e of Deno.readDir(`${dir}/models/m`)) names.push(e.name);
    assert.deepEqual(names, ["state.json"]);
  });
});

Deno.test("a damaged state file is an error, not a silent reset", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/models/m`, { recursive: true });
    await Deno.writeTextFile(statePath(dir, "m"), JSON.stringify({ format: 9 }));
    await assert.rejects(() => readState(dir, "m"), /not a poolboy state file/);
  });
});

Deno.test("the state files: update reads, changes and writes one model; concurrent updates lose nothing", async () => {
  await withTempDir(async (dir) => {
    const files = new ModelStateFiles(dir);
    assert.equal(files.path("m"), statePath(dir, "m"));
    await Promise.all(
      ["r1", "r2", "r3", "r4", "r5"].map((rollout) =>
        files.update("m", (s) => withFailure(s, T, `${rollout}.b1.e1`, rollout))
      ),
    );
    const state = await files.read("m");
    assert.equal(state.failures[T].rollout, "r5", "applied in order");
    const written = await files.update("m", (s) => ({ ...s, step: "staged", target: T }));
    assert.deepEqual(await readState(dir, "m"), written);
    await files.write({ ...initialState("n"), step: "committed" });
    assert.deepEqual((await files.models()).sort(), ["m", "n"]);
    assert.equal((await files.read("n")).step, "committed");
  });
});

Deno.test("an update whose change throws writes nothing, and the next update of the model still runs", async () => {
  await withTempDir(async (dir) => {
    const files = new ModelStateFiles(dir);
    await assert.rejects(() =>
      files.update("m", () => {
        throw new Error("no");
      }), /no/);
    await assert.rejects(() => Deno.stat(statePath(dir, "m")), Deno.errors.NotFound);
    assert.equal((await files.update("m", (s) => ({ ...s, step: "staged" }))).step, "staged");
  });
});

Deno.test("failures count per version within a rollout; a new rollout starts again from zero", () => {
  let s = initialState("m");
  s = withFailure(s, T, "r1.b1.e1", "health");
  s = withFailure(s, T, "r1.b2.e7", "health"); // same rollout, another election
  assert.equal(s.failures[T].count, 2);
  assert.equal(isPoisoned(s, T, "r1.b1.e1", 3), false);
  s = withFailure(s, T, "r1.b1.e1", "apply: wrong base");
  assert.equal(isPoisoned(s, T, "r1.b1.e1", 3), true);
  assert.equal(s.failures[T].last, "apply: wrong base");
  assert.equal(isPoisoned(s, T, "r2.b1.e1", 3), false, "an explicit new rollout retries");
  s = withFailure(s, T, "r2.b1.e1", "health");
  assert.equal(s.failures[T].count, 1);
});

Deno.test("a health command sees the model path in POOLBOY_MODEL and {model}; exit 0 is healthy", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/it's a model`;
    await Deno.writeTextFile(path, "x");
    assert.deepEqual(
      await runHealthCommand(`test -f "$POOLBOY_MODEL" && test -f {model}`, path, 5000),
      { healthy: true },
    );
    const bad = await runHealthCommand("echo 'tensor nan' >&2; exit 3", path, 5000);
    assert.deepEqual(bad, { healthy: false, reason: "health command exited 3: tensor nan" });
    const slow = await runHealthCommand("sleep 5", path, 200);
    assert.deepEqual(slow, { healthy: false, reason: "health command timed out after 200 ms" });
  });
});

Deno.test("the built-in format check knows SafeTensors, GGUF and ONNX, and passes unknown bytes", () => {
  const safetensors = (json: string, extra = 0) => {
    const header = new TextEncoder().encode(json);
    const out = new Uint8Array(8 + header.length + extra);
    new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
    out.set(header, 8);
    return out;
  };
  const good = safetensors('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4);
  assert.equal(sniff(good, good.length), null);
  const broken = safetensors('{"w": nope}', 4);
  assert.match(sniff(broken, broken.length)!, /not valid JSON/);
  const short = safetensors('{"w":{}}');
  assert.match(sniff(short, short.length - 2)!, /runs past the file/);
  const gguf = new Uint8Array([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0]);
  assert.equal(sniff(gguf, 1000), null);
  gguf[4] = 9;
  assert.match(sniff(gguf, 1000)!, /GGUF version 9/);
  assert.equal(sniff(new Uint8Array([0x08, 0x07, 0x12, 0x04]), 100), null, "ONNX ir_version 7");
  assert.equal(sniff(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 10), null, "unknown");
});

Deno.test("no state path is built of a model name that fails the name rule, and nothing is written", async () => {
  await withTempDir(async (dir) => {
    const data = `${dir}/data`;
    const files = new ModelStateFiles(data);
    for (const name of ["../../x", "..", ".hidden", "a/b", ""]) {
      assert.throws(() => statePath(data, name), /fails the name rule/, name);
      await assert.rejects(() => writeState(data, initialState(name)), /fails the name rule/);
      await assert.rejects(() => files.update(name, (s) => s), /fails the name rule/);
    }
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, [], "nothing written, inside or beside the data directory");
  });
});

Deno.test("a state file without a refusal (older agents) still reads; one with a refusal reads back", async () => {
  await withTempDir(async (dir) => {
    const old = { ...initialState("m"), step: "committed" as const, target: T };
    await writeState(dir, old);
    assert.equal("refusal" in await readState(dir, "m"), false);
    const refused = {
      ...old,
      refusal: {
        kind: "rollback" as const,
        reason: "refused: release counter 3 of m is not above 5",
        manifestId: "r2.b1.e1",
        at: 5,
      },
    };
    await writeState(dir, refused);
    assert.deepEqual(await readState(dir, "m"), refused);
  });
});

Deno.test("the models of a data directory are the directories whose names follow the name rule", async () => {
  await withTempDir(async (dir) => {
    await writeState(dir, initialState("m"));
    await Deno.mkdir(`${dir}/models/.partial`, { recursive: true });
    assert.deepEqual(await new ModelStateFiles(dir).models(), ["m"]);
  });
});
