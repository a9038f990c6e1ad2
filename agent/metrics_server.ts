/**
 * The agent's metrics endpoint (`poolboy agent --metrics ADDR:PORT`, off by
 * default): `GET /metrics` in the Prometheus text format 0.0.4
 * (kernel/prometheus.ts; docs/metrics.md lists every metric). It has no
 * authentication, so it is meant for localhost or a private address that
 * only the scraper reaches; it reads nothing from the request but its method
 * and path, and shows nothing secret (counters, model names, digests).
 *
 * `gatherAgentMetrics` reads the agent's counters and each model's active
 * digest and `state.json` (at most `MAX_MODELS_SHOWN` models); scrapes that
 * arrive while one is gathered share it. Served with `node:http` (not
 * `Deno.serve`) for its header deadline and connection cap: a client that
 * trickles its headers or opens connections by the hundred cannot hold it.
 *
 * @module
 */

import http from "node:http";
import { IoError } from "../kernel/errors.ts";
import {
  type MetricFamily,
  PROMETHEUS_CONTENT_TYPE,
  renderPrometheus,
  type Sample,
} from "../kernel/prometheus.ts";
import type { Agent, AgentCounters, SourceKind } from "./agent.ts";
import { type Step, STEPS } from "./lifecycle_state.ts";
import { activeModels } from "./model_slots.ts";
import { type Outcome, reportedVersion } from "./update_machine.ts";

/** Most models listed (a device runs a handful; the rest are left out, never an unbounded page). */
export const MAX_MODELS_SHOWN = 256;

/** Every update outcome (a new outcome fails to compile until it is listed here). */
const OUTCOMES: Record<Outcome, true> = {
  poisoned: true,
  waitingForLeader: true,
  alreadyActive: true,
  committed: true,
  rolledBack: true,
  failed: true,
  interrupted: true,
};

/** A source kind's label value. */
const SOURCE_LABEL: Record<SourceKind, string> = { peer: "peer", controlPlane: "control_plane" };

/** One model on the device. */
export interface ModelMetrics {
  readonly model: string;
  /** The version it reports running (hex digest); null when none is active. */
  readonly digest: string | null;
  /** That version's name, when an update since start named it; "" otherwise. */
  readonly version: string;
  /** Its `state.json` step; null when the file could not be read. */
  readonly step: Step | null;
}

/** Everything the agent's `GET /metrics` shows. */
export interface AgentMetrics {
  readonly models: readonly ModelMetrics[];
  readonly counters: AgentCounters;
  readonly updatesInProgress: number;
  readonly servedBytes: number;
  readonly drops: Readonly<Record<string, number>>;
  readonly enrolled: boolean;
  readonly uptimeSeconds: number;
  readonly residentBytes: number;
}

/** The agent's metrics now. */
export async function gatherAgentMetrics(agent: Agent, now = Date.now()): Promise<AgentMetrics> {
  const dataDir = agent.options.dataDir;
  const active = await activeModels(dataDir);
  const names = new Set<string>(active.keys());
  for (const model of await agent.states.models().catch(() => [])) names.add(model);
  const models: ModelMetrics[] = [];
  for (const model of [...names].sort().slice(0, MAX_MODELS_SHOWN)) {
    const state = await agent.states.read(model).catch(() => undefined);
    const digest = active.get(model);
    const reported = digest === undefined ? null : reportedVersion(state, digest);
    models.push({
      model,
      digest: reported,
      version: reported === null ? "" : agent.versionName(model, reported) ?? "",
      step: state?.step ?? null,
    });
  }
  return {
    models,
    counters: agent.counters,
    updatesInProgress: agent.updatesInProgress,
    servedBytes: agent.blobServer.bytesServed,
    drops: { ...agent.drops },
    enrolled: agent.enrollment !== undefined,
    uptimeSeconds: Math.max(0, now - agent.startedAt) / 1000,
    residentBytes: Deno.memoryUsage().rss,
  };
}

function bySource(counts: Readonly<Record<SourceKind, number>>): Sample[] {
  return (Object.keys(SOURCE_LABEL) as SourceKind[]).map((kind) => ({
    labels: { source: SOURCE_LABEL[kind] },
    value: counts[kind],
  }));
}

