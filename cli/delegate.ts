/**
 * `poolboy delegate`: signs, with the offline root key, the delegation that
 * names the release keys allowed to sign manifests (release/documents.ts).
 * Its version only grows: a newer delegation replaces the older one on every
 * device, which is how a release key is rotated or revoked.
 *
 * @module
 */

import { ioError, UsageError } from "../kernel/errors.ts";
import {
  type DelegatedKey,
  DELEGATION_TYPE,
  formatTime,
  MAX_RELEASE_KEYS,
  signDelegation,
  SPEC_VERSION,
} from "../release/documents.ts";
import { readPublicKey, readSigningKey } from "../release/keys.ts";
import { parseCommand } from "./args.ts";
import { printJson, println } from "./output.ts";
import {
  counterOption,
  DAY_MS,
  type DelegationFile,
  expiryOption,
  readDelegationFile,
} from "./release_files.ts";

export const DELEGATE_HELP = `poolboy delegate — name the release keys that may sign releases

Usage: poolboy delegate --root root.key --release A.pub [--release B.pub ...]
                        [--expires 365d] [--version N] -o keys.json [--json]

Signs with the root key a delegation naming the release keys (their public
files) whose manifests devices accept, and writes it to keys.json. poolboy
publish sends it to the control plane; devices take it from there and check it
against the root key they pin.

The delegation's version only grows. Without --version it is one more than
that of the keys.json being replaced (1 if there is none). Devices refuse a
delegation older than one they have seen: to rotate or revoke a release key,
sign a new delegation without it and publish again.

Options:
  --root FILE       the root private key (poolboy keygen root)
  --release FILE    a release public key to name (repeat for several, up to ${MAX_RELEASE_KEYS})
  --expires WHEN    90d, 12h, 30m or YYYY-MM-DDTHH:MM:SSZ (default 365d): devices
                    refuse the delegation, and so every release, after it
  --version N       the version (must be above the existing -o file's)
  -o, --out FILE    where to write the delegation (replaced if it exists)
  --json            print { path, version, expires, rootKeyId, releaseKeys }
  -h, --help        this help

Exit codes: 0 ok, 2 usage (including a --version not above the existing
file's), 3 I/O error (a key file unreadable, or readable by others).`;

/** Runs `delegate`. */
export async function delegateCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("delegate", args, {
    root: { type: "string" },
    release: { type: "string", multiple: true },
    expires: { type: "string" },
    version: { type: "string" },
    out: { type: "string", short: "o" },
  });
  if (values.help) {
    println(DELEGATE_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`delegate takes no arguments, got "${positionals[0]}"`);
  }
  if (!values.root) {
    throw new UsageError("delegate needs --root FILE (see poolboy delegate --help)");
  }
  if (!values.out) throw new UsageError("delegate needs -o FILE (see poolboy delegate --help)");
  const releasePaths = values.release ?? [];
  if (releasePaths.length === 0) {
    throw new UsageError("delegate needs at least one --release FILE (a release .pub)");
  }
  if (releasePaths.length > MAX_RELEASE_KEYS) {
    throw new UsageError(`delegate names at most ${MAX_RELEASE_KEYS} release keys`);
  }
  const now = Date.now();
  const expires = expiryOption("expires", values.expires, 365 * DAY_MS, now);
  const existing = await existingDelegation(values.out);
  const previous = existing?.document.signed.version ?? 0;
  let version = previous + 1;
  if (values.version !== undefined) {
    version = counterOption("version", values.version);
    if (version <= previous) {
      throw new UsageError(
        `--version ${version} is not above version ${previous} of ${values.out}: devices refuse a delegation older than one they have seen`,
      );
    }
  }
  const root = await readSigningKey(values.root, "root");
  const releaseKeys: DelegatedKey[] = [];
  for (const path of releasePaths) {
    const key = await readPublicKey(path, "release");
    if (releaseKeys.some((k) => k.keyId === key.keyId)) {
      throw new UsageError(`${path}: key ${key.keyId.slice(0, 16)} is named twice`);
    }
    releaseKeys.push({ keyId: key.keyId, publicKey: key.publicKey });
  }
  const text = await signDelegation({
    type: DELEGATION_TYPE,
    spec: SPEC_VERSION,
    version,
    expires,
    rootKeyId: root.keyId,
    releaseKeys,
  }, root);
  await writeReplacing(values.out, text);
  if (values.json) {
    printJson({
      path: values.out,
      version,
      expires: formatTime(expires),
      rootKeyId: root.keyId,
      releaseKeys: releaseKeys.map((k) => k.keyId),
    });
    return 0;
  }
  println(
    `delegation version ${version} written to ${values.out}: ${releaseKeys.length} release key${
      releaseKeys.length === 1 ? "" : "s"
    }, expires ${formatTime(expires)}`,
  );
  for (const k of releaseKeys) println(`  release key ${k.keyId}`);
  return 0;
}

/** The delegation at `path`, if a file is there (it must then be a delegation). */
async function existingDelegation(path: string): Promise<DelegationFile | undefined> {
  try {
    await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw ioError("look at", path, err);
  }
  return await readDelegationFile(path);
}

/** Writes `text` to `path` through a temporary file and a rename (never half a file). */
async function writeReplacing(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(temp, text, { createNew: true, mode: 0o644 });
    await Deno.rename(temp, path);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw ioError("write delegation", path, err);
  }
}
