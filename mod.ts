/**
 * The poolboy command line: parses the command name and dispatches to it.
 * User-facing failures (`PoolboyError`, and OS errors such as a port in use,
 * mapped by class to one) print one line on stderr and exit with their code;
 * anything else is a bug, reported as such with exit code 1. `--version` (alone,
 * or after any command) prints `poolboy VERSION (deno V, OS-ARCH)`.
 * Ctrl-C or SIGTERM deletes any temporary output before exiting.
 *
 * @module
 */

import { removeAllPending } from "./kernel/atomic_file.ts";
import { ExitCode, osErrorToPoolboy, UsageError } from "./kernel/errors.ts";
import { versionLine } from "./kernel/version.ts";
import { println } from "./cli/output.ts";
import { VersionRequested } from "./cli/args.ts";
import { enterCallerFolder } from "./cli/caller_folder.ts";

/** A command: its entry point and its `--help` text. */
interface Command {
  readonly run: (args: string[]) => Promise<number>;
  readonly help: string;
}

/**
 * The commands, in the order `--help` lists them, each loaded only when run:
 * a device applying a patch does not pay for the control plane's SQLite and
 * HTTP modules (measured: each module graph costs RSS whether used or not).
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  encode: async () => {
    const m = await import("./cli/encode.ts");
    return { run: m.encodeCommand, help: m.ENCODE_HELP };
  },
  apply: async () => {
    const m = await import("./cli/apply.ts");
    return { run: m.applyCommand, help: m.APPLY_HELP };
  },
  inspect: async () => {
    const m = await import("./cli/inspect.ts");
    return { run: m.inspectCommand, help: m.INSPECT_HELP };
  },
  hash: async () => {
    const m = await import("./cli/hash.ts");
    return { run: m.hashCommand, help: m.HASH_HELP };
  },
  index: async () => {
    const m = await import("./cli/index_command.ts");
    return { run: m.indexCommand, help: m.INDEX_HELP };
  },
  controlplane: async () => {
    const m = await import("./cli/controlplane.ts");
    return { run: m.controlplaneCommand, help: m.CONTROLPLANE_HELP };
  },
  agent: async () => {
    const m = await import("./cli/agent.ts");
    return { run: m.agentCommand, help: m.AGENT_HELP };
  },
  keygen: async () => {
    const m = await import("./cli/keygen.ts");
    return { run: m.keygenCommand, help: m.KEYGEN_HELP };
  },
  delegate: async () => {
    const m = await import("./cli/delegate.ts");
    return { run: m.delegateCommand, help: m.DELEGATE_HELP };
  },
  publish: async () => {
    const m = await import("./cli/publish.ts");
    return { run: m.publishCommand, help: m.PUBLISH_HELP };
  },
  rollout: async () => {
    const m = await import("./cli/rollout.ts");
    return { run: m.rolloutCommand, help: m.ROLLOUT_HELP };
  },
  status: async () => {
    const m = await import("./cli/status.ts");
    return { run: m.statusCommand, help: m.STATUS_HELP };
  },
  rollback: async () => {
    const m = await import("./cli/rollback.ts");
    return { run: m.rollbackCommand, help: m.ROLLBACK_HELP };
  },
  token: async () => {
    const m = await import("./cli/token.ts");
    return { run: m.tokenCommand, help: m.TOKEN_HELP };
  },
  audit: async () => {
    const m = await import("./cli/audit.ts");
    return { run: m.auditCommand, help: m.AUDIT_HELP };
  },
  device: async () => {
    const m = await import("./cli/device.ts");
    return { run: m.deviceCommand, help: m.DEVICE_HELP };
  },
};

/**
 * Commands that were renamed, with what to type instead: running one (or asking
 * for its help) is a usage error that says so.
 */
const RENAMED_COMMANDS: Record<string, string> = {
  signature:
    '"signature" was renamed: use poolboy index FILE -o FILE.idx (old .sig files still work with encode --base-index)',
};

/** Throws the usage error of a renamed command, if `name` is one. */
function rejectRenamed(name: string): void {
  if (Object.hasOwn(RENAMED_COMMANDS, name)) throw new UsageError(RENAMED_COMMANDS[name]);
}

