/**
 * `poolboy controlplane`: runs the control plane until interrupted. The
 * control plane's modules are imported when the command runs, so the codec
 * commands never load the fleet's modules (SQLite, HTTP, CBOR): each module
 * graph costs memory whether used or not.
 *
 * @module
 */

import {
  DEFAULT_CP_HTTP_PORT,
  DEFAULT_CP_P2P_PORT,
  DEFAULT_CP_UDP_PORT,
} from "../transfer/default_ports.ts";
import { parseCommand, sizeOption } from "./args.ts";
import {
  addressOption,
  blobLimitHelp,
  blobLimitOptions,
  blobLimitsFrom,
  countOption,
  durationOption,
  portOption,
  required,
} from "./fleet_args.ts";
import { UsageError } from "../kernel/errors.ts";
import { explainBindFailure, type ListenPort } from "./bind_errors.ts";
import { logLine, println } from "./output.ts";
import type { FaultInjector } from "../transfer/faults.ts";
import type { ControlPlanePatchFormat } from "../controlplane/patch_cache.ts";
import { MAX_PIECE_SIZE_LOG2, MIN_PIECE_SIZE_LOG2 } from "../transfer/piece_list.ts";

export const CONTROLPLANE_HELP =
  `poolboy controlplane — model store, elections and operator API for a fleet

Usage: poolboy controlplane --bind ADDR --data DIR [options]

Holds every published version (blobs named by BLAKE3 under DIR/blobs), the
patches between them, the agent registry and the rollouts, in DIR (SQLite:
DIR/controlplane.sqlite; all of it survives a restart). Per rollout and region
it elects one agent to fetch the patch from here, which re-seeds the others:
the uplink carries one patch per region, not one per device.

Every call to the HTTP API but GET /health needs an operator's token; make
them on this host, also while it runs: poolboy token create --data DIR
--role viewer|deployer|admin --name NAME (see poolboy token --help).

Options:
  --bind ADDR              address to bind every port to (the tailnet address, e.g. 100.64.0.1)
  --data DIR               state directory (created if missing)
  --udp-port N             control messages (default ${DEFAULT_CP_UDP_PORT})
  --p2p-port N             blob downloads by leaders (default ${DEFAULT_CP_P2P_PORT})
  --http-port N            operator HTTP API (default ${DEFAULT_CP_HTTP_PORT})
  --agent-timeout T        an agent silent this long is offline: it leaves its elections (default 10s)
  --offline-after T        an agent silent this long no longer holds its rollouts: they go on
                           and may finish without it; when it returns it is offered the
                           rollout again if that still runs (default 2m, at least --agent-timeout)
  --leader-timeout T       a leader must say LeaderReady within this (default 10m)
  --header-timeout T       an HTTP request's headers must be complete within this, else
                           408 and the connection is closed (default 10s)
  --body-timeout T         an HTTP request body must bring 64 KiB or end within every
                           window this long, else 408 and closed (default 30s)
  --max-upload SIZE        largest version file a PUT may upload: over it 413, nothing kept
                           (default 64GiB; JSON bodies and signed documents: 64 KiB)
  --piece-size SIZE        pieces the devices of a region pass the blob on in, each checked by
                           BLAKE3 (a power of two, 64KiB to 64MiB; default: about 256 pieces
                           per blob, 64KiB to 16MiB)
  --connections-per-address N
                           open HTTP connections allowed from one address (default 16)
  --patch-format N         format of the patches it makes: 4 (default: a device checks its base
                           from sampled ranges and reads it once), 3, or 2 for a fleet that
                           still has agents older than 0.17 (they read formats 1 and 2 only);
                           patches made before keep their format
${blobLimitHelp("whichever side is slow (a leader that requests or reads too slowly)")}
  -q, --quiet              no log lines on stderr
  -h, --help               this help

Durations: 500ms, 2s, 10m. Runs until SIGINT/SIGTERM.
Exit codes: 0 stopped, 2 usage, 3 I/O error (e.g. a port in use, or DIR in use by
another control plane: it holds DIR/controlplane.lock while it runs).`;

/**
 * What the test-only entry point (testkit/faulty_main.ts) injects into the
 * control plane: transport faults. mod.ts never passes it.
 */
export interface ControlPlaneInjection {
  readonly faults?: FaultInjector;
}

