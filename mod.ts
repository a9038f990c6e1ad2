/**
 * The poolboy command line: parses the command name and dispatches to it.
 * User-facing failures (`PoolboyError`) print one line on stderr and exit with
 * their code; anything else is a bug, reported as such with exit code 1.
 * Ctrl-C or SIGTERM deletes any temporary output before exiting.
 *
 * @module
 */

import { AGENT_HELP, agentCommand } from "./cli/agent.ts";
import { APPLY_HELP, applyCommand } from "./cli/apply.ts";
import { println } from "./cli/args.ts";
import { CONTROLPLANE_HELP, controlplaneCommand } from "./cli/controlplane.ts";
import { ENCODE_HELP, encodeCommand } from "./cli/encode.ts";
import { HASH_HELP, hashCommand } from "./cli/hash.ts";
import { INSPECT_HELP, inspectCommand } from "./cli/inspect.ts";
import { PUBLISH_HELP, publishCommand } from "./cli/publish.ts";
import { ROLLBACK_HELP, rollbackCommand } from "./cli/rollback.ts";
import { ROLLOUT_HELP, rolloutCommand } from "./cli/rollout.ts";
import { SIGNATURE_HELP, signatureCommand } from "./cli/signature.ts";
import { STATUS_HELP, statusCommand } from "./cli/status.ts";
import { removeAllPending } from "./codec/atomic_file.ts";
import { ExitCode, PoolboyError, UsageError } from "./codec/errors.ts";

/** The commands, in the order `--help` lists them. */
const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; help: string }> = {
  encode: { run: encodeCommand, help: ENCODE_HELP },
  apply: { run: applyCommand, help: APPLY_HELP },
  inspect: { run: inspectCommand, help: INSPECT_HELP },
  hash: { run: hashCommand, help: HASH_HELP },
  signature: { run: signatureCommand, help: SIGNATURE_HELP },
  controlplane: { run: controlplaneCommand, help: CONTROLPLANE_HELP },
  agent: { run: agentCommand, help: AGENT_HELP },
  publish: { run: publishCommand, help: PUBLISH_HELP },
  rollout: { run: rolloutCommand, help: ROLLOUT_HELP },
  status: { run: statusCommand, help: STATUS_HELP },
  rollback: { run: rollbackCommand, help: ROLLBACK_HELP },
};

export const MAIN_HELP = `poolboy — ship model updates as small, verified patches

Usage: poolboy <command> [options]

Commands:
  encode BASE TARGET -o PATCH   make a patch that turns BASE into TARGET
  apply BASE PATCH -o OUT       rebuild TARGET from BASE + PATCH, BLAKE3-verified
  inspect PATCH                 show a patch's header and ops without applying it
  hash FILE...                  BLAKE3 digests, b3sum format
  signature FILE -o SIG         save FILE's chunk list; encode --base-sig SIG skips reading FILE

Fleet:
  controlplane --bind ADDR --data DIR      model store, elections and operator API
  agent --control-plane ADDR --bind ADDR --node-id ID --data DIR
                                           keep a device's models at the rolled-out version
  publish --control-plane URL --model M --version V FILE
                                           store a version (and patches to it) on the control plane
  rollout --control-plane URL --model M --version V [--region R] [--strategy S]
                                           roll a version out, one download per region
  rollout pause|resume|abort --control-plane URL ID
  rollback --control-plane URL --model M [--to V]
                                           put the fleet back on an earlier version
  status --control-plane URL               agents, rollouts, elections, bytes served

  help [COMMAND]                           this help, or a command's

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
    if (name === "--help" || name === "-h" || name === "help") {
      const topic = name === "help" ? rest[0] : undefined;
      if (topic !== undefined && !(topic in COMMANDS)) {
        throw new UsageError(`unknown command "${topic}" (try poolboy --help)`);
      }
      println(topic ? COMMANDS[topic].help : MAIN_HELP);
      return ExitCode.ok;
    }
    const command = COMMANDS[name];
    if (!command) throw new UsageError(`unknown command "${name}" (try poolboy --help)`);
    return await command.run(rest);
  } catch (err) {
    if (err instanceof PoolboyError) {
      console.error(`poolboy: error: ${err.message}`);
      return err.exitCode;
    }
    const message = err instanceof Error ? err.message : String(err);
    console.error(`poolboy: internal error (a bug; please report it): ${message}`);
    return ExitCode.internal;
  }
}

if (import.meta.main) {
  const interrupted = (code: number) => () => {
    removeAllPending();
    Deno.exit(code);
  };
  Deno.addSignalListener("SIGINT", interrupted(130));
  Deno.addSignalListener("SIGTERM", interrupted(143));
  Deno.exit(await main(Deno.args));
}
