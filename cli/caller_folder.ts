/**
 * Relative paths mean the caller's folder, however poolboy is run. `deno task X`
 * runs with the current directory set to the repository and passes the folder
 * the user stood in as the environment variable INIT_CWD; the installed
 * `poolboy` launcher (scripts/install.ts) and `deno run` keep the caller's
 * folder as the current directory. `enterCallerFolder` (called once by mod.ts
 * before any argument is read) moves into INIT_CWD when the process was started
 * by a task, so every path argument of every command (files, `-o`, `--data`,
 * key files, ...) resolves against the caller's folder.
 *
 * @module
 */

/** The environment variable `deno task` (like npm) sets to the caller's folder. */
export const INIT_CWD = "INIT_CWD";

/** Whether this process may read `variable` without a permission prompt. */
function mayReadEnv(variable: string): boolean {
  return Deno.permissions.querySync({ name: "env", variable }).state === "granted";
}

/**
 * The caller's folder when this process was started by `deno task` (INIT_CWD
 * set, readable, and the current directory is the repository `repoRoot`, as a
 * task sets it); undefined otherwise: the current directory is the caller's.
 */
export function taskCallerFolder(repoRoot: string): string | undefined {
  if (!mayReadEnv(INIT_CWD)) return undefined;
  const folder = Deno.env.get(INIT_CWD);
  if (folder === undefined || folder === "" || !folder.startsWith("/")) return undefined;
  try {
    if (Deno.permissions.querySync({ name: "read", path: repoRoot }).state !== "granted") {
      return undefined;
    }
    return Deno.realPathSync(Deno.cwd()) === Deno.realPathSync(repoRoot) ? folder : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Makes the caller's folder the current directory if a task started this
 * process (see `taskCallerFolder`); returns the folder it moved into, if any.
 * A folder that cannot be entered (removed meanwhile) leaves the directory as
 * it was.
 */
export function enterCallerFolder(repoRoot: string): string | undefined {
  const folder = taskCallerFolder(repoRoot);
  if (folder === undefined) return undefined;
  try {
    Deno.chdir(folder);
    return folder;
  } catch {
    return undefined;
  }
}
