/**
 * The device's trust memory (agent/trust_memory.ts, agent/trust_file.ts):
 * DATA/trust.json round-trips, a missing file is a new device, a damaged one
 * stops the agent instead of being reset, counters and the delegation version
 * only grow, and a write that fails leaves the old file and memory as they were.
 */

import assert from "node:assert/strict";
import { formatTrustMemory, mergeMemory, parseTrustMemory } from "../agent/trust_memory.ts";
import {
  readTrustMemory,
  TrustMemoryFile,
  trustPath,
  writeTrustMemory,
} from "../agent/trust_file.ts";
import { IoError } from "../kernel/errors.ts";
import { EMPTY_TRUST_MEMORY, type TrustMemory } from "../release/trust_policy.ts";
import { withTempDir } from "./helpers.ts";

const A = "a".repeat(64);
const B = "b".repeat(64);
const MEMORY: TrustMemory = {
  delegationVersion: 2,
  counters: { resnet: { counter: 7, target: A }, bert: { counter: 1, target: B } },
};

Deno.test("trust.json is format 1: { format, delegationVersion, counters: { model: { counter, target } } }", () => {
  assert.deepEqual(JSON.parse(formatTrustMemory(MEMORY)), { format: 1, ...MEMORY });
  const parsed = parseTrustMemory(formatTrustMemory(MEMORY));
  assert.deepEqual(parsed, { ok: true, memory: MEMORY });
});

Deno.test("a trust file that is not exactly format 1 is named damaged, with why", () => {
  const cases: [string, RegExp][] = [
    ["{", /not JSON/],
    ["[]", /not a JSON object/],
    [JSON.stringify({ ...MEMORY, format: 2 }), /format 2, not 1/],
    [JSON.stringify({ format: 1, delegationVersion: -1, counters: {} }), /delegationVersion/],
    [JSON.stringify({ format: 1, delegationVersion: 1, counters: [] }), /counters is not/],
    [
      JSON.stringify({
        format: 1,
        delegationVersion: 1,
        counters: { "../x": { counter: 1, target: A } },
      }),
      /bad model/,
    ],
    [
      JSON.stringify({
        format: 1,
        delegationVersion: 1,
        counters: { m: { counter: 0, target: A } },
      }),
      /counters\.m/,
    ],
    [
      JSON.stringify({
        format: 1,
        delegationVersion: 1,
        counters: { m: { counter: 1, target: "x" } },
      }),
      /counters\.m/,
    ],
  ];
  for (const [text, why] of cases) {
    const parsed = parseTrustMemory(text);
    assert.equal(parsed.ok, false, text);
    assert.match(parsed.ok ? "" : parsed.why, why, text);
  }
});

Deno.test("counters and the delegation version only grow when memories merge", () => {
  const lower: TrustMemory = {
    delegationVersion: 1,
    counters: { resnet: { counter: 3, target: B }, vit: { counter: 2, target: B } },
  };
  assert.deepEqual(mergeMemory(MEMORY, lower), {
    delegationVersion: 2,
    counters: {
      resnet: { counter: 7, target: A },
      bert: { counter: 1, target: B },
      vit: { counter: 2, target: B },
    },
  });
  const higher: TrustMemory = {
    delegationVersion: 5,
    counters: { resnet: { counter: 8, target: B } },
  };
  assert.deepEqual(mergeMemory(MEMORY, higher), {
    delegationVersion: 5,
    counters: { resnet: { counter: 8, target: B }, bert: { counter: 1, target: B } },
  });
});

Deno.test("a device without trust.json remembers nothing yet; what it remembers is on disk and reads back", async () => {
  await withTempDir(async (dir) => {
    const file = await TrustMemoryFile.open(dir);
    assert.deepEqual(file.memory, EMPTY_TRUST_MEMORY);
    assert.equal(file.path, `${dir}/trust.json`);
    await file.remember(MEMORY);
    assert.deepEqual(file.memory, MEMORY);
    assert.deepEqual(await readTrustMemory(trustPath(dir)), MEMORY);
    assert.deepEqual((await TrustMemoryFile.open(dir)).memory, MEMORY);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["trust.json"], "no temporary file is left");
  });
});

Deno.test("remembering a lower counter keeps the higher one, on disk too", async () => {
  await withTempDir(async (dir) => {
    const file = await TrustMemoryFile.open(dir);
    await file.remember(MEMORY);
    const after = await file.remember({
      delegationVersion: 1,
      counters: { resnet: { counter: 2, target: B } },
    });
    assert.deepEqual(after, MEMORY);
    assert.deepEqual(await readTrustMemory(trustPath(dir)), MEMORY);
  });
});

Deno.test("a damaged trust.json is an IoError naming the file, never a silent reset", async () => {
  await withTempDir(async (dir) => {
    for (const text of ["", '{"format":1,', JSON.stringify({ ...MEMORY, format: 7 })]) {
      await Deno.writeTextFile(`${dir}/trust.json`, text);
      await assert.rejects(
        () => TrustMemoryFile.open(dir),
        (err: unknown) => {
          assert.ok(err instanceof IoError);
          assert.match(err.message, new RegExp(`${dir}/trust\\.json is damaged`));
          assert.match(err.message, /refusing to start/);
          return true;
        },
      );
      assert.equal(await Deno.readTextFile(`${dir}/trust.json`), text, "left as it was");
    }
  });
});

Deno.test("a write of trust.json that fails leaves the old file and the memory as they were", async () => {
  await withTempDir(async (dir) => {
    const data = `${dir}/data`;
    await Deno.mkdir(data);
    await writeTrustMemory(trustPath(data), MEMORY);
    const before = await Deno.readTextFile(trustPath(data));
    // A process allowed to read the data directory but not to write in it: the write fails.
    const script = `${dir}/write.ts`;
    const module = new URL("../agent/trust_file.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { TrustMemoryFile } from ${JSON.stringify(module)};
const file = await TrustMemoryFile.open(${JSON.stringify(data)});
let failed = false;
try {
  await file.remember({ delegationVersion: 9, counters: { resnet: { counter: 99, target: "${B}" } } });
} catch (err) {
  failed = true;
  console.log(err.name + ": " + err.message);
}
console.log(JSON.stringify({ failed, memory: file.memory }));
`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-lock",
        `--allow-read=${dir},${new URL("../", import.meta.url).pathname}`,
        script,
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout).trim().split("\n");
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    assert.match(stdout[0], /^IoError: cannot write .*trust memory.*trust\.json/);
    assert.deepEqual(JSON.parse(stdout.at(-1)!), { failed: true, memory: MEMORY });
    assert.equal(await Deno.readTextFile(trustPath(data)), before);
    const names = [];
    for await (const e of Deno.readDir(data)) names.push(e.name);
    assert.deepEqual(names, ["trust.json"]);
  });
});
