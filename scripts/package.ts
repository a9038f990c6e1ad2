/**
 * `deno task package`: the deployable packages, one per target, built without
 * `deno compile` (whose runtime, denort, only Deno's own download host has):
 *
 *   dist/poolboy-<VERSION>-x86_64-linux.tar.gz
 *   dist/poolboy-<VERSION>-aarch64-linux.tar.gz
 *
 * each one directory `poolboy-<VERSION>-<target>-linux/` holding
 *
 *   poolboy                  the launcher (POSIX sh): runs lib/deno on the bundle
 *                            with each command's permissions baked in
 *   lib/deno                 the Deno runtime for the target, from npm
 *                            (@deno/linux-x64-glibc, @deno/linux-arm64-glibc) at
 *                            the pinned version, its tarball's SHA-512 checked
 *   lib/app/mod.js, chunk-*  poolboy bundled by `deno bundle --code-splitting`:
 *                            one program, split so that a command loads only its
 *                            own code (apply's peak memory: see the README)
 *   lib/app/hash_worker.js   the hashing Worker, bundled on its own
 *   lib/app/static/          the dashboard's files
 *   B3SUMS                   BLAKE3 of every file above (b3sum's format)
 *   B3SUMS.release.json      with --key: B3SUMS signed as a release document
 *   delegation.json          with --key: the delegation (--keys) naming that key
 *
 * Unpacked anywhere it needs nothing else. `--verify PATH` checks an unpacked
 * package or a tarball: every file listed, nothing more, every digest right,
 * and with `--trust-root root.pub` the signature as a device checks a release.
 *
 * Usage: deno task package [--out DIR] [--targets x86_64,aarch64]
 *                          [--key release.key --keys keys.json [--expires 365d]]
 *        deno task package --verify PATH [--trust-root root.pub]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { VERSION } from "../kernel/version.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { readPublicKey, readSigningKey, type SigningKey } from "../release/keys.ts";
import { formatTime, RELEASE_TYPE, signRelease, SPEC_VERSION } from "../release/documents.ts";
import { checkRelease, EMPTY_TRUST_MEMORY } from "../release/trust_policy.ts";
import { expiryOption, readDelegationFile, requireDelegated } from "../cli/release_files.ts";

const REPO = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");

/** A package's target. */
export type Target = "x86_64" | "aarch64";

/** The runtime each target gets: an npm package of Deno's, pinned by version and digest. */
export interface RuntimeSource {
  readonly npmName: string;
  /** npm's `dist.integrity` of the tarball (SHA-512, base64). */
  readonly integrity: string;
  /** ELF `e_machine` of the binary (checked after unpacking). */
  readonly elfMachine: number;
}

/**
 * The Deno version every package carries: the one the README's set-up lines
 * pin (a test holds the two together).
 */
export const DENO_RUNTIME_VERSION = "2.9.6";

/** The targets, in build order. */
export const TARGETS: Readonly<Record<Target, RuntimeSource>> = {
  x86_64: {
    npmName: "@deno/linux-x64-glibc",
    integrity:
      "sha512-3md4TKLCuzsLDmfOoC5KN7NAZaxSVkMgm64vg6foD00JBADCpYS2/5QqXfzgnP5ZQz3iLP9vBQJtEgc116OAoQ==",
    elfMachine: 0x3e,
  },
  aarch64: {
    npmName: "@deno/linux-arm64-glibc",
    integrity:
      "sha512-poqhoH9B3nYloigEMPT5t8HY+wBeiuea1An5Q7fqgJzP0SYmWsoS/oUnWO/pEiA4ofzIBy1Elt/in58xKtxEoQ==",
    elfMachine: 0xb7,
  },
};

/** The network a package's commands may reach unless POOLBOY_ALLOW_NET says otherwise. */
export const PACKAGE_NET = "100.64.0.0/10";

/** What `buildPackages` made. */
export interface BuiltPackage {
  readonly target: Target;
  /** The .tar.gz. */
  readonly path: string;
  readonly bytes: number;
}

