/**
 * The deployable packages for real (issue 18, "verified in CI"): `buildPackages`
 * (scripts/package.ts) builds both tarballs once into a temporary directory;
 * each must hold one directory `poolboy-VERSION-TARGET-linux/` with the
 * launcher, the runtime for its machine (ELF e_machine 0x3E or 0xB7), the
 * bundle, its Worker and the dashboard's files, and a B3SUMS listing every
 * file with its BLAKE3. Then each package runs the smoke test
 * (testkit/package_smoke.ts: `--version`, an encode/apply round trip, a fleet of
 * a native control plane and the package's agent in a private network
 * namespace): x86_64 natively, aarch64 under qemu-user (testkit/qemu.ts).
 * Finally `deno task compile:x86_64` (into a temporary file) and the same
 * smoke test on its binary.
 *
 * Skipped, each with one line saying why: the aarch64 run without qemu-user
 * ("package: aarch64 not run: ..."), the fleet without permission to make a
 * network namespace ("package: fleet not run: ..."), the compiled binary when
 * denort cannot be downloaded ("package: deno compile not run: ...").
 *
 * @module
 */

import assert from "node:assert/strict";
import { VERSION } from "../kernel/version.ts";
import {
  buildPackages,
  type BuiltPackage,
  DENO_RUNTIME_VERSION,
  elfMachine,
  filesUnder,
  packageName,
  SIGNATURE_FILES,
  type Target,
  TARGETS,
} from "../scripts/package.ts";
import {
  blake3File,
  SmokeError,
  smokePackage,
  type SmokeReport,
  summary,
} from "../testkit/package_smoke.ts";
import { aarch64Runner } from "../testkit/qemu.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");
/** How long `deno compile` may take (it downloads denort once). */
const COMPILE_TIMEOUT_MS = 120_000;

/**
 * Whether this process may make a network namespace and bring its lo up
 * (`unshare -n ip link set lo up`: root and iproute2), or why not.
 */
async function netnsAllowed(): Promise<{ ok: true } | { ok: false; why: string }> {
  try {
    const out = await new Deno.Command("unshare", {
      args: ["-n", "--", "ip", "link", "set", "lo", "up"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.success) return { ok: true };
    const err = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
    return {
      ok: false,
      why:
        `unshare -n ip link set lo up failed (${err}): a private network namespace needs root and iproute2`,
    };
  } catch (err) {
    return { ok: false, why: `cannot run unshare: ${err instanceof Error ? err.message : err}` };
  }
}

const qemu = await aarch64Runner();
if (!qemu.ok) console.log(`package: aarch64 not run: ${qemu.why}`);
const netns = await netnsAllowed();
if (!netns.ok) console.log(`package: fleet not run: ${netns.why}`);

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder();
  assert.ok(out.success, `${cmd} ${args.join(" ")} failed: ${text.decode(out.stderr)}`);
  return text.decode(out.stdout);
}

function print(report: SmokeReport): void {
  for (const line of summary(report)) console.log(line);
}

/** The argv of `deno task compile:x86_64` with its `--output` redirected to `output`. */
async function compileCommand(output: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
    tasks?: Record<string, unknown>;
  };
  const task = config.tasks?.["compile:x86_64"];
  assert.equal(typeof task, "string", "deno.json has no task compile:x86_64");
  const words = (task as string).split(/\s+/).filter((w) => w !== "");
  assert.deepEqual(words.slice(0, 2), ["deno", "compile"], `compile:x86_64 is "${task}"`);
  const at = words.indexOf("--output");
  assert.ok(at > 0 && at + 1 < words.length, `compile:x86_64 has no --output: "${task}"`);
  words[at + 1] = output;
  return words.slice(1);
}

