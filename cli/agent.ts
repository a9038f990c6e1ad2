/**
 * `poolboy agent`: runs the device agent until interrupted. The agent's
 * modules are imported when the command runs (see cli/controlplane.ts).
 *
 * @module
 */

import {
  DEFAULT_AGENT_P2P_PORT,
  DEFAULT_AGENT_UDP_PORT,
  DEFAULT_CP_HTTP_PORT,
  DEFAULT_CP_UDP_PORT,
} from "../transfer/default_ports.ts";
import { UsageError } from "../kernel/errors.ts";
import { explainBindFailure, type ListenPort } from "./bind_errors.ts";
import { parseCommand, sizeOption } from "./args.ts";
import { agentControlPlane } from "./control_plane_address.ts";
import {
  addressOption,
  blobLimitHelp,
  blobLimitOptions,
  blobLimitsFrom,
  countOption,
  durationOption,
  hostPortOption,
  nameOption,
  portOption,
  required,
  uploadCapHelp,
  uploadCapOptions,
  uploadCapsFrom,
} from "./fleet_args.ts";
import { logLine, println } from "./output.ts";
import type { AgentHooks, AgentTrust } from "../agent/agent.ts";
import type { FaultInjector } from "../transfer/faults.ts";

export const AGENT_HELP =
  `poolboy agent — keep this device's models at the version the fleet rolls out

Usage: poolboy agent --control-plane ADDR[:PORT] --bind ADDR --node-id ID --data DIR
                     (--trust-root root.pub | --insecure) [options]

Heartbeats to the control plane, takes part in its region's elections,
downloads (from the region's leader, or from the control plane when it leads),
applies the patch to the active model, verifies its BLAKE3 and switches
atomically. Applications read the active model at one stable path:

  DIR/models/NAME/current     a symlink to the verified file of the active version

It is replaced by rename, so a reader sees the old file or the new one, never a
partial one. Each update's step (downloading, staged, applied, switched,
committed or rolledBack) is saved in DIR/models/NAME/state.json before the
next starts; after a crash the agent resumes or cleans up from there. The
agent serves the blobs it holds to the peers of its region.

Device identity: at first start the agent makes its Ed25519 key pair,
DIR/device.key (mode 0600) and DIR/device.pub, and enrols with the control
plane (--enroll TOKEN, or an admin's poolboy device accept). With a token it
checks that the answer comes from the control plane that issued the token (a
MAC keyed by the token) and pins that control plane's key in
DIR/enrollment.json; accepted without a token, it pins the first key it is
given (trust on first use).

Signed releases: with --trust-root the agent installs only releases whose
manifest is signed by a release key that a delegation signed by this root key
names (poolboy keygen, delegate, publish). Before it bids, so before any byte
is downloaded, it fetches the delegation and the manifest from the control
plane and refuses: an unsigned release, a key the delegation does not name
(unknown or revoked), an expired delegation or manifest, a counter lower than
the highest it installed for the model (a rollback attack: a rollback needs a
newly signed manifest), a manifest of another model, version or file, or of
another device class. A refusal is reported to the control plane (status
failed, "refused: ..."), kept in DIR/models/NAME/state.json and logged; the
active model is not touched. It checks again just before switching, and first
saves the highest counter installed per model in DIR/trust.json (written
atomically; a damaged trust.json stops the agent instead of being reset).

Options:
  --control-plane ADDR[:PORT]  the control plane: its IP (UDP port ${DEFAULT_CP_UDP_PORT}), IP:UDPPORT, or the
                               operators' http://IP:PORT (its IP, UDP ${DEFAULT_CP_UDP_PORT}, HTTP port PORT)
  --control-plane-http PORT    the control plane's HTTP API port on that address, for
                               enrolment (default ${DEFAULT_CP_HTTP_PORT})
  --enroll TOKEN               enrol this device with a token of poolboy device enroll-token
                               (or env POOLBOY_ENROLL_TOKEN) at its first start; ignored once
                               DIR/enrollment.json exists. Without a token the device asks to
                               enrol and waits (asking every 30 s) for poolboy device accept ID
  --bind ADDR                  this device's tailnet address (e.g. 100.64.0.17)
  --node-id ID                 this device's name in the fleet (letters, digits, . _ -)
  --region R                   region: peers seed each other only within it (default "default")
  --data DIR                   state directory: DIR/blobs, DIR/models, DIR/trust.json
                               (created if missing)
  --trust-root FILE            the root public key (root.pub of poolboy keygen root):
                               install only releases signed under its delegation
  --insecure                   no --trust-root: check no signature and install whatever
                               the control plane, or anyone who can spoof it, announces
                               (demos and tests only; one of the two is required)
  --device-class C             this device's class: a release signed for another class is
                               refused (default: none, only releases for every class)
  --udp-port N                 control messages (default ${DEFAULT_AGENT_UDP_PORT})
  --p2p-port N                 blob server for peers (default ${DEFAULT_AGENT_P2P_PORT})
  --heartbeat-interval T       default 2s
  --transfer-timeout T         a peer silent this long mid-transfer is dropped (default 10s)
  --health-cmd 'CMD'           after switching, run sh -c CMD with POOLBOY_MODEL (and {model})
                               set to the new file; exit 0 commits, anything else rolls back.
                               Default: BLAKE3 + a SafeTensors/GGUF/ONNX sanity check
  --health-timeout T           a health command running longer fails (default 60s)
  --poison-after N             a version that failed N times in a rollout is not tried again
                               until the next rollout (default 3)
  --on-switch 'CMD'            run sh -c CMD (POOLBOY_MODEL, {model}) after every switch and
                               rollback, e.g. to make the application reload
  --min-free SIZE              refuse an update that would leave less free space than this on
                               DIR's filesystem, checked before downloading (default 64MiB)
  --keep-backups N             earlier versions kept per model for a local rollback (default 1)
${blobLimitHelp("and so is a download from a peer that slow: the next source is tried", 31)}
${uploadCapHelp(31)}
  --metrics ADDR:PORT          serve GET /metrics (Prometheus text format) there; off by
                               default. No authentication: bind it to 127.0.0.1 or a
                               private address only the scraper reaches (docs/metrics.md)
  -q, --quiet                  no log lines on stderr (the --insecure warning is still printed)
  -h, --help                   this help

After a commit only each model's active version, its --keep-backups earlier
versions and the latest update's blob (to seed peers) are kept on disk.
Durations: 500ms, 2s, 10m. Runs until SIGINT/SIGTERM; an interrupted download
resumes from its partial file at the next start.
Exit codes: 0 stopped, 2 usage (e.g. neither --trust-root nor --insecure),
3 I/O error (a port in use, an unreadable --trust-root, a damaged DIR/trust.json).`;