/** Signing: the release key, the delegation that names it, the signature's expiry. */
export interface PackageSigning {
  readonly keyFile: string;
  readonly keysFile: string;
  /** ms since the epoch */
  readonly expires: number;
}

/** A package could not be built or does not verify; the message says what to do. */
export class PackageError extends Error {
  override name = "PackageError";
}

/** Name of a package's directory (and, with .tar.gz, of its tarball). */
export function packageName(target: Target, version = VERSION): string {
  return `poolboy-${version}-${target}-linux`;
}

/**
 * The release counter a package's signature carries: grows with the version
 * (MAJOR × 10^6 + MINOR × 10^3 + PATCH), so a device that remembers counters
 * never takes an older package for a newer one.
 */
export function packageCounter(version = VERSION): number {
  const m = /^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$/.exec(version);
  if (!m) throw new PackageError(`version "${version}" is not MAJOR.MINOR.PATCH`);
  return Number(m[1]) * 1_000_000 + Number(m[2]) * 1_000 + Number(m[3]) + 1;
}

/** The model name a package's signature is for. */
export function packageModel(target: Target): string {
  return `poolboy-${target}-linux`;
}

// ---------------------------------------------------------------- the launcher

/**
 * The launcher's text. Every command runs `lib/deno run` on `lib/app/mod.js`
 * with no config, lockfile, remote or npm resolution, no prompt, and only the
 * permissions its command needs:
 *
 * - agent: the network (100.64.0.0/10), read and write of its `--data`
 *   directory (required), read of its `--trust-root` file and `statfs` (the
 *   free space check before a download); the variable POOLBOY_ENROLL_TOKEN
 *   only when it is set, `sh` only when `--health-cmd` or `--on-switch` is
 *   given.
 * - controlplane: the network, read and write of `--data`, read of lib/app
 *   (the dashboard's files and the hashing Worker).
 * - encode, apply, index, keygen, delegate, token: files; inspect, hash: read.
 * - publish, rollback: read, the network, POOLBOY_TOKEN; rollout, status,
 *   audit, device: the network and POOLBOY_TOKEN.
 * - anything else (`--help`, `--version`, a typo): nothing.
 *
 * POOLBOY_ALLOW_NET replaces 100.64.0.0/10 (e.g. a control plane outside the
 * tailnet's range). A path with a comma is refused: Deno's permission lists
 * are comma-separated.
 */