/** The agent's metric families, in the order docs/metrics.md lists them. */
export function agentMetricFamilies(m: AgentMetrics): MetricFamily[] {
  const withDigest = m.models.filter((model) => model.digest !== null);
  return [
    {
      name: "poolboy_agent_model_info",
      help:
        "The version each model runs: 1 per model, with its digest and (when an update since start named it) its version name.",
      type: "gauge",
      samples: withDigest.map((model) => ({
        labels: { model: model.model, digest: model.digest!, version: model.version },
        value: 1,
      })),
    },
    {
      name: "poolboy_agent_model_step",
      help: "Each model's update step (state.json): 1 for the current step, 0 for the others.",
      type: "gauge",
      samples: m.models.filter((model) => model.step !== null).flatMap((model) =>
        STEPS.map((step) => ({
          labels: { model: model.model, step },
          value: model.step === step ? 1 : 0,
        }))
      ),
    },
    {
      name: "poolboy_agent_updates_total",
      help: "Updates that finished since start, by outcome.",
      type: "counter",
      samples: (Object.keys(OUTCOMES) as Outcome[]).map((outcome) => ({
        labels: { outcome },
        value: m.counters.updates[outcome] ?? 0,
      })),
    },
    {
      name: "poolboy_agent_updates_in_progress",
      help: "Updates running now.",
      type: "gauge",
      samples: [{ labels: {}, value: m.updatesInProgress }],
    },
    {
      name: "poolboy_agent_downloaded_bytes_total",
      help:
        "Blob body bytes received since start, by source (a peer of the region, or the control plane).",
      type: "counter",
      samples: bySource(m.counters.downloadedBytes),
    },
    {
      name: "poolboy_agent_served_bytes_total",
      help: "Body bytes this agent's blob server sent to peers since start.",
      type: "counter",
      samples: [{ labels: {}, value: m.servedBytes }],
    },
    {
      name: "poolboy_agent_pieces_verified_total",
      help: "Swarm pieces received that verified against the piece list, by source.",
      type: "counter",
      samples: bySource(m.counters.piecesVerified),
    },
    {
      name: "poolboy_agent_piece_refusals_total",
      help: "Swarm piece requests a source refused (not yet, busy, not found), by source.",
      type: "counter",
      samples: bySource(m.counters.pieceRefusals),
    },
    {
      name: "poolboy_agent_datagrams_dropped_total",
      help: "Control datagrams the agent refused, by reason.",
      type: "counter",
      samples: Object.entries(m.drops).map(([reason, value]) => ({ labels: { reason }, value })),
    },
    {
      name: "poolboy_agent_enrolled",
      help: "1 when the device is enrolled with the control plane, 0 while it waits.",
      type: "gauge",
      samples: [{ labels: {}, value: m.enrolled ? 1 : 0 }],
    },
    {
      name: "poolboy_agent_process_resident_memory_bytes",
      help: "Resident set size of the agent's process.",
      type: "gauge",
      samples: [{ labels: {}, value: m.residentBytes }],
    },
    {
      name: "poolboy_agent_uptime_seconds",
      help: "Seconds since the agent started.",
      type: "gauge",
      samples: [{ labels: {}, value: m.uptimeSeconds }],
    },
  ];
}

/** A running metrics endpoint. */
export interface MetricsServer {
  readonly hostname: string;
  readonly port: number;
  close(): Promise<void>;
}

/** A scraper's request line and headers must arrive within this, and the whole request too. */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;

/** Most connections open at once (a scraper needs one). */
export const METRICS_MAX_CONNECTIONS = 8;

/**
 * Serves `GET /metrics` on `hostname:port` (port 0: any free port) with
 * `node:http`, for its header deadline (`METRICS_REQUEST_TIMEOUT_MS`) and its
 * connection cap (`METRICS_MAX_CONNECTIONS`). Any other path is 404, another
 * method 405; a request body is never read. IoError: the address cannot be bound.
 */
export async function serveAgentMetrics(
  agent: Agent,
  address: { readonly hostname: string; readonly port: number },
): Promise<MetricsServer> {
  let gathering: Promise<string> | undefined;
  const render = (): Promise<string> => {
    if (gathering === undefined) {
      const started = gatherAgentMetrics(agent).then((m) =>
        renderPrometheus(agentMetricFamilies(m))
      );
      gathering = started;
      const clear = () => {
        if (gathering === started) gathering = undefined;
      };
      started.then(clear, clear);
    }
    return gathering;
  };
  const answer = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: only GET /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" })
        .end("method not allowed: only GET /metrics\n");
      return;
    }
    let text: string;
    try {
      text = await render();
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" })
        .end(`cannot gather metrics: ${err instanceof Error ? err.message : err}\n`);
      return;
    }
    res.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE });
    res.end(req.method === "HEAD" ? undefined : text);
  };
  const server = http.createServer({
    headersTimeout: METRICS_REQUEST_TIMEOUT_MS,
    requestTimeout: METRICS_REQUEST_TIMEOUT_MS,
  }, (req, res) => {
    // Whatever the client sent as a body is not read: the connection closes after the answer.
    res.shouldKeepAlive = false;
    answer(req, res).catch(() => req.socket.destroy());
  });
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) =>
      reject(
        new IoError(
          `cannot serve metrics on ${address.hostname}:${address.port}: ${err.message}`,
          { cause: err },
        ),
      );
    server.once("error", failed);
    server.listen(address.port, address.hostname, () => {
      server.off("error", failed);
      resolve();
    });
  });
  const bound = server.address();
  return {
    hostname: address.hostname,
    port: typeof bound === "object" && bound !== null ? bound.port : address.port,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
