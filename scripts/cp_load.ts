/**
 * The load process of scripts/bench_controlplane.ts (not meant to be run by
 * hand): simulates a share of a fleet's devices against a real control plane.
 * Each device has its own Ed25519 key, enrols with `POST /v1/enroll` (one
 * token with many uses), binds its own UDP socket on its own loopback address
 * and sends an authenticated Heartbeat every `intervalMs`, spread evenly over
 * the interval. It answers elections the shortest way the protocol allows:
 * Announce → Bid; LeaderAck → Status "downloading" then LeaderReady (it
 * downloads nothing), repeated every second until ElectionClosed answers it,
 * then Status "active"; ElectionClosed → ClosedAck then Status "active". From then on its heartbeats report the target as running.
 * It does not verify what the control plane sends (the bench measures the
 * control plane, not the device).
 *
 * Input: one JSON argument (`LoadConfig`). Output on stdout, one JSON line
 * each: `{"ready":n}` once every device is enrolled and bound, then every
 * second `{"stats":{...}}`. Stops when stdin closes or on SIGTERM.
 *
 * @module
 */

import { ControlSocket } from "../transfer/control_socket.ts";
import type { ControlMessage } from "../transfer/control_messages.ts";
import { generateKey, type SigningKey, toBase64Url } from "../release/keys.ts";

/** What the bench hands each load process. */
export interface LoadConfig {
  /** The control plane's address and ports. */
  readonly cpHost: string;
  readonly cpUdpPort: number;
  readonly apiUrl: string;
  /** An enrolment token with enough uses for every device. */
  readonly enrollToken: string;
  /** This process's devices: indexes [first, first + count) of the fleet. */
  readonly first: number;
  readonly count: number;
  readonly regions: number;
  readonly intervalMs: number;
  /** Enrolment requests in flight at once. */
  readonly enrollConcurrency: number;
}

/** Counters a load process reports every second. */
export interface LoadStats {
  readonly heartbeats: number;
  readonly received: number;
  readonly sent: number;
  /** Largest delay of a heartbeat behind its schedule in the last second, ms. */
  readonly lagMaxMs: number;
  readonly done: number;
}

/** The loopback address of device `i` (127.180.0.1 onwards: no test uses 127.180-189.x). */
export function deviceAddress(i: number): string {
  const hostPart = i % 250;
  const third = Math.floor(i / 250) % 250;
  const second = 180 + Math.floor(i / 62_500);
  return `127.${second}.${third}.${hostPart + 1}`;
}

/** Device `i`'s node id and region. */
export function deviceName(i: number, regions: number): { nodeId: string; region: string } {
  return { nodeId: `d${String(i).padStart(5, "0")}`, region: `r${i % regions}` };
}

interface Device {
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
  readonly key: SigningKey;
  socket?: ControlSocket;
  active: Map<string, Uint8Array>;
  nextAt: number;
  startedAt: number;
}