export function launcherText(target: Target, version = VERSION): string {
  return `#!/bin/sh
# poolboy ${version} for linux-${target} (made by \`deno task package\`).
# Runs lib/app/mod.js on lib/deno with the permissions of each command; see
# the README's "Packages" section. POOLBOY_ALLOW_NET replaces the network the
# fleet commands may reach (default ${PACKAGE_NET}).
set -eu
self=$(readlink -f -- "$0")
lib=$(dirname -- "$self")/lib
app="$lib/app/mod.js"
net=\${POOLBOY_ALLOW_NET:-${PACKAGE_NET}}
export DENO_NO_UPDATE_CHECK=1

# The value of option $1 (--opt VALUE or --opt=VALUE) among the rest; the last wins.
option() {
  want=$1; shift; found=; take=
  for arg in "$@"; do
    if [ -n "$take" ]; then
      [ "$take" = "$want" ] && found=$arg
      take=; continue
    fi
    case $arg in
      "$want"=*) found=\${arg#*=} ;;
      --*=*) ;;
      --insecure | --help | -h | --version | --quiet | -q | --json) ;;
      -*) take=$arg ;;
    esac
  done
  printf '%s' "$found"
}
# Sets data to the --data DIR command $1 requires ($2: what DIR is to it), or exits 2.
require_data() {
  cmd=$1; what=$2; shift 2
  data=$(option --data "$@")
  if [ -z "$data" ]; then
    echo "poolboy $cmd: --data DIR is required ($what)" >&2
    exit 2
  fi
  no_comma --data "$data"
}
no_comma() {
  case $2 in *,*)
    echo "poolboy: $1 may not contain a comma (Deno's permission lists are comma-separated): $2" >&2
    exit 2 ;;
  esac
}
run() { exec "$lib/deno" run --no-config --no-lock --no-remote --no-npm --no-prompt --unstable-net "$@"; }
semi=--v8-flags=--max-semi-space-size=1

case \${1:-} in
  agent)
    require_data agent "its state directory; the agent may read and write only there" "$@"
    read=$data
    trust=$(option --trust-root "$@")
    if [ -n "$trust" ]; then no_comma --trust-root "$trust"; read="$read,$trust"; fi
    shell=
    if [ -n "$(option --health-cmd "$@")$(option --on-switch "$@")" ]; then shell=--allow-run=sh; fi
    token=
    if [ -n "\${POOLBOY_ENROLL_TOKEN:-}" ]; then token=--allow-env=POOLBOY_ENROLL_TOKEN; fi
    run $semi --allow-net="$net" --allow-read="$read" --allow-write="$data" \\
      --allow-sys=statfs $token $shell "$app" "$@" ;;
  controlplane)
    require_data controlplane "its state directory" "$@"
    no_comma "the package's path" "$lib"
    run --v8-flags=--max-semi-space-size=1,--max-old-space-size=160 --allow-net="$net" \\
      --allow-read="$data,$lib/app" --allow-write="$data" "$app" "$@" ;;
  apply | encode)
    # less memory: one malloc arena, no V8 code cache (as \`deno task apply\` and \`deno task encode\`)
    export MALLOC_ARENA_MAX=1
    run --no-code-cache $semi --allow-read --allow-write "$app" "$@" ;;
  index | keygen | delegate | token)
    run $semi --allow-read --allow-write "$app" "$@" ;;
  inspect | hash)
    run $semi --allow-read "$app" "$@" ;;
  publish | rollback)
    run --allow-read --allow-net="$net" --allow-env=POOLBOY_TOKEN "$app" "$@" ;;
  rollout | status | audit | device)
    run --allow-net="$net" --allow-env=POOLBOY_TOKEN "$app" "$@" ;;
  *)
    run "$app" "$@" ;;
esac
`;
}

// ---------------------------------------------------------------- building

function cacheDir(): string {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME");
  const base = xdg && xdg.startsWith("/") ? xdg : home ? `${home}/.cache` : `${REPO}/.cache`;
  return `${base}/poolboy/runtimes`;
}

