/**
 * The package's pieces that need no runtime download: the launcher gives each
 * command exactly its permissions (checked with a stand-in `lib/deno` that
 * prints what it is run with), B3SUMS and its signature verify or are refused,
 * a runtime tarball with another digest is refused, the Deno version the
 * packages carry is the one the README pins, and the bundle's `apply` loads
 * no `node:` module. Building real packages and
 * running them natively and under qemu: tests/package_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  bundleApp,
  checkRuntimeTarball,
  DENO_RUNTIME_VERSION,
  launcherText,
  packageCounter,
  PackageError,
  packageName,
  sealPackage,
  verifyPackage,
} from "../scripts/package.ts";
import { generateKey, publicKeyFileText } from "../release/keys.ts";
import { DELEGATION_TYPE, signDelegation, SPEC_VERSION } from "../release/documents.ts";
import { VERSION } from "../kernel/version.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");

/** A package directory whose lib/deno prints its arguments and MALLOC_ARENA_MAX, one per line. */
async function fakePackage(target: "x86_64" | "aarch64" = "x86_64"): Promise<string> {
  const parent = await Deno.makeTempDir({ prefix: "poolboy-launcher-" });
  const dir = `${parent}/${packageName(target)}`;
  await Deno.mkdir(`${dir}/lib/app/static`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/lib/deno`,
    '#!/bin/sh\necho "MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-}"\nfor a in "$@"; do echo "$a"; done\n',
  );
  await Deno.writeTextFile(`${dir}/lib/app/mod.js`, "// entry\n");
  await Deno.writeTextFile(`${dir}/lib/app/static/app.js`, "// ui\n");
  await Deno.writeTextFile(`${dir}/poolboy`, launcherText(target));
  await Deno.chmod(`${dir}/lib/deno`, 0o755);
  await Deno.chmod(`${dir}/poolboy`, 0o755);
  return dir;
}

async function launch(
  launcher: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; lines: string[]; err: string }> {
  const out = await new Deno.Command(launcher, {
    args,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    lines: new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== ""),
    err: new TextDecoder().decode(out.stderr),
  };
}

/** The `--allow-*` flags among the arguments the runtime got. */
function grants(lines: string[]): string[] {
  return lines.filter((l) => l.startsWith("--allow-"));
}

Deno.test("the agent may reach 100.64.0.0/10, read and write its data directory and read its trust root, nothing more", async () => {
  const dir = await fakePackage();
  try {
    const r = await launch(`${dir}/poolboy`, [
      "agent",
      "--control-plane",
      "100.64.0.1",
      "--data",
      "/var/lib/poolboy",
      "--trust-root=/etc/poolboy/root.pub",
    ]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(grants(r.lines), [
      "--allow-net=100.64.0.0/10",
      "--allow-read=/var/lib/poolboy,/etc/poolboy/root.pub",
      "--allow-write=/var/lib/poolboy",
      "--allow-sys=statfs",
    ]);
    assert.equal(r.lines[0], "MALLOC_ARENA_MAX=");
    assert.ok(r.lines.includes(`${dir}/lib/app/mod.js`));
    assert.ok(r.lines.includes("--no-remote") && r.lines.includes("--no-npm"));
    // the agent's own arguments follow, unchanged
    assert.deepEqual(r.lines.slice(-6), [
      "agent",
      "--control-plane",
      "100.64.0.1",
      "--data",
      "/var/lib/poolboy",
      "--trust-root=/etc/poolboy/root.pub",
    ]);
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("the agent may read POOLBOY_ENROLL_TOKEN only when it is set", async () => {
  const dir = await fakePackage();
  try {
    const r = await launch(`${dir}/poolboy`, ["agent", "--data", "d"], {
      POOLBOY_ENROLL_TOKEN: "pbe_x",
    });
    assert.ok(grants(r.lines).includes("--allow-env=POOLBOY_ENROLL_TOKEN"));
    const empty = await launch(`${dir}/poolboy`, ["agent", "--data", "d"], {
      POOLBOY_ENROLL_TOKEN: "",
    });
    assert.ok(!grants(empty.lines).some((g) => g.startsWith("--allow-env")));
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("the agent may run sh only when it has a health command or a switch hook", async () => {
  const dir = await fakePackage();
  try {
    const plain = await launch(`${dir}/poolboy`, [
      "agent",
      "--data",
      "d",
      "--node-id",
      "--on-switch",
    ]);
    assert.ok(
      !grants(plain.lines).some((g) => g.startsWith("--allow-run")),
      "a node id is not a hook",
    );
    for (const hook of ["--health-cmd", "--on-switch"]) {
      const r = await launch(`${dir}/poolboy`, ["agent", "--data", "d", hook, "true"]);
      assert.ok(grants(r.lines).includes("--allow-run=sh"), hook);
    }
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("the agent and the control plane refuse to start without --data, or with a comma in a granted path", async () => {
  const dir = await fakePackage();
  try {
    for (const cmd of ["agent", "controlplane"]) {
      const r = await launch(`${dir}/poolboy`, [cmd, "--bind", "100.64.0.1"]);
      assert.equal(r.code, 2);
      assert.match(r.err, /--data DIR is required/);
      assert.deepEqual(r.lines, [], "the runtime was not started");
    }
    const comma = await launch(`${dir}/poolboy`, ["agent", "--data", "/tmp/a,/"]);
    assert.equal(comma.code, 2);
    assert.match(comma.err, /may not contain a comma/);
    const trust = await launch(`${dir}/poolboy`, [
      "agent",
      "--data",
      "d",
      "--trust-root",
      "x,/etc",
    ]);
    assert.equal(trust.code, 2);
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("each command gets its own permissions, and anything else none", async () => {
  const dir = await fakePackage();
  const app = `${dir}/lib/app`;
  try {
    const expected: Record<string, string[]> = {
      controlplane: [
        "--allow-net=100.64.0.0/10",
        `--allow-read=cp,${app}`,
        "--allow-write=cp",
      ],
      encode: ["--allow-read", "--allow-write"],
      apply: ["--allow-read", "--allow-write"],
      index: ["--allow-read", "--allow-write"],
      keygen: ["--allow-read", "--allow-write"],
      delegate: ["--allow-read", "--allow-write"],
      token: ["--allow-read", "--allow-write"],
      inspect: ["--allow-read"],
      hash: ["--allow-read"],
      publish: ["--allow-read", "--allow-net=100.64.0.0/10", "--allow-env=POOLBOY_TOKEN"],
      rollback: ["--allow-read", "--allow-net=100.64.0.0/10", "--allow-env=POOLBOY_TOKEN"],
      rollout: ["--allow-net=100.64.0.0/10", "--allow-env=POOLBOY_TOKEN"],
      status: ["--allow-net=100.64.0.0/10", "--allow-env=POOLBOY_TOKEN"],
      audit: ["--allow-net=100.64.0.0/10", "--allow-env=POOLBOY_TOKEN"],
      device: ["--allow-net=100.64.0.0/10", "--allow-env=POOLBOY_TOKEN"],
      "--version": [],
      "--help": [],
      encdoe: [],
    };
    for (const [cmd, want] of Object.entries(expected)) {
      const r = await launch(`${dir}/poolboy`, [cmd, "--data", "cp"]);
      assert.equal(r.code, 0, `${cmd}: ${r.err}`);
      assert.deepEqual(grants(r.lines), want, cmd);
      const lean = cmd === "apply" || cmd === "encode";
      assert.equal(r.lines[0], lean ? "MALLOC_ARENA_MAX=1" : "MALLOC_ARENA_MAX=", cmd);
      assert.equal(r.lines.includes("--no-code-cache"), lean, cmd);
    }
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("POOLBOY_ALLOW_NET replaces the fleet's network, and a symlink to the launcher finds its lib/", async () => {
  const dir = await fakePackage("aarch64");
  const link = `${dir.replace(/\/[^/]+$/, "")}/bin-poolboy`;
  try {
    await Deno.symlink(`${dir}/poolboy`, link);
    const r = await launch(link, ["status"], { POOLBOY_ALLOW_NET: "10.0.0.0/8" });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(grants(r.lines), ["--allow-net=10.0.0.0/8", "--allow-env=POOLBOY_TOKEN"]);
    assert.ok(r.lines.includes(`${dir}/lib/app/mod.js`));
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("B3SUMS lists every file with its BLAKE3; a changed, added or missing file is refused", async () => {
  const dir = await fakePackage();
  try {
    await sealPackage(dir, "x86_64");
    const sums = await Deno.readTextFile(`${dir}/B3SUMS`);
    assert.deepEqual(
      sums.trim().split("\n").map((l) => l.slice(66)),
      ["lib/app/mod.js", "lib/app/static/app.js", "lib/deno", "poolboy"],
    );
    assert.equal((await Deno.stat(`${dir}/poolboy`)).mode! & 0o777, 0o755);
    assert.equal((await Deno.stat(`${dir}/lib/app/mod.js`)).mode! & 0o777, 0o644);
    const ok = await verifyPackage(dir);
    assert.equal(ok.files, 4);
    assert.equal(ok.target, "x86_64");

    await Deno.writeTextFile(`${dir}/lib/app/mod.js`, "// changed\n");
    await assert.rejects(verifyPackage(dir), /lib\/app\/mod\.js: BLAKE3 differs/);
    await sealPackage(dir, "x86_64");
    await Deno.writeTextFile(`${dir}/lib/app/extra.js`, "");
    await assert.rejects(verifyPackage(dir), /files B3SUMS does not list: lib\/app\/extra\.js/);
    await Deno.remove(`${dir}/lib/app/extra.js`);
    await Deno.remove(`${dir}/lib/app/static/app.js`);
    await assert.rejects(verifyPackage(dir), /listed in B3SUMS but missing/);
    await Deno.writeTextFile(`${dir}/B3SUMS`, `${"0".repeat(64)}  ../../etc/passwd\n`);
    await assert.rejects(verifyPackage(dir), /malformed line/);
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test("a signed B3SUMS verifies against the root that delegated its key, and against no other", async () => {
  const dir = await fakePackage("aarch64");
  const keys = await Deno.makeTempDir();
  try {
    const root = (await generateKey("root")).key;
    const otherRoot = (await generateKey("root")).key;
    const release = (await generateKey("release")).key;
    const delegation = await signDelegation({
      type: DELEGATION_TYPE,
      spec: SPEC_VERSION,
      version: 1,
      expires: Date.now() + 86_400_000,
      rootKeyId: root.keyId,
      releaseKeys: [{ keyId: release.keyId, publicKey: release.publicKey }],
    }, root);
    await Deno.writeTextFile(`${keys}/root.pub`, publicKeyFileText(root));
    await Deno.writeTextFile(`${keys}/other.pub`, publicKeyFileText(otherRoot));
    await sealPackage(dir, "aarch64", {
      key: release,
      delegation: new TextEncoder().encode(delegation),
      expires: Date.now() + 86_400_000,
    });
    const ok = await verifyPackage(dir, `${keys}/root.pub`);
    assert.match(ok.signature, /^verified: .*counter/);
    await assert.rejects(verifyPackage(dir, `${keys}/other.pub`), /signature refused/);

    // B3SUMS re-written over a changed file: the digests agree, the signature does not
    await Deno.writeTextFile(`${dir}/lib/app/mod.js`, "// trojan\n");
    const signature = await Deno.readFile(`${dir}/B3SUMS.release.json`);
    await sealPackage(dir, "aarch64");
    await Deno.writeFile(`${dir}/B3SUMS.release.json`, signature);
    await verifyPackage(dir); // digests alone: consistent
    await assert.rejects(verifyPackage(dir, `${keys}/root.pub`), /signature refused/);
  } finally {
    await Deno.remove(dir.replace(/\/[^/]+$/, ""), { recursive: true });
    await Deno.remove(keys, { recursive: true });
  }
});

Deno.test("a runtime tarball whose SHA-512 is not the pinned one is refused", async () => {
  const file = await Deno.makeTempFile({ suffix: ".tgz" });
  try {
    await Deno.writeTextFile(file, "not deno");
    await assert.rejects(checkRuntimeTarball(file, "aarch64"), (err: unknown) => {
      assert.ok(err instanceof PackageError);
      assert.match(
        err.message,
        /is not the pinned sha512-.* of @deno\/linux-arm64-glibc@2\.9\.6; refusing it/,
      );
      return true;
    });
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("the packages carry the Deno version the README pins, and their counter grows with poolboy's version", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const pinned = /^npx -y deno@([0-9.]+) task test$/m.exec(readme)?.[1];
  assert.equal(DENO_RUNTIME_VERSION, pinned);
  assert.ok(packageCounter("0.18.0") < packageCounter("0.18.1"));
  assert.ok(packageCounter("0.18.9") < packageCounter("0.19.0"));
  assert.ok(packageCounter("0.999.999") < packageCounter("1.0.0"));
  assert.ok(packageCounter(VERSION) >= 1);
  assert.throws(() => packageCounter("1.0"), /MAJOR.MINOR.PATCH/);
});

/** The static imports (`import ... from "X"`, `import "X"`) of a bundle file. */
function staticImports(text: string): string[] {
  return [...text.matchAll(/^(?:import|export)\b[^;]*?(?:from\s*)?"([^"]+)";?$/gm)].map((m) =>
    m[1]
  );
}

Deno.test("in the bundle, poolboy apply loads no node: module, as from the sources", async () => {
  const dir = await Deno.makeTempDir({ prefix: "poolboy-bundle-" });
  try {
    await bundleApp(`${dir}/app`);
    const entry = await Deno.readTextFile(`${dir}/app/mod.js`);
    const apply = /import\("\.\/(apply-[A-Z0-9]+\.js)"\)/.exec(entry)?.[1];
    assert.ok(apply, "mod.js loads apply from a piece of its own");
    const seen = new Set<string>();
    const nodeImports: string[] = [];
    const walk = async (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const spec of staticImports(await Deno.readTextFile(`${dir}/app/${file}`))) {
        if (spec.startsWith("node:")) nodeImports.push(`${file} → ${spec}`);
        else if (spec.startsWith("./")) await walk(spec.slice(2));
      }
    };
    await walk("mod.js");
    await walk(apply);
    assert.ok(seen.size >= 3, `read only ${[...seen].join(", ")}`);
    assert.deepEqual(nodeImports, []);
    // and the guard sees them where they are: the control plane's piece imports node:sqlite
    const all = await Array.fromAsync(Deno.readDir(`${dir}/app`));
    const sqlite = [];
    for (const e of all) {
      if (e.isFile && e.name.endsWith(".js")) {
        const text = await Deno.readTextFile(`${dir}/app/${e.name}`);
        if (staticImports(text).includes("node:sqlite")) sqlite.push(e.name);
      }
    }
    assert.ok(sqlite.length > 0, "some piece imports node:sqlite");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
