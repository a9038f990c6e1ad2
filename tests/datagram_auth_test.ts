/**
 * Authenticated control traffic (issue 14): a datagram counts only when its
 * sender is enrolled (devices) or the control plane the agent pinned, its
 * Ed25519 signature is that sender's, and its sequence number is new and
 * recent. A spoofed heartbeat of a device that does not exist, a datagram
 * signed with another device's key, a replayed genuine datagram and a stale
 * one are dropped, counted by reason, and create or change nothing — and
 * 10,000 unauthenticated heartbeats with random ids from many loopback
 * addresses leave no row and the control plane's peak memory flat.
 */

import assert from "node:assert/strict";
import { Agent } from "../agent/agent.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import type { StatusReport } from "../controlplane/api_types.ts";
import { generateKey, type SigningKey } from "../release/keys.ts";
import {
  CONTROL_PLANE_RECEIVER,
  type ControlMessage,
  openControlMessage,
  signControlMessage,
} from "../transfer/control_messages.ts";
import { DatagramAuthenticator } from "../transfer/datagram_auth.ts";
import { ControlSocket } from "../transfer/control_socket.ts";
import { Fleet, PORTS } from "../testkit/fleet_harness.ts";
import { withTempDir } from "./helpers.ts";
import {
  type DeviceKeys,
  deviceSocket,
  enrollDevice,
  enrollDeviceOver,
  fakeControlPlane,
  pinControlPlane,
} from "./support/identity.ts";

async function until(predicate: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function heartbeat(nodeId: string, host: string, served = 0): ControlMessage {
  return {
    type: "heartbeat",
    nodeId,
    region: "eu",
    host,
    udpPort: 7410,
    p2pPort: 7411,
    held: [],
    active: [],
    served,
    startedAt: 1,
  };
}

/** An in-process control plane on 127.0.0.1 (ports the OS picks) while `fn` runs. */
async function withControlPlane(
  fn: (cp: ControlPlane, to: { hostname: string; port: number }) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
    });
    try {
      await fn(cp, { hostname: "127.0.0.1", port: cp.socket.port });
    } finally {
      await cp.close();
    }
  });
}

Deno.test({
  name:
    "a spoofed heartbeat of a device that does not exist creates no row and is counted as from an unknown sender, signed or not",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withControlPlane(async (cp, to) => {
    const unsigned = ControlSocket.open("127.0.0.2", 0);
    const { key: stranger } = await generateKey("device");
    const signed = deviceSocket("127.0.0.2", new Map([["ghost-1", stranger]]));
    try {
      await unsigned.send(heartbeat("ghost-0", "127.0.0.2"), to);
      await signed.send(heartbeat("ghost-1", "127.0.0.2"), to);
      await until(() => cp.drops.unknownSender === 2, "both spoofed heartbeats counted");
      assert.equal(cp.agents.size, 0);
      assert.deepEqual(await cp.stateStore.agents(), []);
      assert.equal((await cp.status()).drops.unknownSender, 2);
    } finally {
      unsigned.close();
      signed.close();
    }
  });
});

Deno.test({
  name:
    "a datagram in an enrolled device's name signed with another device's key is dropped as a bad signature",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withControlPlane(async (cp, to) => {
    const keys: DeviceKeys = new Map();
    await enrollDevice(cp, "eu-0", "eu", keys);
    const other = await enrollDevice(cp, "eu-1", "eu");
    // eu-1 signs a heartbeat that says it is eu-0.
    const forger = deviceSocket("127.0.0.2", new Map([["eu-0", other]]));
    const genuine = deviceSocket("127.0.0.2", keys);
    try {
      await forger.send(heartbeat("eu-0", "127.0.0.2"), to);
      await until(() => cp.drops.badSignature === 1, "the forged heartbeat");
      assert.equal(cp.agents.size, 0);
      await genuine.send(heartbeat("eu-0", "127.0.0.2"), to);
      await until(() => cp.agents.has("eu-0"), "eu-0's own heartbeat");
      assert.equal(cp.drops.badSignature, 1);
    } finally {
      forger.close();
      genuine.close();
    }
  });
});