async function run(cmd: string, args: string[], what: string, cwd = REPO): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  } catch (err) {
    throw new PackageError(`${what}: cannot run ${cmd} (${(err as Error).message})`);
  }
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
    throw new PackageError(`${what} failed (${cmd} exit ${out.code}):\n${text}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function sha512Integrity(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
  let binary = "";
  for (const b of digest) binary += String.fromCharCode(b);
  return `sha512-${btoa(binary)}`;
}

/**
 * Refuses a runtime tarball whose SHA-512 is not the one pinned for `target`
 * (a changed or truncated download, or another version's).
 */
export async function checkRuntimeTarball(path: string, target: Target): Promise<void> {
  const source = TARGETS[target];
  const got = await sha512Integrity(await Deno.readFile(path));
  if (got !== source.integrity) {
    throw new PackageError(
      `${path}: SHA-512 ${got} is not the pinned ${source.integrity} of ${source.npmName}@${DENO_RUNTIME_VERSION}; refusing it (delete the file to fetch it again)`,
    );
  }
}

/**
 * The runtime tarball of `target`, from the cache or `npm pack`; refused
 * unless its SHA-512 is the pinned one.
 */
async function runtimeTarball(target: Target, log: (line: string) => void): Promise<string> {
  const source = TARGETS[target];
  const dir = cacheDir();
  await Deno.mkdir(dir, { recursive: true });
  const file = `${dir}/${
    source.npmName.replace("@", "").replace("/", "-")
  }-${DENO_RUNTIME_VERSION}.tgz`;
  const check = (path: string) => checkRuntimeTarball(path, target);
  try {
    await check(file);
    return file;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  log(`fetching ${source.npmName}@${DENO_RUNTIME_VERSION} from npm (about 42 MB)`);
  const temp = await Deno.makeTempDir({ dir, prefix: ".pack-" });
  try {
    const name = (await run(
      "npm",
      ["pack", "--silent", "--pack-destination", temp, `${source.npmName}@${DENO_RUNTIME_VERSION}`],
      `npm pack ${source.npmName}@${DENO_RUNTIME_VERSION} (npm and the npm registry are needed once per target)`,
      temp,
    )).trim().split("\n").pop()!;
    await check(`${temp}/${name}`);
    await Deno.rename(`${temp}/${name}`, file);
  } finally {
    await Deno.remove(temp, { recursive: true }).catch(() => {});
  }
  return file;
}

/** ELF `e_machine` of a file (undefined when it is not ELF). */
export async function elfMachine(path: string): Promise<number | undefined> {
  const file = await Deno.open(path);
  try {
    const head = new Uint8Array(20);
    let got = 0;
    while (got < head.length) {
      const n = await file.read(head.subarray(got));
      if (n === null) break;
      got += n;
    }
    if (got < 20 || head[0] !== 0x7f || head[1] !== 0x45 || head[2] !== 0x4c || head[3] !== 0x46) {
      return undefined;
    }
    return head[18] | (head[19] << 8);
  } finally {
    file.close();
  }
}

/** Every regular file under `dir`, as paths relative to it, sorted; any other kind of entry is refused. */
export async function filesUnder(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${dir}/${prefix}`)) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory) out.push(...await filesUnder(dir, rel));
    else if (entry.isFile) out.push(rel);
    else throw new PackageError(`${dir}/${rel}: neither a file nor a directory`);
  }
  return out.sort();
}

/** The text of B3SUMS for the files `paths` (relative to `dir`). */
async function b3sums(dir: string, paths: string[]): Promise<string> {
  let text = "";
  for (const path of paths) {
    text += `${toHex(blake3(await Deno.readFile(`${dir}/${path}`)))}  ${path}\n`;
  }
  return text;
}

/** Files a package holds beside those B3SUMS lists: B3SUMS itself and, with `--key`, its signature. */
export const SIGNATURE_FILES = ["B3SUMS", "B3SUMS.release.json", "delegation.json"];

/**
 * Bundles poolboy into `dir` (created): the entry `mod.js` and its pieces,
 * the Worker as `hash_worker.js`, the dashboard's files in `static/`.
 */
export async function bundleApp(dir: string): Promise<void> {
  const deno = Deno.execPath();
  await run(deno, [
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    "--code-splitting",
    "--outdir",
    dir,
    "mod.ts",
  ], "deno bundle mod.ts");
  await run(deno, [
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    "-o",
    `${dir}/hash_worker.js`,
    "codec/hash_worker.ts",
  ], "deno bundle codec/hash_worker.ts");
  const entry = await Deno.readTextFile(`${dir}/mod.js`);
  if (!entry.includes("import.meta.main")) {
    throw new PackageError(`${dir}/mod.js does not look like poolboy's entry`);
  }
  for (const file of await filesUnder(dir)) {
    const text = await Deno.readTextFile(`${dir}/${file}`);
    const remote = /\bfrom\s*"(npm:|jsr:|https?:)[^"]*"|import\(\s*"(npm:|jsr:|https?:)/.exec(text);
    if (remote) {
      throw new PackageError(`${dir}/${file} still imports ${remote[0]}: the bundle must be whole`);
    }
  }
  await Deno.mkdir(`${dir}/static`);
  for await (const entry of Deno.readDir(`${REPO}/controlplane/ui/static`)) {
    if (entry.isFile) {
      await Deno.copyFile(
        `${REPO}/controlplane/ui/static/${entry.name}`,
        `${dir}/static/${entry.name}`,
      );
    }
  }
}

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) await copyTree(`${from}/${entry.name}`, `${to}/${entry.name}`);
    else await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

