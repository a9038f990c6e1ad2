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
import type * as EncodeModule from "./cli/encode.ts";
import type * as ApplyModule from "./cli/apply.ts";
import type * as InspectModule from "./cli/inspect.ts";
import type * as HashModule from "./cli/hash.ts";
import type * as IndexCommandModule from "./cli/index_command.ts";
import type * as ControlplaneModule from "./cli/controlplane.ts";
import type * as AgentModule from "./cli/agent.ts";
import type * as KeygenModule from "./cli/keygen.ts";
import type * as DelegateModule from "./cli/delegate.ts";
import type * as PublishModule from "./cli/publish.ts";
import type * as RolloutModule from "./cli/rollout.ts";
import type * as StatusModule from "./cli/status.ts";
import type * as RollbackModule from "./cli/rollback.ts";
import type * as TokenModule from "./cli/token.ts";
import type * as AuditModule from "./cli/audit.ts";
import type * as DeviceModule from "./cli/device.ts";

/** A command: its entry point and its `--help` text. */
interface Command {
  readonly run: (args: string[]) => Promise<number>;
  readonly help: string;
}

/**
 * The commands, in the order `--help` lists them, each loaded only when run:
 * a device applying a patch does not pay for the control plane's SQLite and
 * HTTP modules (measured: each module graph costs RSS whether used or not).
 * Each is imported by `new URL(…, import.meta.url).href`, which `deno run`
 * does not follow before the program starts: a literal `import("./cli/…")`
 * has it load and parse every command's module graph (npm packages included)
 * up front, ~2 MB of apply's peak RSS. The `import type`s above keep the
 * commands type-checked; `deno compile` embeds them by `--include` (deno.json).
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  encode: async () => {
    const m =
      (await import(new URL("./cli/encode.ts", import.meta.url).href)) as typeof EncodeModule;
    return { run: m.encodeCommand, help: m.ENCODE_HELP };
  },
  apply: async () => {
    const m = (await import(new URL("./cli/apply.ts", import.meta.url).href)) as typeof ApplyModule;
    return { run: m.applyCommand, help: m.APPLY_HELP };
  },
  inspect: async () => {
    const m =
      (await import(new URL("./cli/inspect.ts", import.meta.url).href)) as typeof InspectModule;
    return { run: m.inspectCommand, help: m.INSPECT_HELP };
  },
  hash: async () => {
    const m = (await import(new URL("./cli/hash.ts", import.meta.url).href)) as typeof HashModule;
    return { run: m.hashCommand, help: m.HASH_HELP };
  },
  index: async () => {
    const m = (await import(
      new URL("./cli/index_command.ts", import.meta.url).href
    )) as typeof IndexCommandModule;
    return { run: m.indexCommand, help: m.INDEX_HELP };
  },
  controlplane: async () => {
    const m = (await import(
      new URL("./cli/controlplane.ts", import.meta.url).href
    )) as typeof ControlplaneModule;
    return { run: m.controlplaneCommand, help: m.CONTROLPLANE_HELP };
  },
  agent: async () => {
    const m = (await import(new URL("./cli/agent.ts", import.meta.url).href)) as typeof AgentModule;
    return { run: m.agentCommand, help: m.AGENT_HELP };
  },
  keygen: async () => {
    const m =
      (await import(new URL("./cli/keygen.ts", import.meta.url).href)) as typeof KeygenModule;
    return { run: m.keygenCommand, help: m.KEYGEN_HELP };
  },
  delegate: async () => {
    const m =
      (await import(new URL("./cli/delegate.ts", import.meta.url).href)) as typeof DelegateModule;
    return { run: m.delegateCommand, help: m.DELEGATE_HELP };
  },
  publish: async () => {
    const m =
      (await import(new URL("./cli/publish.ts", import.meta.url).href)) as typeof PublishModule;
    return { run: m.publishCommand, help: m.PUBLISH_HELP };
  },
  rollout: async () => {
    const m =
      (await import(new URL("./cli/rollout.ts", import.meta.url).href)) as typeof RolloutModule;
    return { run: m.rolloutCommand, help: m.ROLLOUT_HELP };
  },
  status: async () => {
    const m =
      (await import(new URL("./cli/status.ts", import.meta.url).href)) as typeof StatusModule;
    return { run: m.statusCommand, help: m.STATUS_HELP };
  },
  rollback: async () => {
    const m =
      (await import(new URL("./cli/rollback.ts", import.meta.url).href)) as typeof RollbackModule;
    return { run: m.rollbackCommand, help: m.ROLLBACK_HELP };
  },
  token: async () => {
    const m = (await import(new URL("./cli/token.ts", import.meta.url).href)) as typeof TokenModule;
    return { run: m.tokenCommand, help: m.TOKEN_HELP };
  },
  audit: async () => {
    const m = (await import(new URL("./cli/audit.ts", import.meta.url).href)) as typeof AuditModule;
    return { run: m.auditCommand, help: m.AUDIT_HELP };
  },
  device: async () => {
    const m =
      (await import(new URL("./cli/device.ts", import.meta.url).href)) as typeof DeviceModule;
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