Deno.test({
  name:
    "a replayed genuine datagram is dropped and counted as replayed, and a stale one as stale: nothing changes",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withControlPlane(async (cp, to) => {
    const key = await enrollDevice(cp, "eu-0");
    const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.2", port: 0 });
    const send = (bytes: Uint8Array) => raw.send(bytes, { transport: "udp", ...to });
    try {
      const first = Date.now() * 1000;
      const captured = await signControlMessage(
        heartbeat("eu-0", "127.0.0.2", 1),
        first,
        key.privateKey,
        CONTROL_PLANE_RECEIVER,
      );
      await send(captured);
      await until(() => cp.agents.get("eu-0")?.served === 1, "the genuine heartbeat");
      const before = cp.agents.get("eu-0");
      // Its next heartbeat, then the captured one again.
      await send(
        await signControlMessage(
          heartbeat("eu-0", "127.0.0.2", 2),
          first + 1,
          key.privateKey,
          CONTROL_PLANE_RECEIVER,
        ),
      );
      await until(() => cp.agents.get("eu-0")?.served === 2, "the next heartbeat");
      const seen = cp.agents.get("eu-0");
      await send(captured);
      await until(() => cp.drops.replayed === 1, "the replay counted");
      assert.deepEqual(cp.agents.get("eu-0"), seen, "the replay changed nothing");
      assert.notEqual(before, undefined);
      // Signed now, but with a sequence number of two minutes ago (its time part).
      const stale = await signControlMessage(
        heartbeat("eu-0", "127.0.0.2", 3),
        (Date.now() - 120_000) * 1000,
        key.privateKey,
        CONTROL_PLANE_RECEIVER,
      );
      await send(stale);
      await until(() => cp.drops.stale === 1, "the stale heartbeat counted");
      assert.equal(cp.agents.get("eu-0")?.served, 2);
      assert.equal(cp.drops.badSignature, 0);
    } finally {
      raw.close();
    }
  });
});

Deno.test("the verifier drops a control-plane datagram signed for another agent as badSignature, and its sequence number counts for nothing", async () => {
  const { key: cp } = await generateKey("controlplane");
  const message: ControlMessage = { type: "leaderAck", manifestId: "r1.b1.e1" };
  const seq = Date.now() * 1000;
  const forX = openControlMessage(await signControlMessage(message, seq, cp.privateKey, "eu-0"));
  const atY = new DatagramAuthenticator("eu-1");
  assert.equal(await atY.accept("controlplane", cp.publicKey, forX, Date.now()), false);
  assert.deepEqual(atY.drops, { unknownSender: 0, badSignature: 1, replayed: 0, stale: 0 });
  // Y's own datagram, signed before the one for X, is still accepted.
  const forY = openControlMessage(
    await signControlMessage(message, seq - 1, cp.privateKey, "eu-1"),
  );
  assert.equal(await atY.accept("controlplane", cp.publicKey, forY, Date.now()), true);
  const atX = new DatagramAuthenticator("eu-0");
  assert.equal(await atX.accept("controlplane", cp.publicKey, forX, Date.now()), true);
  // Nor does a device's datagram to the control plane verify at an agent.
  const bid = openControlMessage(
    await signControlMessage(
      { type: "bid", manifestId: "r1.b1.e1", nodeId: "eu-0" },
      seq + 1,
      cp.privateKey,
      CONTROL_PLANE_RECEIVER,
    ),
  );
  assert.equal(await atX.accept("controlplane", cp.publicKey, bid, Date.now()), false);
  assert.equal(atX.drops.badSignature, 1);
});

Deno.test({
  name:
    "a genuine control-plane leaderAck for agent X replayed to agent Y is dropped by Y as badSignature and changes nothing; X handles it",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const cp = await fakeControlPlane("127.0.0.1");
    await pinControlPlane(`${dir}/x`, "eu-0", cp.key);
    await pinControlPlane(`${dir}/y`, "eu-1", cp.key);
    const receiving = (async () => {
      for await (const _ of cp.socket.messages()) { /* heartbeats */ }
    })();
    const start = (nodeId: string, bind: string, dataDir: string) =>
      Agent.start({
        nodeId,
        trust: { kind: "insecure" },
        region: "eu",
        bind,
        dataDir,
        controlPlane: { hostname: "127.0.0.1", port: cp.socket.port },
        udpPort: 0,
        p2pPort: 0,
        heartbeatMs: 60_000,
      });
    const x = await start("eu-0", "127.0.0.4", `${dir}/x`);
    const y = await start("eu-1", "127.0.0.5", `${dir}/y`);
    const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      const ack: ControlMessage = { type: "leaderAck", manifestId: "r1.b1.e1" };
      const forX = await signControlMessage(ack, Date.now() * 1000, cp.key.privateKey, "eu-0");
      const yBefore = { ...y.drops };
      await raw.send(forX, { transport: "udp", hostname: "127.0.0.5", port: y.socket.port });
      await until(() => y.drops.badSignature === 1, "Y drops X's datagram");
      assert.deepEqual(y.drops, { ...yBefore, badSignature: 1 }, "only the bad signature counted");
      // Y still hears what is signed for it, even with a lower sequence number.
      await cp.socket.send(ack, { hostname: "127.0.0.5", port: y.socket.port }, "eu-1");
      await until(() => y.drops.unknownElection === yBefore.unknownElection + 1, "Y's own");
      assert.equal(y.drops.replayed, 0);
      // X handles it: an election it does not know.
      await raw.send(forX, { transport: "udp", hostname: "127.0.0.4", port: x.socket.port });
      await until(() => x.drops.unknownElection === 1, "X handles its datagram");
      assert.equal(x.drops.badSignature, 0);
    } finally {
      raw.close();
      await x.close();
      await y.close();
      cp.socket.close();
      await receiving;
    }
  });
});

