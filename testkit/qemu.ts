/**
 * Running aarch64 Linux executables on an x86_64 host through qemu-user, for
 * the package smoke test (tests/package_test.ts, testkit/package_smoke.ts):
 * `aarch64Runner()` makes sure an aarch64 ELF file (the aarch64 package's
 * `lib/deno`, which its launcher execs) runs directly, and says which
 * environment its processes need, or, in one actionable line, why it cannot.
 *
 * What it takes (Debian; `.ci/run` installs the packages):
 * - `qemu-user-static` (/usr/bin/qemu-aarch64-static and its binfmt entry file
 *   /usr/lib/binfmt.d/qemu-aarch64.conf);
 * - `libc6-arm64-cross` and `libgcc-s1-arm64-cross`: the aarch64 loader,
 *   libc and libgcc_s.so.1 under /usr/aarch64-linux-gnu, which qemu is pointed
 *   at with QEMU_LD_PREFIX;
 * - binfmt_misc mounted at /proc/sys/fs/binfmt_misc with the `qemu-aarch64`
 *   entry registered. As root both are done here when missing (mount, then the
 *   entry file's line written to `register`; a concurrent registration's
 *   "File exists" is fine). Without root, a missing mount or entry is the reason.
 *
 * @module
 */

/** Where binfmt_misc is mounted. */
export const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";
/** The binfmt_misc entry qemu-user-static registers for aarch64 ELF files. */
export const BINFMT_ENTRY = `${BINFMT_DIR}/qemu-aarch64`;
/** qemu-user-static's entry, already in `register` format. */
export const BINFMT_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf";
/** The emulator itself. */
export const QEMU_AARCH64 = "/usr/bin/qemu-aarch64-static";
/** The aarch64 sysroot of Debian's cross libraries: QEMU_LD_PREFIX. */
export const AARCH64_SYSROOT = "/usr/aarch64-linux-gnu";

/** The files of the sysroot that the aarch64 Deno runtime loads, with the package that has each. */
const SYSROOT_FILES: readonly { readonly path: string; readonly pkg: string }[] = [
  { path: `${AARCH64_SYSROOT}/lib/ld-linux-aarch64.so.1`, pkg: "libc6-arm64-cross" },
  { path: `${AARCH64_SYSROOT}/lib/libc.so.6`, pkg: "libc6-arm64-cross" },
  { path: `${AARCH64_SYSROOT}/lib/libgcc_s.so.1`, pkg: "libgcc-s1-arm64-cross" },
];

/** How long the optional probe (`PROBE --version`) may take. */
const PROBE_TIMEOUT_MS = 60_000;
/** How long `mount` may take. */
const MOUNT_TIMEOUT_MS = 10_000;

/** aarch64 executables run here, given `env` (QEMU_LD_PREFIX) in their environment. */
export interface Aarch64Ready {
  readonly ok: true;
  readonly env: Record<string, string>;
}

/** They do not: `why` is one line saying what to install or do. */
export interface Aarch64Unavailable {
  readonly ok: false;
  readonly why: string;
}

/** What `aarch64Runner` found. */
export type Aarch64Runner = Aarch64Ready | Aarch64Unavailable;

/** Options of `aarch64Runner`. */
export interface Aarch64RunnerOptions {
  /**
   * An aarch64 executable to run with `--version` once everything is in
   * place (e.g. a package's lib/deno): proves the whole chain works. Its
   * failure is the reason, with the first line of its stderr.
   */
  readonly probe?: string;
}

/**
 * Makes aarch64 ELF executables run directly on this host if it can (see the
 * module's comment) and returns the environment they need, or why not.
 */
