/**
 * `poolboy publish`: uploads a model version's file to the control plane.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { openInput } from "../kernel/file_io.ts";
import { formatBytes } from "../kernel/units.ts";
import type { PublishResult } from "../controlplane/api_types.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { controlPlaneUrl, nameOption, required } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const PUBLISH_HELP = `poolboy publish — store a model version on the control plane

Usage: poolboy publish --control-plane URL --model NAME --version V FILE [--json]

Streams FILE to the control plane, which stores it by its BLAKE3 and computes
the patches to it from every version its agents run now (printed), so that a
rollout can start at once. Publishing the same bytes again is harmless;
publishing other bytes under an existing version is refused.

Options:
  --control-plane URL   e.g. http://100.64.0.1:7402
  --model NAME          model name (letters, digits, . _ -)
  --version V           version name (same characters)
  --json                print the control plane's answer as JSON
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused by the control plane, 3 I/O error.`;

/** Runs `publish`. */
export async function publishCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("publish", args, {
    "control-plane": { type: "string" },
    model: { type: "string" },
    version: { type: "string" },
  });
  if (values.help) {
    println(PUBLISH_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      `publish takes one FILE, got ${positionals.length} (see poolboy publish --help)`,
    );
  }
  const url = controlPlaneUrl("publish", values["control-plane"]);
  const model = nameOption("model", required("publish", "model", values.model));
  const version = nameOption("version", required("publish", "version", values.version));
  const input = await openInput(positionals[0], "model file");
  const result = await callApi<PublishResult>(
    url,
    "PUT",
    `/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}`,
    input.file.readable,
    "application/octet-stream",
  );
  if (values.json) {
    printJson(result);
    return 0;
  }
  const v = result.version;
  println(`published ${v.model} ${v.version}: ${formatBytes(v.size)}, blake3 ${v.digest}`);
  for (const p of result.patches) {
    println(
      `  patch from ${p.from}: ${formatBytes(p.size)} (${(100 * p.size / v.size).toFixed(2)}%)`,
    );
  }
  return 0;
}
