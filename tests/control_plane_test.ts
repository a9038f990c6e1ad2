/**
 * The control plane and the agent as UDP peers, in process: datagrams that
 * are garbage, come from an unexpected sender, name an unknown election or go
 * the wrong way are dropped and counted, and nothing crashes; an agent answers
 * an Announce from its control plane with a Bid; a restarted control plane
 * finds its state in its store, and runs on any StateStore; a failed update
 * is offered again unless the agent says it is poisoned. Devices and the
 * control plane sign their datagrams (tests/support/identity.ts).
 */

import assert from "node:assert/strict";
import { Agent } from "../agent/agent.ts";
import type { ControlMessage } from "../transfer/control_messages.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { ControlSocket } from "../transfer/control_socket.ts";
import { withTempDir } from "./helpers.ts";
import { registerDevice } from "./support/devices.ts";
import {
  type DeviceKeys,
  deviceSocket,
  enrollDevice,
  fakeControlPlane,
  pinControlPlane,
} from "./support/identity.ts";
import { MemoryStore } from "./support/memory_store.ts";

const D = (n: number) => new Uint8Array(32).fill(n);

async function until(predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function untilAsync(predicate: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function heartbeat(nodeId: string, host: string, udpPort: number): ControlMessage {
  return {
    type: "heartbeat",
    nodeId,
    region: "eu",
    host,
    udpPort,
    p2pPort: 7411,
    held: [],
    active: [],
    served: 0,
    startedAt: 1,
  };
}

Deno.test({
  name: "the control plane drops and counts bad datagrams, and keeps working",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
    });
    const to = { hostname: "127.0.0.1", port: cp.socket.port };
    const keys: DeviceKeys = new Map();
    await enrollDevice(cp, "eu-0", "eu", keys);
    const agent = deviceSocket("127.0.0.2", keys);
    // Holds eu-0's key (it passes the signature check): its address gives it away.
    const impostor = deviceSocket("127.0.0.3", keys);
    const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.2", port: 0 });
    try {
      // Garbage, including cbor-x's slow case.
      for (const bytes of [[0x9f], [1, 2, 3], new Array(1300).fill(0x80)]) {
        await raw.send(new Uint8Array(bytes), { transport: "udp", ...to });
      }
      await until(() => cp.socket.counters.malformed === 3, "3 malformed datagrams");
      // A heartbeat claiming an address it was not sent from.
      await agent.send(heartbeat("eu-0", "127.0.0.9", agent.port), to);
      await until(() => cp.drops.unexpectedSender === 1, "the spoofed heartbeat");
      assert.equal(cp.agents.size, 0);
      // A real heartbeat registers the agent.
      await agent.send(heartbeat("eu-0", "127.0.0.2", agent.port), to);
      await until(() => cp.agents.has("eu-0"), "registration");
      // A bid for an election that does not exist.
      await agent.send({ type: "bid", manifestId: "r9.b9.e9", nodeId: "eu-0" }, to);
      await until(() => cp.drops.unknownElection === 1, "the unknown election");
      // A bid in eu-0's name from another address.
      await impostor.send({ type: "bid", manifestId: "r9.b9.e9", nodeId: "eu-0" }, to);
      await until(() => cp.drops.unexpectedSender === 2, "the impostor's bid");
      // A message only the control plane sends.
      await agent.send({ type: "leaderAck", manifestId: "r9.b9.e9" }, to);
      await until(() => cp.drops.wrongDirection === 1, "the wrong-direction message");
      const status = await cp.status();
      assert.equal(status.agents.length, 1);
      assert.equal(status.drops.malformed, 3);
    } finally {
      raw.close();
      agent.close();
      impostor.close();
      await cp.close();
    }
  });
});