export async function aarch64Runner(options: Aarch64RunnerOptions = {}): Promise<Aarch64Runner> {
  if (Deno.build.os !== "linux") {
    return unavailable(`this is ${Deno.build.os}, not Linux: qemu-user needs Linux`);
  }
  if (Deno.build.arch === "aarch64") {
    return await probed({ ok: true, env: {} }, options.probe);
  }
  if (!await isFile(QEMU_AARCH64)) {
    return unavailable(
      `${QEMU_AARCH64} is missing: apt-get install -y qemu-user-static`,
    );
  }
  const missing: string[] = [];
  for (const f of SYSROOT_FILES) {
    if (!await isFile(f.path) && !missing.includes(f.pkg)) missing.push(f.pkg);
  }
  if (missing.length > 0) {
    return unavailable(
      `the aarch64 libraries under ${AARCH64_SYSROOT} are missing: apt-get install -y ${
        missing.join(" ")
      }`,
    );
  }
  const root = await isRoot();
  if (!await procExists(`${BINFMT_DIR}/register`)) {
    if (!root) {
      return unavailable(
        `binfmt_misc is not mounted at ${BINFMT_DIR} and mounting it needs root ` +
          `(as root: mount -t binfmt_misc binfmt_misc ${BINFMT_DIR})`,
      );
    }
    const mounted = await run(
      ["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR],
      MOUNT_TIMEOUT_MS,
    );
    if (!mounted.ok) {
      return unavailable(`cannot mount binfmt_misc at ${BINFMT_DIR}: ${mounted.detail}`);
    }
  }
  if (!await procExists(BINFMT_ENTRY)) {
    if (!root) {
      return unavailable(
        `the binfmt_misc entry qemu-aarch64 is not registered and registering it needs root ` +
          `(as root: grep -v '^#' ${BINFMT_CONF} > ${BINFMT_DIR}/register)`,
      );
    }
    const registered = await register();
    if (registered !== undefined) return unavailable(registered);
  }
  const status = await procText(`${BINFMT_DIR}/status`);
  if (status !== undefined && status.trim() === "disabled") {
    return unavailable(`binfmt_misc is disabled (as root: echo 1 > ${BINFMT_DIR}/status)`);
  }
  const entry = await procText(BINFMT_ENTRY);
  if (entry === undefined || entry.split("\n")[0].trim() !== "enabled") {
    return unavailable(
      `the binfmt_misc entry qemu-aarch64 is disabled (as root: echo 1 > ${BINFMT_ENTRY})`,
    );
  }
  return await probed({ ok: true, env: { QEMU_LD_PREFIX: AARCH64_SYSROOT } }, options.probe);
}

function unavailable(why: string): Aarch64Unavailable {
  return { ok: false, why };
}

/** Writes qemu-user-static's entry line to `register`; returns why it failed, if it did. */
async function register(): Promise<string | undefined> {
  const conf = await readText(BINFMT_CONF);
  if (conf === undefined) {
    return `${BINFMT_CONF} is missing: apt-get install -y qemu-user-static`;
  }
  const line = conf.split("\n").map((l) => l.trim()).find((l) => l !== "" && !l.startsWith("#"));
  if (line === undefined || !line.startsWith(":qemu-aarch64:")) {
    return `${BINFMT_CONF} has no ":qemu-aarch64:" entry line`;
  }
  const written = await run(
    ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", line, `${BINFMT_DIR}/register`],
    MOUNT_TIMEOUT_MS,
  );
  // "File exists": someone registered it in the meantime: just as good.
  if (!written.ok && !await procExists(BINFMT_ENTRY)) {
    return `cannot register qemu-aarch64 in ${BINFMT_DIR}/register: ${written.detail}`;
  }
  return undefined;
}

/** Runs `probe --version` with `ready.env`, when a probe is given. */
async function probed(ready: Aarch64Ready, probe: string | undefined): Promise<Aarch64Runner> {
  if (probe === undefined) return ready;
  const result = await run([probe, "--version"], PROBE_TIMEOUT_MS, ready.env);
  if (!result.ok) {
    return unavailable(`${probe} --version does not run under qemu: ${result.detail}`);
  }
  return ready;
}

/** Whether this process runs as root (`id -u`: Deno.uid needs a sys permission the tests lack). */
async function isRoot(): Promise<boolean> {
  return (await output(["id", "-u"]))?.trim() === "0";
}

/**
 * Whether a file under /proc exists. Files under /proc are asked about through
 * `test` and `cat`: Deno refuses them to anything but --allow-all.
 */
async function procExists(path: string): Promise<boolean> {
  return (await run(["test", "-e", path], MOUNT_TIMEOUT_MS)).ok;
}

/** A file under /proc, through `cat`. */
function procText(path: string): Promise<string | undefined> {
  return output(["cat", path]);
}

/** The output of a short command, or undefined when it fails. */
async function output(argv: readonly string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs `argv` to completion (killed at the deadline); `detail`: why it failed, in one line. */
async function run(
  argv: readonly string[],
  timeoutMs: number,
  env: Record<string, string> = {},
): Promise<{ ok: true } | { ok: false; detail: string }> {
  let out;
  try {
    out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
  } catch (err) {
    return { ok: false, detail: message(err) };
  }
  if (out.success) return { ok: true };
  const first = new TextDecoder().decode(out.stderr.subarray(0, 4096)).trim().split("\n")[0];
  const how = out.signal !== null ? `killed by ${out.signal}` : `exit ${out.code}`;
  return { ok: false, detail: `${how}${first ? `: ${first}` : ""}` };
}
