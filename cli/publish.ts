/**
 * `poolboy publish`: uploads a model version's file to the control plane and,
 * signed on this workstation with a release key, its release manifest and the
 * delegation naming that key (docs/spec/release-v1.md). The control plane
 * holds no key; it stores and forwards the documents.
 *
 * @module
 */

import { UsageError } from "../kernel/errors.ts";
import { openInput } from "../kernel/file_io.ts";
import { formatBytes } from "../kernel/units.ts";
import { hashFile } from "../codec/hash_file.ts";
import { readSigningKey, type SigningKey } from "../release/keys.ts";
import { formatTime, RELEASE_TYPE, signRelease, SPEC_VERSION } from "../release/documents.ts";
import type { DocumentStored, PublishResult, ReleaseCounters } from "../controlplane/api_types.ts";
import {
  counterOption,
  DAY_MS,
  type DelegationFile,
  expiryOption,
  readDelegationFile,
  requireDelegated,
} from "./release_files.ts";
import { parseCommand } from "./args.ts";
import { callApi } from "./api_client.ts";
import { apiTarget, nameOption, required, TOKEN_OPTION_HELP, tokenOptions } from "./fleet_args.ts";
import { printJson, println } from "./output.ts";

export const PUBLISH_HELP = `poolboy publish — store a model version on the control plane

Usage: poolboy publish --control-plane ADDR --model NAME --version V FILE
                       --key release.key --keys keys.json [--counter N]
                       [--expires 90d] [--device-class C] [--json]
       poolboy publish --control-plane ADDR --model NAME --version V FILE --unsigned

Streams FILE to the control plane, which stores it by its BLAKE3 and computes
the patches to it from every version its agents run now (printed), so that a
rollout can start at once. Publishing the same bytes again is harmless;
publishing other bytes under an existing version is refused.

Signed (--key and --keys): hashes FILE here, checks that the release key is
one keys.json (poolboy delegate) names, signs a release manifest — model,
version, FILE's BLAKE3 and size, the release counter, the expiry, the device
class — and sends the delegation, the file and the manifest. The counter is
--counter, or one more than the highest the control plane has for the model;
devices refuse a counter lower than one they have installed. --unsigned
publishes no manifest: only agents started with --insecure install it.

Options:
  --control-plane ADDR  the control plane: 100.64.0.1 (API port 7402), IP:PORT or http://IP:PORT
${TOKEN_OPTION_HELP} (role deployer or above)
  --model NAME          model name (letters, digits, . _ -; not starting with . or -)
  --version V           version name (same characters)
  --key FILE            the release private key that signs the manifest
  --keys FILE           the delegation naming that key (poolboy delegate -o)
  --counter N           the release counter (default: highest stored + 1)
  --expires WHEN        90d, 12h, 30m or YYYY-MM-DDTHH:MM:SSZ (default 90d):
                        devices refuse the release after it (a freeze)
  --device-class C      only devices started with --device-class C install it
  --unsigned            publish without a manifest (for --insecure fleets)
  --json                print the control plane's answer as JSON
  -h, --help            this help

Exit codes: 0 ok, 2 usage or refused by the control plane (401: no, unknown or
revoked token; 403: the token's role is too low), 3 I/O error.`;

