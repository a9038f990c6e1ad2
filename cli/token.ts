/**
 * `poolboy token create|list|revoke`: operators' API tokens, made on the
 * control plane's host straight in its state store (DIR/controlplane.sqlite;
 * it works while the control plane runs). A token is printed once; the store
 * keeps only its BLAKE3 (controlplane/auth.ts).
 *
 * @module
 */

import { IoError, ioError, UsageError } from "../kernel/errors.ts";
import { createToken, isRole } from "../controlplane/auth.ts";
import { DATABASE_FILE, SqliteStore } from "../controlplane/sqlite_store.ts";
import { ROLES } from "../controlplane/state_store.ts";
import { parseCommand } from "./args.ts";
import { nameOption, required } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const TOKEN_HELP = `poolboy token — make, list and revoke operators' API tokens

Usage: poolboy token create --data DIR --role viewer|deployer|admin --name NAME [--json]
       poolboy token list --data DIR [--json]
       poolboy token revoke --data DIR NAME

Every call to the control plane's API but GET /health needs a token
("Authorization: Bearer TOKEN"; the fleet commands take --token T or the
environment variable POOLBOY_TOKEN). Run this on the control plane's host with
its --data DIR; it works while the control plane runs.

  create   makes a token and prints it on stdout, once: it cannot be shown
           again (the control plane keeps only its BLAKE3). Names are unique,
           revoked ones included.
  list     name, role, when made and when revoked, of every token
  revoke   the token stops working at once (401); its name stays taken

Roles (each can do what the one before can):
  viewer     every read: models, rollouts, devices, status
  deployer   publish (versions, release manifests, delegation), roll out,
             pause, resume, abort, roll back
  admin      everything, including the audit log (poolboy audit)

Options:
  --data DIR        the control plane's state directory (DIR/${DATABASE_FILE})
  --role R          viewer, deployer or admin
  --name NAME       who or what holds it, e.g. alice or ci (1-128 letters, digits, . _ -)
  --json            print as JSON (create: { name, role, created, token })
  -h, --help        this help

Exit codes: 0 ok, 2 usage (bad role or name, a name already taken, no such
token), 3 I/O error (no control plane state in DIR, unwritable DIR).`;

/** Runs `token`. */
export async function tokenCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("token", args, {
    data: { type: "string" },
    role: { type: "string" },
    name: { type: "string" },
  });
  if (values.help) {
    println(TOKEN_HELP);
    return 0;
  }
  const [action, ...rest] = positionals;
  if (action !== "create" && action !== "list" && action !== "revoke") {
    throw new UsageError(
      action === undefined
        ? "token needs create, list or revoke (see poolboy token --help)"
        : `token: unknown action "${action}" (create, list or revoke)`,
    );
  }
  const dir = required("token", "data", values.data);
  if (action === "create") {
    if (rest.length > 0) throw new UsageError(`token create takes no arguments, got "${rest[0]}"`);
    const role = required("token create", "role", values.role);
    if (!isRole(role)) {
      throw new UsageError(`--role: "${role}" is not a role (${ROLES.join(", ")})`);
    }
    const name = nameOption("name", required("token create", "name", values.name));
    const { token, record } = await withStore(dir, true, (store) => createToken(store, role, name));
    if (values.json) {
      printJson({ name, role, created: record.created, token });
    } else {
      println(token);
    }
    if (!values.quiet) {
      console.error(
        `poolboy: token "${name}" (${role}) made; it is shown only now and cannot be shown again (the control plane keeps only its hash): keep it, e.g. in POOLBOY_TOKEN`,
      );
    }
    return 0;
  }
  if (values.role !== undefined || values.name !== undefined) {
    throw new UsageError(`token ${action} takes no --role or --name (see poolboy token --help)`);
  }
  if (action === "list") {
    if (rest.length > 0) throw new UsageError(`token list takes no arguments, got "${rest[0]}"`);
    const tokens = await withStore(dir, false, (store) => store.tokens());
    const listed = tokens.map(({ name, role, created, revoked }) => ({
      name,
      role,
      created,
      revoked,
    }));
    if (values.json) {
      printJson({ tokens: listed });
      return 0;
    }
    if (listed.length === 0) println("no tokens (make one: poolboy token create --help)");
    for (const t of listed) {
      println(
        `${t.name.padEnd(16)} ${t.role.padEnd(8)} made ${new Date(t.created).toISOString()}${
          t.revoked === null ? "" : `, REVOKED ${new Date(t.revoked).toISOString()}`
        }`,
      );
    }
    return 0;
  }
  if (rest.length !== 1) {
    throw new UsageError(
      `token revoke takes one NAME, got ${rest.length} (see poolboy token --help)`,
    );
  }
  const name = nameOption("name", rest[0]);
  await withStore(dir, false, async (store) => {
    if (await store.revokeToken(name, Date.now())) return;
    const known = (await store.tokens()).find((t) => t.name === name);
    throw new UsageError(
      known
        ? `token "${name}" is already revoked`
        : `no token named "${name}" (poolboy token list --data ${dir})`,
    );
  });
  if (values.json) printJson({ revoked: name });
  else println(`revoked token "${name}": calls with it now get 401`);
  return 0;
}

/**
 * Runs `fn` on the control plane's store in `dir`, closing it after. `create`:
 * make the directory and database if missing (a token made before the control
 * plane's first start); otherwise a missing database is an error.
 */
async function withStore<T>(
  dir: string,
  create: boolean,
  fn: (store: SqliteStore) => Promise<T>,
): Promise<T> {
  const path = `${dir}/${DATABASE_FILE}`;
  try {
    if (create) await Deno.mkdir(dir, { recursive: true });
    else await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new IoError(`no control plane state in "${dir}": ${path} does not exist`);
    }
    throw ioError("open", path, err);
  }
  let store: SqliteStore;
  try {
    store = await SqliteStore.open(path);
  } catch (err) {
    throw ioError("open the control plane's database", path, err);
  }
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}
