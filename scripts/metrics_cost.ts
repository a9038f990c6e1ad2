/**
 * What a `GET /metrics` scrape costs the control plane at fleet size:
 * starts an in-process control plane on a temporary directory, registers N
 * devices in R regions (as heartbeats would), runs a rollout to all of them
 * through a few ticks, then times scrapes through the API handler and prints
 * the median and the largest, the answer's size and its number of lines.
 *
 *   deno run -A scripts/metrics_cost.ts [--devices 10000] [--regions 10] [--scrapes 50]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createToken } from "../controlplane/auth.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { apiHandler } from "../controlplane/http_api.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    devices: { type: "string", default: "10000" },
    regions: { type: "string", default: "10" },
    scrapes: { type: "string", default: "50" },
  },
});
const devices = Number(values.devices);
const regions = Number(values.regions);
const scrapes = Number(values.scrapes);
if (![devices, regions, scrapes].every((n) => Number.isSafeInteger(n) && n >= 1)) {
  throw new Error("--devices, --regions and --scrapes are whole numbers of at least 1");
}

const dir = await Deno.makeTempDir({ prefix: "poolboy-metrics-cost-" });
const cp = await ControlPlane.start({
  bind: "127.0.0.1",
  dataDir: dir,
  udpPort: 0,
  p2pPort: 0,
  tickMs: 3_600_000,
});
try {
  const { token } = await createToken(cp.stateStore, "admin", "m", 0);
  const handler = apiHandler(cp);
  const call = (method: string, path: string, body?: BodyInit) =>
    handler(
      new Request(`http://127.0.0.1${path}`, {
        method,
        body,
        headers: { authorization: `Bearer ${token}` },
      }),
    );
  const model = crypto.getRandomValues(new Uint8Array(4096));
  await (await call("PUT", "/v1/models/m/versions/v1", model)).body?.cancel();
  const now = Date.now();
  for (let i = 0; i < devices; i++) {
    cp.agents.set(`node-${i}`, {
      nodeId: `node-${i}`,
      region: `region-${i % regions}`,
      host: "127.0.0.2",
      udpPort: 9,
      p2pPort: 9,
      active: {},
      held: [],
      served: i,
      startedAt: 1,
      lastSeen: i % 10 === 0 ? now - 600_000 : now,
    });
  }
  await (await call("POST", "/v1/rollouts", JSON.stringify({ model: "m", version: "v1" }))).body
    ?.cancel();
  for (let t = 0; t < 12; t++) cp.tick(now + t);
  const times: number[] = [];
  let text = "";
  for (let i = 0; i < scrapes; i++) {
    const started = performance.now();
    const r = await call("GET", "/metrics");
    text = await r.text();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  console.log(
    `${devices} devices in ${regions} regions, ${scrapes} scrapes: median ${
      times[Math.floor(times.length / 2)].toFixed(2)
    } ms, largest ${times[times.length - 1].toFixed(2)} ms; ${text.length} bytes, ${
      text.split("\n").length - 1
    } lines`,
  );
} finally {
  await cp.close();
  await Deno.remove(dir, { recursive: true });
}