async function main(): Promise<void> {
  const config = JSON.parse(Deno.args[0]) as LoadConfig;
  const devices: Device[] = [];
  for (let i = config.first; i < config.first + config.count; i++) {
    const { key } = await generateKey("device");
    devices.push({
      ...deviceName(i, config.regions),
      host: deviceAddress(i),
      key,
      active: new Map(),
      nextAt: 0,
      startedAt: Date.now(),
    });
  }
  let next = 0;
  const enrolOne = async (d: Device) => {
    for (let attempt = 0;; attempt++) {
      const r = await fetch(`${config.apiUrl}/v1/enroll`, {
        method: "POST",
        body: JSON.stringify({
          nodeId: d.nodeId,
          region: d.region,
          publicKey: toBase64Url(d.key.publicKey),
          token: config.enrollToken,
        }),
      }).catch((err) => err as Error);
      if (!(r instanceof Error)) {
        const text = await r.text();
        if (r.ok) return;
        if (attempt >= 5) throw new Error(`enrol ${d.nodeId}: HTTP ${r.status} ${text}`);
      } else if (attempt >= 5) throw r;
      await new Promise((res) => setTimeout(res, 200 * (attempt + 1)));
    }
  };
  await Promise.all(
    Array.from({ length: config.enrollConcurrency }, async () => {
      while (next < devices.length) await enrolOne(devices[next++]);
    }),
  );
  const cp = { hostname: config.cpHost, port: config.cpUdpPort };
  let received = 0;
  let sent = 0;
  let heartbeats = 0;
  let lagMaxMs = 0;
  let done = 0;
  /** Each election's model and target, from its Announce (a few per rollout and region). */
  const targets = new Map<string, { model: string; digest: Uint8Array }>();
  const send = (d: Device, message: ControlMessage) => {
    sent++;
    void d.socket!.send(message, cp);
  };
  const becomeActive = (d: Device, manifestId: string) => {
    const target = targets.get(manifestId);
    if (!target) return;
    send(d, { type: "status", manifestId, nodeId: d.nodeId, state: "active", detail: "" });
    if (d.active.get(target.model) !== target.digest) done++;
    d.active.set(target.model, target.digest);
  };
  /** Leaders by election, until their LeaderReady is answered (as a real leader, they repeat it). */
  const leading = new Map<string, Device>();
  const sendReady = (d: Device, manifestId: string) =>
    send(d, { type: "leaderReady", manifestId, nodeId: d.nodeId, p2pPort: 9 });
  const onMessage = (d: Device, message: ControlMessage) => {
    received++;
    switch (message.type) {
      case "announce":
        if (targets.size > 10_000) targets.clear();
        targets.set(message.manifestId, { model: message.model, digest: message.targetDigest });
        send(d, { type: "bid", manifestId: message.manifestId, nodeId: d.nodeId });
        return;
      case "leaderAck":
        send(d, {
          type: "status",
          manifestId: message.manifestId,
          nodeId: d.nodeId,
          state: "downloading",
          detail: "leader",
        });
        leading.set(message.manifestId, d);
        sendReady(d, message.manifestId);
        return;
      case "electionClosed":
        // The leader hears it in answer to LeaderReady: it stops repeating it.
        if (leading.get(message.manifestId) === d) leading.delete(message.manifestId);
        else send(d, { type: "closedAck", manifestId: message.manifestId, nodeId: d.nodeId });
        becomeActive(d, message.manifestId);
        return;
    }
  };
  const start = Date.now();
  devices.forEach((d, k) => {
    d.socket = ControlSocket.open(d.host, 0, { signer: () => d.key.privateKey });
    d.nextAt = start + Math.floor((k / devices.length) * config.intervalMs);
    void (async () => {
      for await (const { message } of d.socket!.messages()) onMessage(d, message);
    })();
  });
  const out = (value: unknown) => console.log(JSON.stringify(value));
  out({ ready: devices.length });
  let stopped = false;
  const heartbeat = (d: Device) => {
    heartbeats++;
    send(d, {
      type: "heartbeat",
      nodeId: d.nodeId,
      region: d.region,
      host: d.host,
      udpPort: d.socket!.port,
      p2pPort: 9,
      held: [],
      active: [...d.active],
      served: 0,
      startedAt: d.startedAt,
    });
  };
  // Devices in schedule order: a cursor walks them round after round.
  let cursor = 0;
  const pump = setInterval(() => {
    const now = Date.now();
    for (let n = 0; n < devices.length && devices[cursor].nextAt <= now; n++) {
      const d = devices[cursor];
      lagMaxMs = Math.max(lagMaxMs, now - d.nextAt);
      heartbeat(d);
      d.nextAt += config.intervalMs;
      cursor = (cursor + 1) % devices.length;
    }
  }, 20);
  const repeatReady = setInterval(() => {
    for (const [manifestId, d] of leading) sendReady(d, manifestId);
  }, 1000);
  const report = setInterval(() => {
    const stats: LoadStats = { heartbeats, received, sent, lagMaxMs, done };
    out({ stats });
    lagMaxMs = 0;
  }, 1000);
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(pump);
    clearInterval(report);
    clearInterval(repeatReady);
    for (const d of devices) d.socket?.close();
  };
  Deno.addSignalListener("SIGTERM", stop);
  // The bench closes our stdin when it is done (or dies).
  for await (const _ of Deno.stdin.readable) { /* nothing comes */ }
  stop();
  Deno.exit(0);
}

if (import.meta.main) await main();