/**
 * What the test-only entry point (testkit/faulty_main.ts) injects into the
 * agent: transport faults and lifecycle hooks. mod.ts never passes it.
 */
export interface AgentInjection {
  readonly faults?: FaultInjector;
  readonly hooks?: AgentHooks;
}

/** `--metrics ADDR:PORT`: the port is required (no default: the endpoint is off unless asked for). */
function metricsOption(value: string): { hostname: string; port: number } {
  if (!/:[0-9]+$/.test(value)) {
    throw new UsageError(`--metrics: "${value}" is not ADDR:PORT (e.g. 127.0.0.1:9464)`);
  }
  return hostPortOption("metrics", value, 0);
}

/** POOLBOY_ENROLL_TOKEN, when the process may read it and it is set. */
function envToken(): string | undefined {
  const variable = "POOLBOY_ENROLL_TOKEN";
  const allowed = Deno.permissions.querySync({ name: "env", variable }).state === "granted";
  return allowed ? Deno.env.get(variable) : undefined;
}

/** Runs `agent` (`injected`: tests only). */
export async function agentCommand(args: string[], injected?: AgentInjection): Promise<number> {
  const { values, positionals } = parseCommand("agent", args, {
    "control-plane": { type: "string" },
    bind: { type: "string" },
    "node-id": { type: "string" },
    region: { type: "string" },
    data: { type: "string" },
    "udp-port": { type: "string" },
    "p2p-port": { type: "string" },
    "heartbeat-interval": { type: "string" },
    "transfer-timeout": { type: "string" },
    "health-cmd": { type: "string" },
    "health-timeout": { type: "string" },
    "poison-after": { type: "string" },
    "on-switch": { type: "string" },
    "min-free": { type: "string" },
    "keep-backups": { type: "string" },
    "trust-root": { type: "string" },
    insecure: { type: "boolean" },
    "device-class": { type: "string" },
    ...blobLimitOptions,
    ...uploadCapOptions,
    enroll: { type: "string" },
    "control-plane-http": { type: "string" },
    metrics: { type: "string" },
  });
  if (values.help) {
    println(AGENT_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`agent takes no arguments, got "${positionals[0]}"`);
  }
  const enrollToken = values.enroll ?? envToken();
  const { checkEnrollToken } = await import("../agent/enrollment.ts");
  const controlPlane = agentControlPlane(
    required("agent", "control-plane", values["control-plane"]),
  );
  const options = {
    controlPlane: { hostname: controlPlane.hostname, port: controlPlane.port },
    bind: addressOption("bind", required("agent", "bind", values.bind)),
    nodeId: nameOption("node-id", required("agent", "node-id", values["node-id"])),
    region: nameOption("region", values.region ?? "default"),
    dataDir: required("agent", "data", values.data),
    udpPort: portOption("udp-port", values["udp-port"], DEFAULT_AGENT_UDP_PORT),
    p2pPort: portOption("p2p-port", values["p2p-port"], DEFAULT_AGENT_P2P_PORT),
    heartbeatMs: durationOption("heartbeat-interval", values["heartbeat-interval"], 2000),
    transferTimeoutMs: durationOption("transfer-timeout", values["transfer-timeout"], 10_000),
    blobLimits: { ...blobLimitsFrom(values), ...uploadCapsFrom(values) },
    healthCmd: values["health-cmd"],
    healthTimeoutMs: durationOption("health-timeout", values["health-timeout"], 60_000),
    poisonAfter: countOption("poison-after", values["poison-after"], 3),
    onSwitchCmd: values["on-switch"],
    minFreeBytes: sizeOption("min-free", values["min-free"], 64 * 1024 * 1024),
    keepBackups: countOption("keep-backups", values["keep-backups"], 1),
    deviceClass: values["device-class"] === undefined
      ? undefined
      : nameOption("device-class", values["device-class"]),
    enrollToken: enrollToken === undefined ? undefined : checkEnrollToken(enrollToken),
    controlPlaneHttpPort: portOption(
      "control-plane-http",
      values["control-plane-http"],
      controlPlane.httpPort ?? DEFAULT_CP_HTTP_PORT,
    ),
    log: values.quiet ? undefined : logLine,
    faults: injected?.faults,
    hooks: injected?.hooks,
  };
  const trustRoot = values["trust-root"];
  if (trustRoot !== undefined && values.insecure) {
    throw new UsageError(
      "agent: --trust-root and --insecure exclude each other (see poolboy agent --help)",
    );
  }
  if (trustRoot === undefined && !values.insecure) {
    throw new UsageError(
      "agent needs --trust-root root.pub (install only releases signed under that root key) or --insecure (check nothing: install whatever the control plane, or anyone spoofing it, announces)",
    );
  }
  let trust: AgentTrust;
  if (trustRoot !== undefined) {
    const { readPublicKey } = await import("../release/keys.ts");
    trust = { kind: "pinned", root: await readPublicKey(trustRoot, "root") };
  } else {
    trust = { kind: "insecure" };
    logLine(
      "WARNING: --insecure: this device installs whatever the control plane, or anyone spoofing it, announces (no signature is checked)",
    );
  }
  const { Agent } = await import("../agent/agent.ts");
  const metricsAddress = values.metrics === undefined ? undefined : metricsOption(values.metrics);
  const ports: ListenPort[] = [
    { flag: "udp-port", port: options.udpPort, transport: "udp", purpose: "control messages" },
    { flag: "p2p-port", port: options.p2pPort, transport: "tcp", purpose: "blob server for peers" },
  ];
  const agent = await Agent.start({ ...options, trust }).catch((err) => {
    throw explainBindFailure(err, options.bind, "bind", ports);
  });
  if (metricsAddress !== undefined) {
    const { serveAgentMetrics } = await import("../agent/metrics_server.ts");
    try {
      const served = await serveAgentMetrics(agent, metricsAddress);
      if (!values.quiet) logLine(`metrics on http://${served.hostname}:${served.port}/metrics`);
    } catch (err) {
      await agent.close();
      throw err;
    }
  }
  // Runs until a signal ends the process (mod.ts removes temporary files then).
  await new Promise<void>(() => {});
  await agent.close();
  return 0;
}
