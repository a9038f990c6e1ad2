/**
 * `poolboy keygen root|release -o DIR`: makes an Ed25519 key pair for signing
 * releases (release/keys.ts): `DIR/ROLE.key`, mode 0600, and `DIR/ROLE.pub`.
 * Never overwrites a key.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { type KeyRole, writeKeyPair } from "../release/keys.ts";
import { parseCommand } from "./args.ts";
import { printJson, println } from "./output.ts";

export const KEYGEN_HELP = `poolboy keygen — make a key pair for signing releases

Usage: poolboy keygen root|release -o DIR [--json]

Writes DIR/root.key and DIR/root.pub (or release.key and release.pub): an
Ed25519 key pair. The .key file holds the private key, is written with mode
0600 and must stay so (poolboy refuses a key file group or others may read);
the .pub file may be shared. An existing key file is never overwritten.

  root      the offline key devices pin (agent --trust-root root.pub); it only
            signs delegations (poolboy delegate). Keep it off the network.
  release   a key that signs release manifests (poolboy publish --key) once a
            delegation signed by the root names it.

Options:
  -o, --out DIR   directory to write the key files into (created if needed)
  --json          print { role, keyId, privateKey, publicKey } as JSON
  -h, --help      this help

Exit codes: 0 ok, 2 usage, 3 I/O error (a key file exists already, or DIR is
not writable).`;

/** Runs `keygen`. */
export async function keygenCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("keygen", args, {
    out: { type: "string", short: "o" },
  });
  if (values.help) {
    println(KEYGEN_HELP);
    return 0;
  }
  if (positionals.length !== 1 || (positionals[0] !== "root" && positionals[0] !== "release")) {
    throw new UsageError(
      `keygen takes one role, root or release (got ${
        positionals.length === 0 ? "none" : positionals.join(" ")
      }; see poolboy keygen --help)`,
    );
  }
  if (values.out === undefined || values.out === "") {
    throw new UsageError("keygen needs -o DIR (see poolboy keygen --help)");
  }
  const role = positionals[0] as KeyRole;
  const { key, privatePath, publicPath } = await writeKeyPair(values.out, role);
  if (values.json) {
    printJson({ role, keyId: key.keyId, privateKey: privatePath, publicKey: publicPath });
    return 0;
  }
  println(`${role} key ${key.keyId}`);
  println(
    `  private: ${privatePath} (mode 0600; keep it secret${role === "root" ? " and offline" : ""})`,
  );
  println(`  public:  ${publicPath}`);
  return 0;
}