/** Runs `publish`. */
export async function publishCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("publish", args, {
    "control-plane": { type: "string" },
    ...tokenOptions,
    model: { type: "string" },
    version: { type: "string" },
    key: { type: "string" },
    keys: { type: "string" },
    counter: { type: "string" },
    expires: { type: "string" },
    "device-class": { type: "string" },
    unsigned: { type: "boolean" },
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
  const api = apiTarget("publish", values);
  const model = nameOption("model", required("publish", "model", values.model));
  const version = nameOption("version", required("publish", "version", values.version));
  const signing = await signingOptions(values);
  const path = positionals[0];
  let signed: { manifest: string; counter: number; digest: string } | undefined;
  if (signing) {
    const target = { blake3: await hashFile(path), size: (await Deno.stat(path)).size };
    const counter = signing.counter ?? (await callApi<ReleaseCounters>(
          api,
          "GET",
          `/v1/models/${encodeURIComponent(model)}/releases`,
        )).highestCounter + 1;
    const manifest = await signRelease({
      type: RELEASE_TYPE,
      spec: SPEC_VERSION,
      model,
      version,
      target,
      counter,
      expires: signing.expires,
      deviceClass: signing.deviceClass,
    }, signing.key);
    signed = { manifest, counter, digest: target.blake3 };
    await callApi<DocumentStored>(
      api,
      "PUT",
      "/v1/delegation",
      new TextDecoder().decode(signing.delegation.bytes),
    );
  } else {
    console.error(
      "poolboy: warning: publishing unsigned: agents that pin a trust root (--trust-root) refuse it",
    );
  }
  const input = await openInput(path, "model file");
  const result = await callApi<PublishResult>(
    api,
    "PUT",
    `/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}`,
    input.file.readable,
    "application/octet-stream",
  );
  let release: DocumentStored | undefined;
  if (signed) {
    if (result.version.digest !== signed.digest) {
      throw new UsageError(
        `${path} changed while it was published (its BLAKE3 is not the one signed); publish again`,
      );
    }
    release = await callApi<DocumentStored>(
      api,
      "PUT",
      `/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/release`,
      signed.manifest,
    );
  }
  if (values.json) {
    printJson({ ...result, release: release ?? null });
    return 0;
  }
  const v = result.version;
  println(`published ${v.model} ${v.version}: ${formatBytes(v.size)}, blake3 ${v.digest}`);
  println(
    signed
      ? `  signed: release counter ${signed.counter}, manifest ${release!.digest}`
      : "  unsigned: only agents started with --insecure install it",
  );
  for (const p of result.patches) {
    println(
      `  patch from ${p.from}: ${formatBytes(p.size)} (${(100 * p.size / v.size).toFixed(2)}%)`,
    );
  }
  return 0;
}

/** The signing options, checked before anything is read or sent; undefined with --unsigned. */
async function signingOptions(values: {
  key?: string;
  keys?: string;
  counter?: string;
  expires?: string;
  "device-class"?: string;
  unsigned?: boolean;
}): Promise<
  | {
    key: SigningKey;
    delegation: DelegationFile;
    counter: number | undefined;
    expires: number;
    deviceClass: string | null;
  }
  | undefined
> {
  const signingFlags = values.key !== undefined || values.keys !== undefined ||
    values.counter !== undefined || values.expires !== undefined ||
    values["device-class"] !== undefined;
  if (values.unsigned) {
    if (signingFlags) {
      throw new UsageError(
        "publish: --unsigned cannot go with --key, --keys, --counter, --expires or --device-class",
      );
    }
    return undefined;
  }
  if (values.key === undefined || values.keys === undefined) {
    throw new UsageError(
      "publish needs --key release.key and --keys keys.json to sign the release, or --unsigned to publish without a signature (see poolboy publish --help)",
    );
  }
  const expires = expiryOption("expires", values.expires, 90 * DAY_MS, Date.now());
  const counter = values.counter === undefined
    ? undefined
    : counterOption("counter", values.counter);
  const deviceClass = values["device-class"] === undefined
    ? null
    : nameOption("device-class", values["device-class"]);
  const delegation = await readDelegationFile(values.keys);
  const key = await readSigningKey(values.key, "release");
  requireDelegated(key, values.key, delegation);
  if (delegation.document.signed.expires <= Date.now()) {
    throw new UsageError(
      `${values.keys} expired at ${
        formatTime(delegation.document.signed.expires)
      }: devices refuse every release under it; sign a new one (poolboy delegate)`,
    );
  }
  return { key, delegation, counter, expires, deviceClass };
}