/** Signing material as loaded: the release key, the delegation's bytes, the expiry. */
export interface LoadedSigning {
  readonly key: SigningKey;
  readonly delegation: Uint8Array;
  readonly expires: number;
}

/**
 * Writes `root`/B3SUMS over every file under `root` (modes: 0755 for the
 * launcher and the runtime, 0644 for the rest), and with `signing` the signed
 * B3SUMS.release.json and the delegation.json beside it.
 */
export async function sealPackage(
  root: string,
  target: Target,
  signing?: LoadedSigning,
  version = VERSION,
): Promise<void> {
  const files = (await filesUnder(root)).filter((f) => !SIGNATURE_FILES.includes(f));
  for (const file of files) {
    const executable = file === "poolboy" || file === "lib/deno";
    await Deno.chmod(`${root}/${file}`, executable ? 0o755 : 0o644);
  }
  const sums = await b3sums(root, files);
  await Deno.writeTextFile(`${root}/B3SUMS`, sums, { mode: 0o644 });
  if (signing === undefined) return;
  const bytes = new TextEncoder().encode(sums);
  const release = await signRelease({
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model: packageModel(target),
    version,
    target: { blake3: toHex(blake3(bytes)), size: bytes.length },
    counter: packageCounter(version),
    expires: signing.expires,
    deviceClass: null,
  }, signing.key);
  await Deno.writeTextFile(`${root}/B3SUMS.release.json`, release, { mode: 0o644 });
  await Deno.writeFile(`${root}/delegation.json`, signing.delegation, { mode: 0o644 });
}

/** Options of `buildPackages`. */
export interface BuildOptions {
  /** Where the tarballs go (created). */
  readonly outDir: string;
  readonly targets?: readonly Target[];
  readonly signing?: PackageSigning;
  /** No progress lines. */
  readonly quiet?: boolean;
}

/**
 * Builds one package per target into `outDir`: each tarball is written beside
 * its final name and renamed into place, so a failed build leaves no partial
 * package (an earlier one of the same name stays as it was).
 */