Deno.test("the packages, built by deno task package, hold what the plan says and run on x86_64, on aarch64 under qemu and as a deno compile binary", async (t) => {
  const work = await Deno.makeTempDir({ prefix: "poolboy-package-test-" });
  try {
    const built: BuiltPackage[] = await buildPackages({ outDir: `${work}/dist`, quiet: true });
    assert.deepEqual(built.map((p) => p.target).sort(), ["aarch64", "x86_64"]);
    const unpacked = {} as Record<Target, string>;
    for (const p of built) {
      assert.equal(p.path, `${work}/dist/${packageName(p.target)}.tar.gz`);
      assert.equal(p.bytes, (await Deno.stat(p.path)).size);
      await Deno.mkdir(`${work}/${p.target}`);
      await run("tar", ["-xzf", p.path, "-C", `${work}/${p.target}`]);
      unpacked[p.target] = `${work}/${p.target}/${packageName(p.target)}`;
    }

    await t.step(
      "each tarball holds one directory poolboy-VERSION-TARGET-linux/ with the launcher, lib/deno, the bundle's entry, its Worker, the dashboard's files and B3SUMS",
      async () => {
        for (const p of built) {
          const top = `poolboy-${VERSION}-${p.target}-linux`;
          const entries = (await run("tar", ["-tzf", p.path])).split("\n").filter((l) => l !== "");
          for (const e of entries) {
            assert.ok(
              e === `${top}/` || e.startsWith(`${top}/`),
              `${p.path}: ${e} is outside ${top}/`,
            );
          }
          const files = await filesUnder(unpacked[p.target]);
          for (
            const f of [
              "poolboy",
              "lib/deno",
              "lib/app/mod.js",
              "lib/app/hash_worker.js",
              "lib/app/static/app.js",
              "lib/app/static/style.css",
              "B3SUMS",
            ]
          ) {
            assert.ok(files.includes(f), `${top} has no ${f}`);
          }
          assert.ok(files.some((f) => /^lib\/app\/chunk-[^/]+\.js$/.test(f)), `${top}: no chunks`);
          for (const f of files) {
            assert.ok(
              f === "poolboy" || f === "B3SUMS" || f.startsWith("lib/"),
              `${top}: unexpected file ${f}`,
            );
          }
          for (const f of ["poolboy", "lib/deno"]) {
            const mode = (await Deno.stat(`${unpacked[p.target]}/${f}`)).mode! & 0o777;
            assert.equal(mode, 0o755, `${top}/${f} has mode ${mode.toString(8)}`);
          }
        }
      },
    );

    await t.step(
      "B3SUMS lists every file of the package, sorted by path, each with its BLAKE3",
      async () => {
        for (const p of built) {
          const dir = unpacked[p.target];
          const lines = (await Deno.readTextFile(`${dir}/B3SUMS`)).split("\n");
          assert.equal(lines.pop(), "", "B3SUMS ends with a newline");
          const listed = lines.map((line) => {
            const m = /^([0-9a-f]{64}) {2}(\S.*)$/.exec(line);
            assert.ok(m, `B3SUMS line is not "<64 hex>  <path>": ${line}`);
            return { digest: m[1], path: m[2] };
          });
          const paths = listed.map((l) => l.path);
          assert.deepEqual(paths, [...paths].sort(), "B3SUMS is sorted by path");
          const files = (await filesUnder(dir)).filter((f) => !SIGNATURE_FILES.includes(f));
          assert.deepEqual(paths, files, "B3SUMS lists exactly the package's files");
          for (const l of listed) {
            assert.equal(await blake3File(`${dir}/${l.path}`), l.digest, `BLAKE3 of ${l.path}`);
          }
        }
      },
    );

    await t.step(
      "lib/deno is an ELF executable for its target's machine: x86-64 (0x3E) or aarch64 (0xB7)",
      async () => {
        for (const p of built) {
          assert.equal(
            await elfMachine(`${unpacked[p.target]}/lib/deno`),
            TARGETS[p.target].elfMachine,
          );
        }
      },
    );

    const x86 = `${unpacked.x86_64}/poolboy`;
    let nativeReport: SmokeReport | undefined;
    await t.step(
      "the x86_64 package runs natively: --version, an encode/apply round trip, and a fleet of its control plane and its agent",
      async () => {
        nativeReport = await smokePackage({ poolboy: x86, label: "x86_64", fleet: netns.ok });
        print(nativeReport);
        assert.equal(
          nativeReport.versionLine,
          `poolboy ${VERSION} (deno ${DENO_RUNTIME_VERSION}, linux-x86_64)`,
        );
        assert.equal(nativeReport.fleet.kind, netns.ok ? "ran" : "skipped");
      },
    );

    await t.step({
      name:
        "the aarch64 package runs under qemu-user: --version, the same round trip with the same patch as x86_64, and its agent in a fleet with the native control plane",
      ignore: !qemu.ok,
      fn: async () => {
        assert.ok(qemu.ok);
        const report = await smokePackage({
          poolboy: `${unpacked.aarch64}/poolboy`,
          label: "aarch64",
          controlPlanePoolboy: x86,
          env: qemu.env,
          fleet: netns.ok,
        });
        print(report);
        assert.equal(
          report.versionLine,
          `poolboy ${VERSION} (deno ${DENO_RUNTIME_VERSION}, linux-aarch64)`,
        );
        assert.equal(report.fleet.kind, netns.ok ? "ran" : "skipped");
        if (nativeReport !== undefined) {
          assert.equal(report.patchDigest, nativeReport.patchDigest, "the same patch on both");
        }
      },
    });

    await t.step(
      "deno task compile:x86_64 makes a binary that passes the same smoke test (skipped when denort cannot be downloaded)",
      async () => {
        const binary = `${work}/poolboy-compiled`;
        const argv = await compileCommand(binary);
        const out = await new Deno.Command(Deno.execPath(), {
          args: argv,
          cwd: ROOT,
          env: { NO_COLOR: "1" },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          signal: AbortSignal.timeout(COMPILE_TIMEOUT_MS),
        }).output();
        if (!out.success) {
          const err = new TextDecoder().decode(out.stderr);
          const download = /error sending request for url \((https:\/\/dl\.deno\.land\/[^)]*)\)/
            .exec(err);
          if (download !== null) {
            // The innermost "N: cause" line of the error chain (before any backtrace).
            const cause = err.split("Stack backtrace")[0].split("\n").map((l) => l.trim())
              .filter((l) => /^\d+: /.test(l)).at(-1) ?? "";
            console.log(
              `package: deno compile not run: denort cannot be downloaded from ${download[1]} (${
                cause.replace(/^\d+: /, "")
              })`,
            );
            return;
          }
          assert.fail(`deno ${argv.join(" ")} failed (exit ${out.code}):\n${err}`);
        }
        const report = await smokePackage({
          poolboy: binary,
          label: "x86_64",
          controlPlanePoolboy: x86,
          fleet: netns.ok,
        });
        print(report);
        assert.equal(report.fleet.kind, netns.ok ? "ran" : "skipped");
      },
    );
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

/** A stand-in `poolboy` (sh) whose commands do what `body` says; returns its path. */
async function fakePoolboy(dir: string, body: string): Promise<string> {
  const path = `${dir}/poolboy`;
  await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(path, 0o755);
  return path;
}

const RIGHT_VERSION = `echo "poolboy ${VERSION} (deno 2.9.6, linux-x86_64)"`;

Deno.test("the smoke test fails at its version step when --version names another architecture", async () => {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-fake-" });
  try {
    const poolboy = await fakePoolboy(dir, `echo "poolboy ${VERSION} (deno 2.9.6, linux-aarch64)"`);
    await assert.rejects(
      smokePackage({ poolboy, label: "x86_64", fleet: false }),
      (err: unknown) => {
        assert.ok(err instanceof SmokeError);
        assert.equal(err.step, "version");
        assert.match(err.message, /linux-aarch64.*expected .*linux-x86_64/);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the smoke test fails at its apply step when the applied file is not the target", async () => {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-fake-" });
  try {
    // encode BASE TARGET -o PATCH writes the target as the "patch"; apply BASE PATCH -o OUT
    // writes the base: a wrong file.
    const poolboy = await fakePoolboy(
      dir,
      `case $1 in\n  --version) ${RIGHT_VERSION} ;;\n  encode) cp "$3" "$5" ;;\n` +
        `  apply) cp "$2" "$5" ;;\n  *) exit 9 ;;\nesac`,
    );
    await assert.rejects(
      smokePackage({ poolboy, label: "x86_64", fleet: false }),
      (err: unknown) => {
        assert.ok(err instanceof SmokeError);
        assert.equal(err.step, "apply");
        assert.match(err.message, /differs from the target/);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a command that hangs past its deadline fails its step, and it and every process it started are killed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-fake-" });
  try {
    const pidFile = `${dir}/child.pid`;
    const poolboy = await fakePoolboy(dir, `sleep 300 &\necho $! > "${pidFile}"\nwait`);
    await assert.rejects(
      smokePackage({ poolboy, label: "x86_64", fleet: false, commandTimeoutMs: 1000 }),
      (err: unknown) => {
        assert.ok(err instanceof SmokeError);
        assert.equal(err.step, "version");
        assert.match(err.message, /did not finish within 1 s/);
        return true;
      },
    );
    const pid = (await Deno.readTextFile(pidFile)).trim();
    // Gone, or a zombie its new parent has not reaped yet: not running either way.
    const ps = await new Deno.Command("ps", { args: ["-o", "stat=", "-p", pid], stdout: "piped" })
      .output();
    const state = new TextDecoder().decode(ps.stdout).trim();
    assert.ok(state === "" || state.startsWith("Z"), `the child sleep ${pid} is ${state}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