/** Runs `controlplane` (`injected`: tests only). */
export async function controlplaneCommand(
  args: string[],
  injected?: ControlPlaneInjection,
): Promise<number> {
  const { values, positionals } = parseCommand("controlplane", args, {
    bind: { type: "string" },
    data: { type: "string" },
    "udp-port": { type: "string" },
    "p2p-port": { type: "string" },
    "http-port": { type: "string" },
    "agent-timeout": { type: "string" },
    "offline-after": { type: "string" },
    "leader-timeout": { type: "string" },
    "header-timeout": { type: "string" },
    "body-timeout": { type: "string" },
    "max-upload": { type: "string" },
    "connections-per-address": { type: "string" },
    "piece-size": { type: "string" },
    "patch-format": { type: "string" },
    ...blobLimitOptions,
  });
  if (values.help) {
    println(CONTROLPLANE_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError(`controlplane takes no arguments, got "${positionals[0]}"`);
  }
  const bind = addressOption("bind", required("controlplane", "bind", values.bind));
  const dataDir = required("controlplane", "data", values.data);
  const httpPort = portOption("http-port", values["http-port"], DEFAULT_CP_HTTP_PORT);
  const log = values.quiet ? undefined : logLine;
  const httpLimits = {
    headerTimeoutMs: durationOption("header-timeout", values["header-timeout"], 10_000),
    bodyTimeoutMs: durationOption("body-timeout", values["body-timeout"], 30_000),
    connectionsPerAddress: countOption(
      "connections-per-address",
      values["connections-per-address"],
      16,
    ),
  };
  const maxUploadBytes = sizeOption("max-upload", values["max-upload"], 64 * 1024 ** 3);
  const pieceSize = values["piece-size"] === undefined
    ? undefined
    : sizeOption("piece-size", values["piece-size"], 0);
  if (
    pieceSize !== undefined &&
    !(Number.isInteger(Math.log2(pieceSize)) &&
      Math.log2(pieceSize) >= MIN_PIECE_SIZE_LOG2 && Math.log2(pieceSize) <= MAX_PIECE_SIZE_LOG2)
  ) {
    throw new UsageError(
      `--piece-size: ${values["piece-size"]} is not a power of two from 64KiB to 64MiB`,
    );
  }
  const patchFormat = patchFormatOption(values["patch-format"]);
  const blobLimits = blobLimitsFrom(values);
  // Loaded here, not above: the codec commands need not load the fleet's modules.
  const { ControlPlane } = await import("../controlplane/control_plane.ts");
  const { apiHandler } = await import("../controlplane/http_api.ts");
  const { serveHttp } = await import("../controlplane/http_server.ts");
  const udpPort = portOption("udp-port", values["udp-port"], DEFAULT_CP_UDP_PORT);
  const p2pPort = portOption("p2p-port", values["p2p-port"], DEFAULT_CP_P2P_PORT);
  const ports: ListenPort[] = [
    { flag: "udp-port", port: udpPort, transport: "udp", purpose: "control messages" },
    { flag: "p2p-port", port: p2pPort, transport: "tcp", purpose: "blob downloads" },
    { flag: "http-port", port: httpPort, transport: "tcp", purpose: "operator HTTP API" },
  ];
  const cp = await ControlPlane.start({
    bind,
    dataDir,
    udpPort,
    p2pPort,
    agentTimeoutMs: durationOption("agent-timeout", values["agent-timeout"], 10_000),
    offlineAfterMs: durationOption("offline-after", values["offline-after"], 120_000),
    election: {
      leaderTimeoutMs: durationOption("leader-timeout", values["leader-timeout"], 600_000),
    },
    log,
    faults: injected?.faults,
    blobLimits,
    pieceSize,
    patchFormat,
  }).catch((err) => {
    throw explainBindFailure(err, bind, "bind", ports);
  });
  if ((await cp.stateStore.tokens()).every((t) => t.revoked !== null)) {
    log?.(
      `no valid API token yet: every call but GET /health gets 401; make one with poolboy token create --data ${dataDir} --role admin --name NAME`,
    );
  }
  let server;
  try {
    // node:http underneath: Deno.serve has no header deadline (http_server.ts).
    server = await serveHttp(
      { hostname: bind, port: httpPort, log, ...httpLimits },
      apiHandler(cp, { maxUploadBytes }),
    );
  } catch (err) {
    await cp.close();
    throw explainBindFailure(err, bind, "bind", ports);
  }
  await server.finished;
  await cp.close();
  return 0;
}

/** `--patch-format`: 2, 3 or 4; undefined (the control plane's default) when not given. */
function patchFormatOption(value: string | undefined): ControlPlanePatchFormat | undefined {
  if (value === undefined) return undefined;
  if (value === "2" || value === "3" || value === "4") {
    return Number(value) as ControlPlanePatchFormat;
  }
  throw new UsageError(
    `--patch-format: "${value}" is not 2, 3 or 4`,
  );
}