export const MAIN_HELP = `poolboy — ship model updates as small, verified patches

Usage: poolboy <command> [options]

Commands:
  encode BASE TARGET -o PATCH   make a patch that turns BASE into TARGET
  apply BASE PATCH -o OUT       rebuild TARGET from BASE + PATCH, BLAKE3-verified
  inspect PATCH                 show a patch's header and ops without applying it
  hash FILE...                  BLAKE3 digests, b3sum format
  index FILE -o IDX             save FILE's chunk index; encode --base-index IDX skips reading FILE

Fleet:
  controlplane --bind ADDR --data DIR      model store, elections and operator API
  agent --control-plane ADDR --bind ADDR --node-id ID --data DIR
                                           keep a device's models at the rolled-out version
  keygen root|release -o DIR               make a signing key pair (DIR/ROLE.key 0600, DIR/ROLE.pub)
  delegate --root root.key --release A.pub -o keys.json
                                           sign the list of release keys devices accept
  publish --control-plane URL --model M --version V FILE --key release.key --keys keys.json
                                           store a signed version (and patches to it) on the control plane
  rollout --control-plane URL --model M --version V [--region R] [--strategy S]
                                           roll a version out, one download per region
  rollout pause|resume|abort --control-plane URL ID
  rollback --control-plane URL --model M [--to V] --key release.key --keys keys.json
                                           put the fleet back on an earlier version
  status --control-plane URL               agents, rollouts, elections, bytes served
  token create --data DIR --role R --name NAME
                                           make an operator's API token (printed once)
  token list|revoke --data DIR [NAME]      list tokens, or revoke one
  audit --control-plane URL [--limit N]    who did what: changes and refused calls
  device list|remove --control-plane URL [ID]
                                           the devices it knows; remove one (admin)

  The commands that call the control plane (publish, rollout, rollback, status,
  audit, device) take --token T or the environment variable POOLBOY_TOKEN.

  help [COMMAND]                           this help, or a command's
  --version                                poolboy's version, Deno's, the OS and architecture

Run "poolboy <command> --help" for a command's options and exit codes.`;

/** Runs the CLI on `args` and returns the exit code; prints errors itself. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  try {
    if (name === undefined) {
      throw new UsageError(
        `no command given; commands: ${Object.keys(COMMANDS).join(", ")} (see poolboy --help)`,
      );
    }
    if (name === "--version" || (rest.length === 1 && rest[0] === "--version")) {
      // `poolboy --version`, and `poolboy COMMAND --version` for every command
      // (publish, rollout and rollback, whose --version takes a value, too).
      if (name !== "--version") rejectRenamed(name);
      if (name !== "--version" && !Object.hasOwn(COMMANDS, name)) {
        throw new UsageError(`unknown command "${name}" (try poolboy --help)`);
      }
      println(versionLine());
      return ExitCode.ok;
    }
    if (name === "--help" || name === "-h" || name === "help") {
      const topic = name === "help" ? rest[0] : undefined;
      if (topic !== undefined) rejectRenamed(topic);
      if (topic !== undefined && !Object.hasOwn(COMMANDS, topic)) {
        throw new UsageError(`unknown command "${topic}" (try poolboy --help)`);
      }
      println(topic ? (await COMMANDS[topic]()).help : MAIN_HELP);
      return ExitCode.ok;
    }
    rejectRenamed(name);
    const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!load) throw new UsageError(`unknown command "${name}" (try poolboy --help)`);
    return await (await load()).run(rest);
  } catch (err) {
    return reportError(err);
  }
}

/**
 * Prints a command's failure on stderr and returns the exit code: one line for
 * a `PoolboyError`, an internal error (exit 1) for anything else.
 */
export function reportError(err: unknown): number {
  if (err instanceof VersionRequested) {
    println(versionLine());
    return ExitCode.ok;
  }
  // An OS error (a port in use, an address outside --allow-net, a vanished
  // file) that no command turned into a PoolboyError is still an I/O error.
  const known = osErrorToPoolboy(err);
  if (known) {
    console.error(`poolboy: error: ${known.message}`);
    return known.exitCode;
  }
  const message = err instanceof Error ? err.message : String(err);
  console.error(`poolboy: internal error (a bug; please report it): ${message}`);
  return ExitCode.internal;
}

if (import.meta.main) {
  const interrupted = (code: number) => () => {
    removeAllPending();
    Deno.exit(code);
  };
  Deno.addSignalListener("SIGINT", interrupted(130));
  Deno.addSignalListener("SIGTERM", interrupted(143));
  // `deno task X` runs in the repository: relative paths mean the caller's folder (INIT_CWD).
  enterCallerFolder(decodeURIComponent(new URL(".", import.meta.url).pathname));
  Deno.exit(await main(Deno.args));
}