Deno.test({
  name:
    "an agent hears only the control plane whose key it pinned: another key's Announce is a bad signature, a replayed one is replayed",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const cp = await fakeControlPlane("127.0.0.1");
    await pinControlPlane(dir, "eu-0", cp.key);
    const impostor = await fakeControlPlane("127.0.0.1");
    const received: ControlMessage[] = [];
    const receiving = (async () => {
      for await (const { message } of cp.socket.messages()) received.push(message);
    })();
    const agent = await Agent.start({
      nodeId: "eu-0",
      trust: { kind: "insecure" },
      region: "eu",
      bind: "127.0.0.4",
      dataDir: dir,
      controlPlane: { hostname: "127.0.0.1", port: cp.socket.port },
      udpPort: 0,
      p2pPort: 0,
      heartbeatMs: 60_000,
    });
    const to = { hostname: "127.0.0.4", port: agent.socket.port };
    const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      const announce: ControlMessage = { type: "leaderAck", manifestId: "r1.b1.e1" };
      await impostor.socket.send(announce, to, "eu-0");
      await until(() => agent.drops.badSignature === 1, "the impostor's datagram");
      const captured = await signControlMessage(
        announce,
        Date.now() * 1000,
        cp.key.privateKey,
        "eu-0",
      );
      await raw.send(captured, { transport: "udp", ...to });
      await until(() => agent.drops.unknownElection === 1, "the genuine datagram handled");
      await raw.send(captured, { transport: "udp", ...to });
      await until(() => agent.drops.replayed === 1, "the replay");
      assert.equal(agent.drops.unknownElection, 1, "the replay was not handled");
    } finally {
      raw.close();
      await agent.close();
      impostor.socket.close();
      cp.socket.close();
      await receiving;
    }
  });
});

/** The peak resident memory (VmHWM) of process `pid`, in bytes. */
async function peakMemory(pid: number): Promise<number> {
  // Read by `cat`: Deno asks for --allow-all to read another process's /proc files.
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdout: "piped" })
    .output();
  const kb = /VmHWM:\s+(\d+) kB/.exec(new TextDecoder().decode(out.stdout));
  if (!kb) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(kb[1]) * 1024;
}

Deno.test({
  name:
    "10,000 unauthenticated heartbeats with random ids from many loopback addresses create no row, are counted, and leave the control plane's peak memory flat",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const cpHost = "127.0.91.1";
    const fleet = await Fleet.start({ dir, cpHost, agents: [] });
    const to = { hostname: cpHost, port: PORTS.cpUdp };
    const senders: ControlSocket[] = [];
    const flooders = 100;
    const perSender = 100;
    try {
      const status = () => fleet.api<StatusReport>("GET", "/v1/status");
      // An enrolled device's heartbeats are the barrier: when one is seen, all sent before it were read.
      const barrierHost = "127.0.91.2";
      const barrierKey: SigningKey = await enrollDeviceOver(fleet.url, fleet.token!, "barrier");
      const barrier = deviceSocket(barrierHost, new Map([["barrier", barrierKey]]));
      senders.push(barrier);
      let round = 0;
      const pass = async () => {
        round++;
        await barrier.send(heartbeat("barrier", barrierHost, round), to);
        await until(
          async () =>
            (await status()).agents.some((a) => a.nodeId === "barrier" && a.served === round),
          `barrier ${round}`,
        );
      };
      await pass();
      const before = await peakMemory(fleet.cp!.child.pid);
      for (let i = 0; i < flooders; i++) {
        const host = `127.92.${Math.floor(i / 200)}.${(i % 200) + 1}`;
        // Half send unsigned datagrams, half sign them with keys nobody enrolled.
        const { key } = await generateKey("device");
        senders.push(
          i % 2 === 0 ? ControlSocket.open(host, 0) : ControlSocket.open(host, 0, {
            signer: () => key.privateKey,
          }),
        );
      }
      for (let i = 0; i < flooders; i++) {
        const socket = senders[i + 1];
        for (let j = 0; j < perSender; j++) {
          const id = `dev-${crypto.randomUUID()}`;
          await socket.send(heartbeat(id, socket.hostname), to);
        }
        await pass();
      }
      const after = await status();
      assert.equal(after.drops.unknownSender, flooders * perSender);
      assert.deepEqual(after.agents.map((a) => a.nodeId), ["barrier"]);
      const grown = (await peakMemory(fleet.cp!.child.pid)) - before;
      assert.ok(grown < 30 * 1024 * 1024, `peak memory grew by ${grown} bytes`);
    } finally {
      for (const s of senders) s.close();
      await fleet.stop();
    }
  });
});