Deno.test({
  name: "an agent bids on its control plane's Announce and ignores other senders and elections",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const { key: cpKey, socket: cpSocket } = await fakeControlPlane("127.0.0.1");
    await pinControlPlane(dir, "eu-0", cpKey);
    const stranger = ControlSocket.open("127.0.0.5", 0);
    const received: ControlMessage[] = [];
    const receiving = (async () => {
      for await (const { message } of cpSocket.messages()) received.push(message);
    })();
    const agent = await Agent.start({
      nodeId: "eu-0",
      trust: { kind: "insecure" },
      region: "eu",
      bind: "127.0.0.4",
      dataDir: dir,
      controlPlane: { hostname: "127.0.0.1", port: cpSocket.port },
      udpPort: 0,
      p2pPort: 0,
      heartbeatMs: 60_000,
    });
    const to = { hostname: "127.0.0.4", port: agent.socket.port };
    try {
      await until(() => received.some((m) => m.type === "heartbeat"), "the first heartbeat");
      const announce: ControlMessage = {
        type: "announce",
        manifestId: "r1.b1.e1",
        model: "resnet",
        version: "v1",
        targetDigest: D(2),
        targetSize: 10,
        baseDigest: null,
        blobDigest: D(2),
        blobSize: 10,
        cpHost: "127.0.0.1",
        cpP2pPort: 9,
        releaseDigest: null,
        delegationDigest: null,
      };
      await stranger.send(announce, to);
      await until(() => agent.drops.unexpectedSender === 1, "the stranger's announce");
      await cpSocket.send({ type: "leaderAck", manifestId: "r7.b1.e1" }, to, "eu-0");
      await until(() => agent.drops.unknownElection === 1, "the unknown election");
      await cpSocket.send(announce, to, "eu-0");
      await until(() => received.some((m) => m.type === "bid"), "a bid");
      const bid = received.find((m) => m.type === "bid")!;
      assert.deepEqual(bid, { type: "bid", manifestId: "r1.b1.e1", nodeId: "eu-0" });
      // An announce repeated (our bid was lost) gets the bid again.
      await cpSocket.send(announce, to, "eu-0");
      await until(() => received.filter((m) => m.type === "bid").length === 2, "a second bid");
    } finally {
      await agent.close();
      stranger.close();
      cpSocket.close();
      await receiving;
    }
  });
});

Deno.test({
  name:
    "a restarted control plane finds its versions, rollouts and agents in its store, one boot later",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const options = { bind: "127.0.0.1", dataDir: dir, udpPort: 0, p2pPort: 0 };
    const first = await ControlPlane.start(options);
    const keys: DeviceKeys = new Map();
    await enrollDevice(first, "eu-0", "eu", keys);
    const agent = deviceSocket("127.0.0.2", keys);
    try {
      await first.publish("resnet", "v1", new Blob([D(7)]).stream());
      await agent.send(heartbeat("eu-0", "127.0.0.2", agent.port), {
        hostname: "127.0.0.1",
        port: first.socket.port,
      });
      await until(() => first.agents.has("eu-0"), "registration");
      await first.rollout("resnet", "v1", "eu");
    } finally {
      agent.close();
      await first.close();
    }
    const second = await ControlPlane.start(options);
    try {
      const status = await second.status();
      assert.equal(status.boot, first.boot + 1);
      assert.deepEqual(status.versions.map((v) => [v.model, v.version, v.size]), [
        ["resnet", "v1", 32],
      ]);
      assert.deepEqual(status.rollouts.map((r) => [r.id, r.version, r.region, r.state]), [
        [1, "v1", "eu", "running"],
      ]);
      assert.deepEqual(status.agents.map((a) => a.nodeId), ["eu-0"]);
    } finally {
      await second.close();
    }
  });
});

