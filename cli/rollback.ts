/**
 * `poolboy rollback`: rolls a model back to an earlier version on the whole
 * fleet. Signed: the older version's stored manifest is fetched, checked to be
 * signed by a key of the delegation file (the control plane is not trusted),
 * and a new manifest for the same target is signed here with a higher release
 * counter — devices refuse a lower counter than one they have installed.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import type {
  DocumentStored,
  ReleaseCounters,
  RolloutInfo,
  RolloutList,
} from "../controlplane/api_types.ts";
import { rollbackVersion } from "../controlplane/rollout_policy.ts";
import {
  MalformedDocumentError,
  parseRelease,
  RELEASE_TYPE,
  signRelease,
  SPEC_VERSION,
  verifiedSigners,
} from "../release/documents.ts";
import { readSigningKey } from "../release/keys.ts";
import { DAY_MS, expiryOption, readDelegationFile, requireDelegated } from "./release_files.ts";
import { parseCommand } from "./args.ts";
import { type ApiTarget, callApi } from "./api_client.ts";
import { apiTarget, nameOption, required, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { describeRollout, printJson, println } from "./output.ts";

export const ROLLBACK_HELP = `poolboy rollback — put the fleet back on an earlier version of a model

Usage: poolboy rollback --control-plane ADDR --model NAME [--to V]
                        --key release.key --keys keys.json [--expires 90d] [--json]
       poolboy rollback --control-plane ADDR --model NAME [--to V] --unsigned

Starts a rollout of V (default: the version rolled out before the newest
rollout) to every device, superseding the current rollout. A device that still
holds V (agents keep the version they replaced) switches back locally and
downloads nothing; the others get the reverse patch by the usual election and
seeding path.

Signed (--key and --keys): fetches V's manifest from the control plane, checks
that a release key of keys.json signed it (a control plane cannot make one up),
signs a new manifest for the same file with the release counter one above the
highest stored for the model, sends it, then starts the rollout. --unsigned
skips all that (only agents started with --insecure follow).

Options:
  --control-plane ADDR  the control plane: 100.64.0.1 (API port 7402), IP:PORT or http://IP:PORT
${TOKEN_OPTION_HELP} (role deployer or above)
  --model NAME          the model
  --to V                the version to go back to
  --key FILE            the release private key that signs the new manifest
  --keys FILE           the delegation naming that key (poolboy delegate -o)
  --expires WHEN        the new manifest's expiry (default 90d)
  --unsigned            roll back without signing
  --json                print the rollout as JSON
  -h, --help            this help

Exit codes: 0 started, 2 usage or refused (unknown model or version, nothing
to roll back to; 401: no, unknown or revoked token; 403: the token's role is
too low), 3 I/O error.`;

/** Runs `rollback`. */
export async function rollbackCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("rollback", args, {
    "control-plane": { type: "string" },
    ...tokenOptions,
    model: { type: "string" },
    to: { type: "string" },
    key: { type: "string" },
    keys: { type: "string" },
    expires: { type: "string" },
    unsigned: { type: "boolean" },
  });
  if (values.help) {
    println(ROLLBACK_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`rollback takes no arguments, got "${positionals[0]}"`);
  }
  const api = apiTarget("rollback", values);
  const body = {
    model: nameOption("model", required("rollback", "model", values.model)),
    to: values.to === undefined ? undefined : nameOption("to", values.to),
  };
  if (values.unsigned) {
    if (values.key !== undefined || values.keys !== undefined || values.expires !== undefined) {
      throw new UsageError("rollback: --unsigned cannot go with --key, --keys or --expires");
    }
    console.error(
      "poolboy: warning: rolling back unsigned: agents that pin a trust root (--trust-root) refuse it",
    );
  } else {
    if (values.key === undefined || values.keys === undefined) {
      throw new UsageError(
        "rollback needs --key release.key and --keys keys.json to sign the rollback, or --unsigned (see poolboy rollback --help)",
      );
    }
    const resigned = await resignRelease(api, body.model, body.to, {
      key: values.key,
      keys: values.keys,
      expires: values.expires,
    });
    body.to = resigned.version;
    if (!values.json) {
      println(`re-signed ${body.model} ${resigned.version}: release counter ${resigned.counter}`);
    }
  }
  const rollout = await callApi<RolloutInfo>(api, "POST", "/v1/rollback", JSON.stringify(body));
  if (values.json) printJson(rollout);
  else println(describeRollout(rollout));
  return 0;
}

/**
 * Signs a new manifest for the version to roll back to (checked against the
 * delegation file first) with a counter above every stored one, and stores it.
 * Returns that version and the new counter.
 */
async function resignRelease(
  api: ApiTarget,
  model: string,
  to: string | undefined,
  files: { key: string; keys: string; expires: string | undefined },
): Promise<{ version: string; counter: number }> {
  const expires = expiryOption("expires", files.expires, 90 * DAY_MS, Date.now());
  const delegation = await readDelegationFile(files.keys);
  const key = await readSigningKey(files.key, "release");
  requireDelegated(key, files.key, delegation);
  const m = encodeURIComponent(model);
  const { rollouts } = await callApi<RolloutList>(api, "GET", "/v1/rollouts");
  const version = rollbackVersion(model, rollouts.filter((r) => r.model === model), to);
  const stored = await callApi<unknown>(
    api,
    "GET",
    `/v1/models/${m}/versions/${encodeURIComponent(version)}/release`,
  );
  let old;
  try {
    old = parseRelease(new TextEncoder().encode(JSON.stringify(stored)));
  } catch (err) {
    if (!(err instanceof MalformedDocumentError)) throw err;
    throw new UsageError(
      `the control plane's manifest of ${model} ${version} is malformed: ${err.message}`,
    );
  }
  const signers = await verifiedSigners(old, delegation.document.signed.releaseKeys);
  if (signers.size === 0 || old.signed.model !== model || old.signed.version !== version) {
    throw new UsageError(
      `the control plane's manifest of ${model} ${version} is not one signed by a release key of ${files.keys}: refusing to re-sign it (is the control plane the genuine one?)`,
    );
  }
  const { highestCounter } = await callApi<ReleaseCounters>(api, "GET", `/v1/models/${m}/releases`);
  const manifest = await signRelease({
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model,
    version,
    target: old.signed.target,
    counter: highestCounter + 1,
    expires,
    deviceClass: old.signed.deviceClass,
  }, key);
  await callApi<DocumentStored>(
    api,
    "PUT",
    "/v1/delegation",
    new TextDecoder().decode(delegation.bytes),
  );
  await callApi<DocumentStored>(
    api,
    "PUT",
    `/v1/models/${m}/versions/${encodeURIComponent(version)}/release`,
    manifest,
  );
  return { version, counter: highestCounter + 1 };
}