export async function buildPackages(options: BuildOptions): Promise<BuiltPackage[]> {
  const targets = options.targets ?? (Object.keys(TARGETS) as Target[]);
  const log = options.quiet ? () => {} : (line: string) => console.error(`package: ${line}`);
  const signing = options.signing === undefined ? undefined : await loadSigning(options.signing);
  await Deno.mkdir(options.outDir, { recursive: true });
  const work = await Deno.makeTempDir({ prefix: "poolboy-package-" });
  const built: BuiltPackage[] = [];
  try {
    log(`bundling poolboy ${VERSION}`);
    await bundleApp(`${work}/app`);
    for (const target of targets) {
      const tarball = await runtimeTarball(target, log);
      const name = packageName(target);
      const root = `${work}/${name}`;
      await Deno.mkdir(`${root}/lib`, { recursive: true });
      await run("tar", [
        "-xzf",
        tarball,
        "-C",
        `${root}/lib`,
        "--strip-components=1",
        "package/deno",
      ], `unpack ${tarball}`);
      const machine = await elfMachine(`${root}/lib/deno`);
      if (machine !== TARGETS[target].elfMachine) {
        throw new PackageError(
          `${tarball}: package/deno is not a ${target} executable (ELF machine ${machine})`,
        );
      }
      await copyTree(`${work}/app`, `${root}/lib/app`);
      await Deno.writeTextFile(`${root}/poolboy`, launcherText(target));
      await sealPackage(root, target, signing);
      const out = `${options.outDir}/${name}.tar.gz`;
      const temporary = `${out}.tmp-${Deno.pid}`;
      try {
        await run("tar", [
          "--owner=0",
          "--group=0",
          "--numeric-owner",
          "--mtime=@0",
          "--sort=name",
          "-I",
          "gzip -n -9",
          "-C",
          work,
          "-cf",
          temporary,
          name,
        ], `tar ${name}`);
        await Deno.rename(temporary, out);
      } catch (err) {
        await Deno.remove(temporary).catch(() => {});
        throw err;
      }
      const bytes = (await Deno.stat(out)).size;
      built.push({ target, path: out, bytes });
      log(`${out} (${(bytes / 1e6).toFixed(1)} MB)`);
    }
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  return built;
}

/**
 * Reads the release key and the delegation, refusing a key the delegation
 * does not name (devices would refuse what it signs).
 */
export async function loadSigning(s: PackageSigning): Promise<LoadedSigning> {
  const key = await readSigningKey(s.keyFile, "release");
  const delegation = await readDelegationFile(s.keysFile);
  requireDelegated(key, s.keyFile, delegation);
  return { key, delegation: delegation.bytes, expires: s.expires };
}

// ---------------------------------------------------------------- verifying

/** What `verifyPackage` found. */
export interface Verified {
  readonly target: Target;
  readonly files: number;
  /** "signed by <key id>" when checked against a trust root; else why not. */
  readonly signature: string;
}

/**
 * Checks an unpacked package directory: B3SUMS lists exactly its files (the
 * signature files aside), each with its BLAKE3; with `trustRoot`, that
 * B3SUMS.release.json is signed by a release key delegation.json (signed by
 * the root) names, for this target and version, and for this B3SUMS.
 */
export async function verifyPackage(dir: string, trustRoot?: string): Promise<Verified> {
  const top = dir.replace(/\/$/, "").split("/").pop() ?? "";
  const m = /^poolboy-(.+)-(x86_64|aarch64)-linux$/.exec(top);
  if (!m) throw new PackageError(`${dir}: not a package directory (poolboy-VERSION-TARGET-linux)`);
  const [, version, target] = m as unknown as [string, string, Target];
  let sums: string;
  try {
    sums = await Deno.readTextFile(`${dir}/B3SUMS`);
  } catch {
    throw new PackageError(`${dir}/B3SUMS is missing: not a package, or a damaged one`);
  }
  const listed = new Map<string, string>();
  for (const line of sums.split("\n")) {
    if (line === "") continue;
    const l = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
    if (!l || l[2].split("/").includes("..") || l[2].startsWith("/")) {
      throw new PackageError(`${dir}/B3SUMS: malformed line "${line.slice(0, 100)}"`);
    }
    listed.set(l[2], l[1]);
  }
  const present = (await filesUnder(dir)).filter((f) => !SIGNATURE_FILES.includes(f));
  const extra = present.filter((f) => !listed.has(f));
  if (extra.length > 0) {
    throw new PackageError(`${dir}: files B3SUMS does not list: ${extra.join(", ")}`);
  }
  for (const [path, digest] of listed) {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(`${dir}/${path}`);
    } catch {
      throw new PackageError(`${dir}/${path} is listed in B3SUMS but missing`);
    }
    if (toHex(blake3(bytes)) !== digest) {
      throw new PackageError(`${dir}/${path}: BLAKE3 differs from B3SUMS (damaged or changed)`);
    }
  }
  let signature = "not checked (no --trust-root)";
  if (trustRoot !== undefined) {
    const read = (f: string) => Deno.readFile(`${dir}/${f}`).catch(() => null);
    const sumsBytes = new TextEncoder().encode(sums);
    const decision = await checkRelease({
      root: await readPublicKey(trustRoot, "root"),
      delegation: await read("delegation.json"),
      release: await read("B3SUMS.release.json"),
      announced: {
        model: packageModel(target),
        version,
        target: toHex(blake3(sumsBytes)),
        targetSize: sumsBytes.length,
      },
      deviceClass: null,
      memory: EMPTY_TRUST_MEMORY,
      now: Date.now(),
    });
    if (!decision.ok) throw new PackageError(`${dir}: signature refused: ${decision.reason}`);
    signature =
      `verified: signed by a release key of delegation version ${decision.delegation.version}, counter ${decision.release.counter}, expires ${
        formatTime(decision.release.expires)
      }`;
  }
  return { target, files: listed.size, signature };
}