Deno.test({
  name: "the control plane runs on any state store: on one in memory it writes no SQLite file",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const stateStore = new MemoryStore();
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
      stateStore,
    });
    try {
      await cp.publish("resnet", "v1", new Blob([D(7)]).stream());
      registerDevice(cp, "eu-0"); // a rollout needs a device in its selection
      await cp.rollout("resnet", "v1", null);
      await cp.control(1, "pause");
      assert.deepEqual((await stateStore.versions()).map((v) => v.version), ["v1"]);
      assert.deepEqual((await stateStore.rollouts()).map((r) => [r.id, r.state, r.reason]), [
        [1, "paused", "paused by the operator"],
      ]);
      const status = await cp.status();
      assert.equal(status.boot, 1);
      assert.deepEqual(status.rollouts.map((r) => r.state), ["paused"]);
    } finally {
      await cp.close();
    }
    assert.equal(stateStore.closed, true, "closed with the control plane");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    // Its blobs and its key (controlplane.key, .pub: devices pin it), no database.
    assert.deepEqual(names.sort(), ["blobs", "controlplane.key", "controlplane.pub"]);
  });
});

Deno.test({
  name:
    "a failed update is offered again after the retry delay; a poisoned one is not (the agent's Status detail says poisoned)",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  for (const poisoned of [false, true]) {
    await withTempDir(async (dir) => {
      const cp = await ControlPlane.start({
        bind: "127.0.0.1",
        dataDir: dir,
        udpPort: 0,
        p2pPort: 0,
        // Only the test's own ticks, at the times it names.
        tickMs: 3_600_000,
        agentTimeoutMs: 3_600_000,
        election: { retryMs: 100 },
      });
      const to = { hostname: "127.0.0.1", port: cp.socket.port };
      const keys: DeviceKeys = new Map();
      await enrollDevice(cp, "eu-0", "eu", keys);
      const agent = deviceSocket("127.0.0.2", keys);
      const received: ControlMessage[] = [];
      const receiving = (async () => {
        for await (const { message } of agent.messages()) received.push(message);
      })();
      const seen = (type: ControlMessage["type"]) => received.filter((m) => m.type === type).length;
      try {
        await agent.send(heartbeat("eu-0", "127.0.0.2", agent.port), to);
        await until(() => cp.agents.has("eu-0"), "registration");
        await cp.publish("resnet", "v1", new Blob([D(7)]).stream());
        const rollout = await cp.rollout("resnet", "v1", null, {
          strategy: "all",
          canary: 1,
          canaryPercent: false,
          batch: 1,
          maxFailures: 1, // never halts: the failure is retried or not, nothing else
          rollback: false,
        });
        cp.tick(Date.now());
        await until(() => seen("announce") === 1, "the announce");
        const announce = received.find((m) => m.type === "announce")!;
        const manifestId = announce.manifestId;
        await agent.send({ type: "bid", manifestId, nodeId: "eu-0" }, to);
        await until(() => seen("leaderAck") === 1, "the leader ack");
        await agent.send({ type: "leaderReady", manifestId, nodeId: "eu-0", p2pPort: 7411 }, to);
        await until(() => seen("electionClosed") === 1, "the election closed");
        const detail = poisoned
          ? "poisoned: failed 3 times in this rollout"
          : "health check failed";
        await agent.send(
          { type: "status", manifestId, nodeId: "eu-0", state: "failed", detail },
          to,
        );
        const progress = async () =>
          (await cp.status()).rollouts[0].agents.find((a) => a.nodeId === "eu-0");
        await untilAsync(async () => (await progress())?.state === "failed", "the failure");
        assert.equal((await progress())?.detail, detail);
        assert.equal(received.length, 3, "announce, leaderAck, electionClosed so far");
        // Well past the retry delay (4 × retryMs).
        cp.tick(Date.now() + 60_000);
        // A barrier: a Bid in a closed election is answered with ElectionClosed, after
        // whatever that tick sent.
        await agent.send({ type: "bid", manifestId, nodeId: "eu-0" }, to);
        const expected = poisoned
          ? ["electionClosed"] // the barrier's answer only: nothing is offered again
          : ["announce", "electionClosed", "electionClosed"]; // offered again, then the answer
        await until(() => received.length >= 3 + expected.length, "the barrier's answer");
        assert.deepEqual(received.slice(3).map((m) => m.type), expected);
        assert.equal((await cp.status()).rollouts[0].state, "running", `rollout ${rollout.id}`);
      } finally {
        agent.close();
        await receiving;
        await cp.close();
      }
    });
  }
});
