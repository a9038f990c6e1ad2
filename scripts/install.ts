/**
 * `deno task install [--bin DIR]`: puts a `poolboy` command on PATH that runs
 * this repository's mod.ts with the permissions and V8 flags of deno.json's
 * `poolboy` task (the one place they are written), by the Deno that ran this
 * script. It writes a small shell launcher, `DIR/poolboy`, that execs that
 * Deno by its absolute path (or, should that file be gone, `npx -y deno@V` of
 * the same version), so a machine with only `npx -y deno@X` needs nothing else.
 * The launcher keeps the caller's folder as the current directory: relative
 * paths mean where the user stands.
 *
 * DIR: `--bin DIR`, else the first of ~/.local/bin, /usr/local/bin, ~/bin that
 * is on PATH and writable, else ~/.local/bin (created) with the line to add it
 * to PATH. Uninstall: delete DIR/poolboy.
 *
 * @module
 */

const REPO = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");

/** The flags of deno.json's `poolboy` task (`deno run FLAGS mod.ts`). */
export function poolboyTaskFlags(denoJson: string): string[] {
  const config = JSON.parse(denoJson) as { tasks?: Record<string, string> };
  const task = config.tasks?.poolboy;
  const m = task === undefined ? null : /^deno run (.+) mod\.ts$/.exec(task.trim());
  if (!m) throw new Error('deno.json has no task "poolboy" of the form "deno run FLAGS mod.ts"');
  return m[1].split(/\s+/);
}

/** Quotes `text` for a POSIX shell. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * The launcher's text: runs `repo`/mod.ts with `flags` by `deno` (npx `version`
 * if gone). `poolboy apply` and `poolboy encode` run as their tasks do
 * (`LEAN_RUN`): one malloc arena, no deno.json, no V8 code cache — ~2.5 MB
 * less peak memory, of a device's 64 MB budget and encode's 100 MB.
 */
export function launcherText(repo: string, flags: string[], deno: string, version: string): string {
  const line = (config: string[]) =>
    ["run", ...flags, ...config, `${repo}/mod.ts`].map(shellQuote).join(" ");
  const args = line([`--config=${repo}/deno.json`]);
  const leanArgs = line(LEAN_RUN);
  return `#!/bin/sh
# poolboy: written by \`deno task install\` from ${repo}.
# Runs its mod.ts with the permissions of deno.json's "poolboy" task, in the
# caller's folder. Run the install again after changing them; delete this file to uninstall.
deno=${shellQuote(deno)}
if [ "$1" = apply ] || [ "$1" = encode ]; then
  # as \`deno task apply\` and \`deno task encode\`: less memory (one malloc arena, no config, no code cache)
  export ${LEAN_ENV}
  if [ -x "$deno" ]; then
    exec "$deno" ${leanArgs} "$@"
  fi
  exec npx -y ${shellQuote(`deno@${version}`)} ${leanArgs} "$@"
fi
if [ -x "$deno" ]; then
  exec "$deno" ${args} "$@"
fi
exec npx -y ${shellQuote(`deno@${version}`)} ${args} "$@"
`;
}

/**
 * How `poolboy apply` and `poolboy encode` run, as deno.json's apply and
 * encode tasks (a test holds the tasks to it, through `scripts/measure.ts`
 * `leanCommand`): the environment they set — one malloc arena (glibc's
 * per-thread arenas hold ~1 MB more, and encode has a hashing Worker's
 * thread) — and the flags they take in place of `--config` — no deno.json (no
 * import map, lockfile or npm resolver: neither command imports an npm
 * package), no V8 code cache (its mmapped store is resident).
 */
export const LEAN_ENV = "MALLOC_ARENA_MAX=1";
/** See `LEAN_ENV`. */
export const LEAN_RUN = ["--no-config", "--no-code-cache"];

function isWritableDir(dir: string): boolean {
  try {
    Deno.mkdirSync(dir, { recursive: true });
    const probe = `${dir}/.poolboy-install-${Deno.pid}`;
    Deno.writeTextFileSync(probe, "");
    Deno.removeSync(probe);
    return true;
  } catch {
    return false;
  }
}

function envOrEmpty(name: string): string {
  return Deno.env.get(name) ?? "";
}

/** The bin directory to write to, and whether it is on PATH. */
function chooseBinDir(given: string | undefined): { dir: string; onPath: boolean } {
  const path = envOrEmpty("PATH").split(":").filter((p) => p !== "");
  const home = envOrEmpty("HOME");
  if (given !== undefined) {
    const base = envOrEmpty("INIT_CWD") || Deno.cwd();
    const dir = given.startsWith("/") ? given : `${base}/${given}`;
    return { dir, onPath: path.includes(dir) };
  }
  const candidates = [
    ...(home ? [`${home}/.local/bin`] : []),
    "/usr/local/bin",
    ...(home ? [`${home}/bin`] : []),
  ];
  for (const dir of candidates) {
    if (path.includes(dir) && isWritableDir(dir)) return { dir, onPath: true };
  }
  return { dir: home ? `${home}/.local/bin` : `${REPO}/bin`, onPath: false };
}

function main(args: string[]): number {
  let given: string | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--bin" && i + 1 < args.length) given = args[++i];
    else if (args[i].startsWith("--bin=")) given = args[i].slice("--bin=".length);
    else if (args[i] === "--help" || args[i] === "-h") {
      console.log("Usage: deno task install [--bin DIR]   puts `poolboy` on PATH (see README)");
      return 0;
    } else {
      console.error(
        `install: unknown argument "${args[i]}" (usage: deno task install [--bin DIR])`,
      );
      return 2;
    }
  }
  const flags = poolboyTaskFlags(Deno.readTextFileSync(`${REPO}/deno.json`));
  const { dir, onPath } = chooseBinDir(given);
  Deno.mkdirSync(dir, { recursive: true });
  const target = `${dir}/poolboy`;
  const temporary = `${target}.tmp-${Deno.pid}`;
  Deno.writeTextFileSync(
    temporary,
    launcherText(REPO, flags, Deno.execPath(), Deno.version.deno),
    { mode: 0o755 },
  );
  Deno.chmodSync(temporary, 0o755);
  Deno.renameSync(temporary, target);
  console.log(`installed ${target} (runs ${REPO}/mod.ts with Deno ${Deno.version.deno})`);
  if (!onPath) {
    console.log(`${dir} is not on PATH; add it: export PATH="${dir}:$PATH"`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
