/**
 * A worker process of the fleet simulator: `deno run testkit/fleet_sim/worker.ts
 * CONFIG_JSON` simulates the devices `first … first+count-1` (device.ts):
 * enrols them over HTTP (a few at a time), starts each one's socket and first
 * heartbeat, then heartbeats every device once per `heartbeatMs` from one
 * timer (the devices spread evenly over the period), and prints events as
 * JSON lines on stdout (wire.ts). It stops — counters printed, every socket
 * and server closed — on SIGTERM/SIGINT or when its stdin ends (the parent
 * went away: no orphan outlives it).
 *
 * @module
 */

import { readPublicKey } from "../../release/keys.ts";
import { BlobShelf } from "./blob_shelf.ts";
import { type DeviceContext, type DeviceCounters, SimDevice } from "./device.ts";
import { ReleaseChecks } from "./documents.ts";
import { enrol, newDeviceKey } from "./enrol.ts";
import { Semaphore } from "./limiter.ts";
import { SharedBlobs } from "./shared_piece_store.ts";
import { devicePlan } from "./plan.ts";
import type { WorkerConfig, WorkerEvent } from "./wire.ts";

/** Heartbeat scheduler resolution. */
const TICK_MS = 100;
/** Deadline of one device's enrolment. */
const ENROL_DEADLINE_MS = 300_000;

const encoder = new TextEncoder();

function emit(event: WorkerEvent): void {
  const bytes = encoder.encode(JSON.stringify(event) + "\n");
  for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
}

function parseConfig(text: string | undefined): WorkerConfig {
  if (text === undefined) throw new RangeError("usage: worker.ts CONFIG_JSON");
  const c = JSON.parse(text) as WorkerConfig;
  const counts = [
    c.first,
    c.count,
    c.regions,
    c.heartbeatMs,
    c.enrolSlots,
    c.cpSlots,
    c.uploadSlots,
    c.uploadBytesPerSecond,
    c.swarmSlots,
  ];
  if (
    !counts.every((n) => Number.isSafeInteger(n) && n >= 0) || c.count < 1 || c.regions < 1 ||
    c.uploadSlots < 1 || c.swarmSlots < 1
  ) {
    throw new RangeError("worker config: bad counts");
  }
  if (c.stallMs !== null && !(Number.isSafeInteger(c.stallMs) && c.stallMs > 0)) {
    throw new RangeError("worker config: bad stallMs");
  }
  return c;
}

async function main(): Promise<void> {
  const config = parseConfig(Deno.args[0]);
  const abort = new AbortController();
  const devices: SimDevice[] = [];
  const counters: DeviceCounters = {
    documentFetches: 0,
    bytesFromControlPlane: 0,
    bytesFromPeers: 0,
    piecesVerified: 0,
    pieceListBytes: 0,
    serversStarted: 0,
  };
  let stopping: Promise<void> | undefined;
  const heartbeats: { timer?: ReturnType<typeof setInterval> } = {};
  const stop = () => {
    stopping ??= (async () => {
      clearInterval(heartbeats.timer);
      abort.abort(new Error("the worker is stopping"));
      const sum = {
        sent: 0,
        received: 0,
        malformed: 0,
        stale: 0,
        replayed: 0,
        badSignature: 0,
        served: 0,
        notYet: 0,
        busy: 0,
        errors: 0,
      };
      for (const d of devices) {
        const g = d.datagrams;
        sum.sent += g.sent;
        sum.received += g.received;
        sum.malformed += g.malformed;
        sum.stale += g.stale;
        sum.replayed += g.replayed;
        sum.badSignature += g.badSignature;
        sum.served += d.served;
        const a = d.serverAnswers;
        sum.notYet += a.notYet;
        sum.busy += a.busy;
        sum.errors += a.errors;
      }
      emit({
        t: "served",
        devices: devices.map((d) => [d.plan.nodeId, d.plan.region, d.served, d.peakUploads]),
      });
      emit({
        t: "stats",
        stats: {
          devices: devices.length,
          datagramsSent: sum.sent,
          datagramsReceived: sum.received,
          droppedMalformed: sum.malformed,
          droppedStale: sum.stale,
          droppedReplayed: sum.replayed,
          droppedBadSignature: sum.badSignature,
          documentFetches: counters.documentFetches,
          bytesFromControlPlane: counters.bytesFromControlPlane,
          bytesFromPeers: counters.bytesFromPeers,
          bytesServed: sum.served,
          piecesVerified: counters.piecesVerified,
          pieceListBytes: counters.pieceListBytes,
          serversStarted: counters.serversStarted,
          serverNotYet: sum.notYet,
          serverBusy: sum.busy,
          serverErrors: sum.errors,
        },
      });
      await Promise.race([
        Promise.allSettled(devices.map((d) => d.close())),
        new Promise((r) => setTimeout(r, 5_000)),
      ]);
      Deno.exit(0);
    })();
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(signal, stop);
  // The parent holds our stdin: when it ends, the parent is gone or wants us gone.
  void (async () => {
    try {
      for await (const _ of Deno.stdin.readable) {
        // Nothing is read from it but its end.
      }
    } finally {
      stop();
    }
  })();

  const root = await readPublicKey(config.rootPub, "root");
  const ctx: DeviceContext = {
    cp: { hostname: config.cpHost, port: config.cpUdpPort },
    checks: new ReleaseChecks(root),
    shelf: new BlobShelf(config.workDir),
    cpSlots: new Semaphore(config.cpSlots, "random"),
    leadSlots: new Semaphore(4),
    peerSlots: new Semaphore(config.peerSlots, "random"),
    serverConnections: config.serverConnections,
    uploadSlots: config.uploadSlots,
    uploadBytesPerSecond: config.uploadBytesPerSecond,
    stallMs: config.stallMs ?? undefined,
    swarmSlots: new Semaphore(config.swarmSlots, "random"),
    pieces: new SharedBlobs(),
    emit,
    signal: abort.signal,
    counters,
  };
  const enrolSlots = new Semaphore(config.enrolSlots);
  let enrolled = 0;
  const step = Math.max(1, Math.floor(config.count / 10));
  await Promise.all(
    Array.from({ length: config.count }, (_, k) => config.first + k).map((index) =>
      enrolSlots.run(async () => {
        if (abort.signal.aborted) return;
        const plan = devicePlan(index, config.regions);
        const key = await newDeviceKey();
        const { controlPlaneKey } = await enrol({
          nodeId: plan.nodeId,
          region: plan.region,
          url: config.cpUrl,
          token: config.token,
          deadlineMs: ENROL_DEADLINE_MS,
          signal: abort.signal,
        }, key);
        const device = new SimDevice(plan, ctx, key, controlPlaneKey, {
          model: config.model,
          digest: config.activeDigest,
        });
        devices.push(device);
        await device.start();
        if (++enrolled % step === 0) emit({ t: "enrolled", n: enrolled });
      })
    ),
  );
  emit({ t: "ready", n: devices.length });
  // One timer for every device: each period, every device heartbeats once, spread evenly.
  const slots = Math.max(1, Math.round(config.heartbeatMs / TICK_MS));
  let tick = 0;
  heartbeats.timer = setInterval(() => {
    const slot = tick++ % slots;
    for (let i = slot; i < devices.length; i += slots) void devices[i].heartbeat();
  }, TICK_MS);
}

main().catch((err) => {
  emit({ t: "fatal", message: err instanceof Error ? err.stack ?? err.message : String(err) });
  Deno.exit(1);
});