// ---------------------------------------------------------------- command line

const HELP = `deno task package — the deployable packages (x86_64 and aarch64 Linux)

Usage: deno task package [--out DIR] [--targets x86_64,aarch64]
                         [--key release.key --keys keys.json [--expires 365d]]
       deno task package --verify PATH [--trust-root root.pub]

Writes DIR/poolboy-${VERSION}-<target>-linux.tar.gz (DIR: dist/ of the repository)
for each target: the Deno ${DENO_RUNTIME_VERSION} runtime from npm (SHA-512 pinned; fetched
once with npm pack into ~/.cache/poolboy/runtimes), poolboy bundled by deno
bundle, the launcher \`poolboy\` with each command's permissions, and B3SUMS.
With --key (a release key) and --keys (the delegation naming it) B3SUMS is
signed as a release document (B3SUMS.release.json, expiring after --expires,
default 365d) and the delegation is shipped beside it.

--verify checks an unpacked package directory or a .tar.gz: every file in
B3SUMS with its BLAKE3 and nothing unlisted; with --trust-root, the signature
as a device checks a release.

Exit codes: 0 ok, 1 failed (the message says why), 2 usage.`;

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: "string" },
        targets: { type: "string" },
        key: { type: "string" },
        keys: { type: "string" },
        expires: { type: "string" },
        verify: { type: "string" },
        "trust-root": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    console.error(`package: ${(err as Error).message} (see deno task package --help)`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const caller = Deno.env.get("INIT_CWD") || Deno.cwd();
  const abs = (p: string) => p.startsWith("/") ? p : `${caller}/${p}`;
  try {
    if (values.verify !== undefined) {
      return await verifyCommand(
        abs(values.verify),
        values["trust-root"] && abs(values["trust-root"]),
      );
    }
    const targets = (values.targets ?? "x86_64,aarch64").split(",").map((t) => t.trim());
    for (const t of targets) {
      if (!(t in TARGETS)) {
        console.error(`package: unknown target "${t}" (known: ${Object.keys(TARGETS).join(", ")})`);
        return 2;
      }
    }
    if ((values.key === undefined) !== (values.keys === undefined)) {
      console.error(
        "package: --key and --keys go together (the release key and the delegation naming it)",
      );
      return 2;
    }
    const signing = values.key === undefined ? undefined : {
      keyFile: abs(values.key),
      keysFile: abs(values.keys!),
      expires: expiryOption("expires", values.expires, 365 * 86_400_000, Date.now()),
    };
    const built = await buildPackages({
      outDir: abs(values.out ?? `${REPO}/dist`),
      targets: targets as Target[],
      signing,
    });
    for (const p of built) console.log(`${p.path}  ${(p.bytes / 1e6).toFixed(1)} MB  ${p.target}`);
    return 0;
  } catch (err) {
    if (err instanceof PackageError || (err instanceof Error && "exitCode" in err)) {
      console.error(`package: ${err.message}`);
      return (err as { exitCode?: number }).exitCode === 2 ? 2 : 1;
    }
    throw err;
  }
}

async function verifyCommand(path: string, trustRoot: string | undefined): Promise<number> {
  let dir = path;
  let temp: string | undefined;
  if (path.endsWith(".tar.gz")) {
    temp = await Deno.makeTempDir({ prefix: "poolboy-verify-" });
    await run("tar", ["-xzf", path, "-C", temp], `unpack ${path}`);
    const entries = [];
    for await (const e of Deno.readDir(temp)) entries.push(e);
    if (entries.length !== 1 || !entries[0].isDirectory) {
      await Deno.remove(temp, { recursive: true });
      throw new PackageError(`${path}: a package holds one directory`);
    }
    dir = `${temp}/${entries[0].name}`;
  }
  try {
    const v = await verifyPackage(dir, trustRoot);
    console.log(
      `${path}: ${v.target}, ${v.files} files as B3SUMS lists them; signature ${v.signature}`,
    );
    return 0;
  } finally {
    if (temp) await Deno.remove(temp, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
