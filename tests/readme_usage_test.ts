/**
 * The installed command and relative paths: `deno task install` puts a
 * `poolboy` launcher in a bin directory, the README's "Using it" examples run
 * verbatim with it from a folder of the user's, and `deno task X` run from
 * another folder reads and writes relative paths there (INIT_CWD), never in
 * the repository.
 *
 * @module
 */

import assert from "node:assert/strict";
import { exists } from "./cli_helpers.ts";
import { launcherText, poolboyTaskFlags, shellQuote } from "../scripts/install.ts";
import { leanCommand } from "../scripts/measure.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");
const CONFIG = `${ROOT}/deno.json`;

/** The environment a user's shell would give: ours, without a task's INIT_CWD. */
function userEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.INIT_CWD;
  delete env.POOLBOY_TOKEN;
  return { ...env, NO_COLOR: "1", ...extra };
}

async function run(
  command: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
): Promise<{ code: number; out: string }> {
  const result = await new Deno.Command(command, {
    args,
    cwd,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: result.code,
    out: `${text.decode(result.stdout)}\n${text.decode(result.stderr)}`,
  };
}

/** Deterministic bytes standing for a model file. */
function modelBytes(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** v1, and two later versions that change a few regions of it. */
async function writeModels(dir: string): Promise<void> {
  const v1 = modelBytes(3 << 20, 1);
  const v2 = v1.slice();
  v2.set(modelBytes(64 << 10, 2), 1 << 20);
  const v3 = v2.slice();
  v3.set(modelBytes(128 << 10, 3), 2 << 20);
  await Deno.writeFile(`${dir}/model-v1.safetensors`, v1);
  await Deno.writeFile(`${dir}/model-v2.safetensors`, v2);
  await Deno.writeFile(`${dir}/model-v3.safetensors`, v3);
}

/** The fenced ```sh blocks of the README's "## Using it" section, in order. */
function usingItBlocks(readme: string): string[] {
  const start = readme.indexOf("\n## Using it\n");
  assert.ok(start >= 0, 'README.md has a "## Using it" section');
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
}

Deno.test("deno task encode and apply run from another folder read and write that folder's relative paths", async () => {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-task-cwd-" });
  try {
    await writeModels(dir);
    const encode = await run(
      Deno.execPath(),
      [
        "task",
        "-q",
        `--config=${CONFIG}`,
        "encode",
        "-q",
        "model-v1.safetensors",
        "model-v2.safetensors",
        "-o",
        "out.patch",
      ],
      dir,
      userEnv(),
    );
    assert.equal(encode.code, 0, encode.out);
    assert.ok(await exists(`${dir}/out.patch`), "the patch is in the caller's folder");
    assert.ok(!(await exists(`${ROOT}/out.patch`)), "nothing is written in the repository");
    const apply = await run(
      Deno.execPath(),
      [
        "task",
        "-q",
        `--config=${CONFIG}`,
        "apply",
        "-q",
        "model-v1.safetensors",
        "out.patch",
        "-o",
        "rebuilt.safetensors",
      ],
      dir,
      userEnv(),
    );
    assert.equal(apply.code, 0, apply.out);
    assert.deepEqual(
      await Deno.readFile(`${dir}/rebuilt.safetensors`),
      await Deno.readFile(`${dir}/model-v2.safetensors`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the README's set-up line installs poolboy and its Using it examples run verbatim in a fresh folder", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const blocks = usingItBlocks(readme);
  const setup = blocks.find((b) => /task install/.test(b));
  assert.ok(setup !== undefined, "Using it has a set-up block");
  assert.match(setup.trim(), /^npx -y deno@[0-9]+\.[0-9]+\.[0-9]+ task install$/);
  const examples = blocks.find((b) => /^poolboy encode /m.test(b));
  assert.ok(examples !== undefined, "Using it has a block of poolboy examples");
  const dir = await Deno.makeTempDir({ prefix: "poolboy-readme-" });
  try {
    await Deno.mkdir(`${dir}/work`);
    // The set-up line, with this test's Deno in place of npx's (same task, relative --bin).
    const install = await run(
      Deno.execPath(),
      ["task", "-q", `--config=${CONFIG}`, "install", "--bin", "bin"],
      dir,
      userEnv(),
    );
    assert.equal(install.code, 0, install.out);
    assert.ok(await exists(`${dir}/bin/poolboy`), install.out);
    await writeModels(`${dir}/work`);
    const env = userEnv({ PATH: `${dir}/bin:${Deno.env.get("PATH") ?? ""}` });
    const result = await run("sh", ["-e", "-x", "-c", examples], `${dir}/work`, env);
    assert.equal(result.code, 0, result.out);
    for (const made of ["v1-to-v2.patch", "model-v2.rebuilt.safetensors", "model-v1.idx"]) {
      assert.ok(await exists(`${dir}/work/${made}`), `${made} is in the folder the user stood in`);
    }
    assert.ok(await exists(`${dir}/work/v1-to-v3.patch`));
    assert.deepEqual(
      await Deno.readFile(`${dir}/work/model-v2.rebuilt.safetensors`),
      await Deno.readFile(`${dir}/work/model-v2.safetensors`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the launcher runs mod.ts with exactly the poolboy task's flags, quoted for the shell", () => {
  const flags = poolboyTaskFlags(
    JSON.stringify({ tasks: { poolboy: "deno run --allow-read --v8-flags=--x=1 mod.ts" } }),
  );
  assert.deepEqual(flags, ["--allow-read", "--v8-flags=--x=1"]);
  assert.throws(() => poolboyTaskFlags(JSON.stringify({ tasks: {} })), /poolboy/);
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  const text = launcherText("/opt/pool boy", flags, "/usr/bin/deno", "2.9.6");
  assert.match(text, /^#!\/bin\/sh\n/);
  assert.ok(text.includes(`'--config=/opt/pool boy/deno.json' '/opt/pool boy/mod.ts' "$@"`));
  assert.ok(text.includes(`exec npx -y 'deno@2.9.6' 'run' '--allow-read'`));
  // apply and encode run as their tasks do: one malloc arena, no config, no code cache.
  assert.ok(
    text.includes(
      `if [ "$1" = apply ] || [ "$1" = encode ]; then\n  # as \`deno task apply\` and \`deno task encode\`: less memory (one malloc arena, no config, no code cache)\n  export MALLOC_ARENA_MAX=1\n  if [ -x "$deno" ]; then\n    exec "$deno" 'run' '--allow-read' '--v8-flags=--x=1' '--no-config' '--no-code-cache' '/opt/pool boy/mod.ts' "$@"`,
    ),
    text,
  );
});

Deno.test("the repository's poolboy task lets every command read INIT_CWD", async () => {
  const config = JSON.parse(await Deno.readTextFile(CONFIG)) as { tasks: Record<string, string> };
  for (const [name, task] of Object.entries(config.tasks)) {
    if (!/ mod\.ts\b/.test(task) || name.startsWith("compile")) continue;
    assert.match(task, /--allow-env(=[^ ]*\bINIT_CWD\b| )/, `task ${name} may read INIT_CWD`);
  }
});

Deno.test("deno task apply and deno task encode start deno exactly as the benchmarks measure them (leanCommand of scripts/measure.ts)", async () => {
  const config = JSON.parse(await Deno.readTextFile(CONFIG)) as { tasks: Record<string, string> };
  const [, arena, deno, ...flags] = leanCommand("deno"); // "env", "MALLOC_ARENA_MAX=1", "deno", "run", ...
  for (const task of ["apply", "encode"]) {
    assert.ok(
      config.tasks[task].startsWith(`${arena} ${deno} ${flags.join(" ")} `),
      `deno.json's ${task} task: ${config.tasks[task]}`,
    );
  }
});
