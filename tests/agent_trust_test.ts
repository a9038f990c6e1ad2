/**
 * The device side of signed releases (agent --trust-root), in process: an
 * Agent and a fake control plane (a ControlSocket, and a BlobServer over a
 * BlobStore holding signed documents made with release/documents.ts). For
 * each reason to refuse, the announce is answered with Status failed
 * "refused: …", no Bid, nothing downloaded, the refusal in the model's
 * state.json and the active model byte-identical; a repeat of a refused
 * announce gets the same answer without another fetch; a valid signed release
 * is bid on. A damaged trust.json stops the agent; the command line needs
 * --trust-root or --insecure.
 */

import assert from "node:assert/strict";
import { fakeControlPlane, pinControlPlane } from "./support/identity.ts";
import { Agent, type AgentHooks } from "../agent/agent.ts";
import { readState } from "../agent/lifecycle_state.ts";
import { currentPath, switchTo } from "../agent/model_slots.ts";
import { writeTrustMemory } from "../agent/trust_file.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { IoError } from "../kernel/errors.ts";
import {
  type Delegation,
  type Release,
  signDelegation,
  signRelease,
} from "../release/documents.ts";
import { generateKey, publicKeyFileText, type SigningKey } from "../release/keys.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import type { Announce, ControlMessage, Status } from "../transfer/control_messages.ts";
import { ControlSocket } from "../transfer/control_socket.ts";
import { poolboyArgs, poolboyWith } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";

/** This file's addresses: the fake control plane and the agent. */
const CP_HOST = "127.0.13.1";
const AGENT_HOST = "127.0.13.2";
const DAY = 24 * 3600 * 1000;

const V1 = randomBytes(4096, 1301);
const V2 = randomBytes(4096, 1302);

async function until(predicate: () => boolean, what: string): Promise<void> {
  // A deadline for a test on a loaded machine, not a claim about speed.
  const deadline = Date.now() + 30_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The keys of the test: the pinned root, its release key, and keys outside the delegation. */
interface Keys {
  readonly root: SigningKey;
  readonly release: SigningKey;
  readonly otherRoot: SigningKey;
  readonly rogueRelease: SigningKey;
}

async function makeKeys(): Promise<Keys> {
  return {
    root: (await generateKey("root")).key,
    release: (await generateKey("release")).key,
    otherRoot: (await generateKey("root")).key,
    rogueRelease: (await generateKey("release")).key,
  };
}

function delegation(keys: Keys, fields: Partial<Delegation> = {}): Delegation {
  return {
    type: "poolboy.delegation",
    spec: 1,
    version: 2,
    expires: Date.now() + 365 * DAY,
    rootKeyId: keys.root.keyId,
    releaseKeys: [{ keyId: keys.release.keyId, publicKey: keys.release.publicKey }],
    ...fields,
  };
}

function release(fields: Partial<Release> = {}): Release {
  return {
    type: "poolboy.release",
    spec: 1,
    model: "resnet",
    version: "v2",
    target: { blake3: toHex(blake3(V2)), size: V2.length },
    counter: 11,
    expires: Date.now() + 90 * DAY,
    deviceClass: "jetson",
    ...fields,
  };
}

/** A control plane as far as the agent can tell: a UDP socket and a blob server. */
class FakeControlPlane {
  readonly received: ControlMessage[] = [];
  #receiving: Promise<void> | undefined;
  #n = 0;

  private constructor(
    readonly dir: string,
    readonly socket: ControlSocket,
    readonly store: BlobStore,
    readonly blobs: BlobServer,
    /** Its key, which the agent pinned at enrolment: its datagrams are signed with it. */
    readonly key: SigningKey,
  ) {}

  static async start(dir: string): Promise<FakeControlPlane> {
    const store = await BlobStore.open(`${dir}/blobs`);
    // Blob protocol version 2, as agents speak it; this fake serves anyone.
    const blobs = BlobServer.start({
      hostname: CP_HOST,
      port: 0,
      store,
      authorize: () => Promise.resolve(true),
      // On loopback the agent's every connection comes from 127.0.0.1 (as in the fleet harness).
      maxConnectionsPerAddress: 64,
    });
    const { key, socket } = await fakeControlPlane(CP_HOST);
    const cp = new FakeControlPlane(dir, socket, store, blobs, key);
    cp.#receiving = (async () => {
      for await (const { message } of socket.messages()) cp.received.push(message);
    })();
    return cp;
  }

  /** Puts bytes in the blob store; their digest. */
  async put(bytes: Uint8Array | string): Promise<Uint8Array> {
    const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
    const path = `${this.dir}/upload-${this.#n++}`;
    await Deno.writeFile(path, data);
    return (await this.store.importFile(path)).digest;
  }

  /** An announce of resnet v2 (the full file; or `target` as `version`) naming these documents. */
  announce(
    manifestId: string,
    documents: { release: Uint8Array | null; delegation: Uint8Array | null },
    target: Uint8Array = V2,
    version = "v2",
  ): Announce {
    const digest = blake3(target);
    return {
      type: "announce",
      manifestId,
      model: "resnet",
      version,
      targetDigest: digest,
      targetSize: target.length,
      baseDigest: null,
      blobDigest: digest,
      blobSize: target.length,
      cpHost: CP_HOST,
      cpP2pPort: this.blobs.port,
      releaseDigest: documents.release,
      delegationDigest: documents.delegation,
    };
  }

  statuses(manifestId: string): Status[] {
    return this.received.filter((m): m is Status =>
      m.type === "status" && m.manifestId === manifestId
    );
  }

  bids(manifestId: string): number {
    return this.received.filter((m) => m.type === "bid" && m.manifestId === manifestId).length;
  }

  async close(): Promise<void> {
    this.socket.close();
    await this.#receiving;
    await this.blobs.close();
  }
}

/** A data directory where resnet v1 is active, and the memory of counter 10 under delegation 2. */
async function installedDevice(data: string): Promise<void> {
  const store = await BlobStore.open(`${data}/blobs`);
  await Deno.writeFile(`${data}/v1`, V1);
  const { digest } = await store.importFile(`${data}/v1`);
  await Deno.remove(`${data}/v1`);
  await Deno.mkdir(`${data}/models`, { recursive: true });
  await switchTo(data, "resnet", toHex(digest));
  await writeTrustMemory(`${data}/trust.json`, {
    delegationVersion: 2,
    counters: { resnet: { counter: 10, target: toHex(digest) } },
  });
}

async function startAgent(
  data: string,
  cp: FakeControlPlane,
  root: SigningKey,
  hooks?: AgentHooks,
): Promise<Agent> {
  await pinControlPlane(data, "jetson-0", cp.key);
  return await Agent.start({
    nodeId: "jetson-0",
    region: "eu",
    bind: AGENT_HOST,
    dataDir: data,
    controlPlane: { hostname: CP_HOST, port: cp.socket.port },
    udpPort: 0,
    p2pPort: 0,
    heartbeatMs: 60_000,
    trust: { kind: "pinned", root },
    deviceClass: "jetson",
    hooks,
  });
}

/** Blob names in the agent's store, and whether any partial download exists. */
async function agentBlobs(data: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(`${data}/blobs`)) names.push(e.name);
  for await (const e of Deno.readDir(`${data}/blobs/.partial`)) names.push(`.partial/${e.name}`);
  return names.sort();
}

Deno.test({
  name:
    "a device pinning a root key refuses each kind of bad release before downloading: Status failed 'refused: …', no bid, the refusal in state.json, the active model byte-identical",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const keys = await makeKeys();
    await Deno.mkdir(`${dir}/cp`);
    const cp = await FakeControlPlane.start(`${dir}/cp`);
    const data = `${dir}/agent`;
    await installedDevice(data);
    const agent = await startAgent(data, cp, keys.root);
    const to = { hostname: AGENT_HOST, port: agent.socket.port };
    try {
      await until(() => cp.received.some((m) => m.type === "heartbeat"), "the first heartbeat");
      const blobsBefore = await agentBlobs(data);
      const good = await cp.put(await signDelegation(delegation(keys), keys.root));
      const signed = async (r: Partial<Release>, key = keys.release) =>
        await cp.put(await signRelease(release(r), key));
      const cases: {
        kind: string;
        documents: { release: Uint8Array | null; delegation: Uint8Array | null };
        detail: RegExp;
        target?: Uint8Array;
      }[] = [
        {
          kind: "unsigned",
          documents: { release: null, delegation: null },
          detail: /^refused: unsigned release/,
        },
        {
          kind: "untrustedDelegation",
          documents: {
            release: await signed({}),
            delegation: await cp.put(
              await signDelegation(
                delegation(keys, { rootKeyId: keys.otherRoot.keyId }),
                keys.otherRoot,
              ),
            ),
          },
          detail: /^refused: delegation not signed by the pinned root key/,
        },
        {
          kind: "staleDelegation",
          documents: {
            release: await signed({}),
            delegation: await cp.put(
              await signDelegation(delegation(keys, { version: 1 }), keys.root),
            ),
          },
          detail: /^refused: delegation version 1 is older than version 2/,
        },
        {
          kind: "unknownKey",
          documents: { release: await signed({}, keys.rogueRelease), delegation: good },
          detail: /^refused: release not signed by a key of delegation version 2/,
        },
        {
          kind: "expired",
          documents: { release: await signed({ expires: Date.now() - DAY }), delegation: good },
          detail: /^refused: release resnet v2 expired at/,
        },
        {
          kind: "wrongModel",
          documents: { release: await signed({ model: "bert" }), delegation: good },
          detail: /^refused: the manifest is for model bert, the announce names resnet/,
        },
        {
          kind: "wrongTarget",
          documents: { release: await signed({}), delegation: good },
          target: randomBytes(4096, 1303),
          detail: /^refused: the announced target .* is not the signed one/,
        },
        {
          kind: "rollback",
          documents: { release: await signed({ counter: 9 }), delegation: good },
          detail: /^refused: release counter 9 of resnet is not above 10/,
        },
        {
          kind: "wrongDeviceClass",
          documents: { release: await signed({ deviceClass: "cpu" }), delegation: good },
          detail: /^refused: release for device class cpu; this device is jetson/,
        },
        {
          kind: "unavailable",
          documents: { release: blake3(new TextEncoder().encode("not held")), delegation: good },
          detail: /^refused: cannot fetch the signed documents: .*NOT_FOUND/,
        },
      ];
      for (const [i, c] of cases.entries()) {
        const manifestId = `r${i + 1}.b1.e1`;
        await cp.socket.send(cp.announce(manifestId, c.documents, c.target), to, "jetson-0");
        await until(() => cp.statuses(manifestId).length === 1, `the status of ${c.kind}`);
        const [status] = cp.statuses(manifestId);
        assert.equal(status.state, "failed", c.kind);
        assert.match(status.detail, c.detail, c.kind);
        assert.ok(status.detail.length <= 256);
        assert.equal(cp.bids(manifestId), 0, `no bid on ${c.kind}`);
        const state = await readState(data, "resnet");
        assert.equal(state.refusal?.kind, c.kind);
        assert.equal(state.refusal?.manifestId, manifestId);
        assert.equal(state.refusal?.reason, status.detail);
        assert.equal(state.step, "idle", "no update started");
        assert.deepEqual(await agentBlobs(data), blobsBefore, `nothing downloaded (${c.kind})`);
        assert.deepEqual(await Deno.readFile(currentPath(data, "resnet")), V1);
      }

      // A repeat of a refused announce gets the same answer, without fetching again.
      const served = cp.blobs.bytesServed;
      const repeated = cp.announce("r4.b1.e1", cases[3].documents);
      await cp.socket.send(repeated, to, "jetson-0");
      await until(() => cp.statuses("r4.b1.e1").length === 2, "the repeated refusal");
      assert.deepEqual(cp.statuses("r4.b1.e1")[1], cp.statuses("r4.b1.e1")[0]);
      assert.equal(cp.blobs.bytesServed, served, "no document fetched again");
      assert.equal(cp.bids("r4.b1.e1"), 0);

      // A valid signed release is bid on.
      const valid = cp.announce("r20.b1.e1", { release: await signed({}), delegation: good });
      await cp.socket.send(valid, to, "jetson-0");
      await until(() => cp.bids("r20.b1.e1") === 1, "the bid on the valid release");
      assert.deepEqual(cp.statuses("r20.b1.e1"), []);
      // Its repeat (the bid was lost) is bid on again without fetching the documents again.
      const servedBefore = cp.blobs.bytesServed;
      await cp.socket.send(valid, to, "jetson-0");
      await until(() => cp.bids("r20.b1.e1") === 2, "the second bid");
      assert.equal(cp.blobs.bytesServed, servedBefore);
      assert.deepEqual(
        await agentBlobs(data),
        blobsBefore,
        "nothing downloaded before the election",
      );
      assert.deepEqual(await Deno.readFile(currentPath(data, "resnet")), V1);
    } finally {
      await agent.close();
      await cp.close();
    }
  });
});

Deno.test({
  name:
    "a newer delegation that passes is remembered even when its release is refused: the key it dropped stays revoked on the device",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const keys = await makeKeys();
    await Deno.mkdir(`${dir}/cp`);
    const cp = await FakeControlPlane.start(`${dir}/cp`);
    const data = `${dir}/agent`;
    await installedDevice(data); // delegation version 2 (naming keys.release) already seen
    const agent = await startAgent(data, cp, keys.root);
    const to = { hostname: AGENT_HOST, port: agent.socket.port };
    try {
      // Delegation 3 drops keys.release for keys.rogueRelease (a rotation); a manifest signed by
      // the dropped key under it is refused, and version 3 is on disk all the same.
      const v3 = await cp.put(
        await signDelegation(
          delegation(keys, {
            version: 3,
            releaseKeys: [{
              keyId: keys.rogueRelease.keyId,
              publicKey: keys.rogueRelease.publicKey,
            }],
          }),
          keys.root,
        ),
      );
      const byDropped = await cp.put(await signRelease(release(), keys.release));
      await cp.socket.send(
        cp.announce("r1.b1.e1", { release: byDropped, delegation: v3 }),
        to,
        "jetson-0",
      );
      await until(() => cp.statuses("r1.b1.e1").length === 1, "the refusal under delegation 3");
      assert.equal((await readState(data, "resnet")).refusal?.kind, "unknownKey");
      const memory = JSON.parse(await Deno.readTextFile(`${data}/trust.json`));
      assert.equal(memory.delegationVersion, 3);
      // The control plane (or anyone spoofing it) now serves delegation 2 again, which still
      // names the dropped key: refused as stale, nothing downloaded.
      const v2 = await cp.put(await signDelegation(delegation(keys), keys.root));
      await cp.socket.send(
        cp.announce("r2.b1.e1", { release: byDropped, delegation: v2 }),
        to,
        "jetson-0",
      );
      await until(() => cp.statuses("r2.b1.e1").length === 1, "the refusal under delegation 2");
      assert.match(cp.statuses("r2.b1.e1")[0].detail, /^refused: delegation version 2 is older/);
      assert.equal(cp.bids("r2.b1.e1"), 0);
      assert.deepEqual(await Deno.readFile(currentPath(data, "resnet")), V1);
    } finally {
      await agent.close();
      await cp.close();
    }
  });
});

Deno.test({
  name:
    "a signed release for every device class (deviceClass null) is bid on by a device of any class",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const keys = await makeKeys();
    await Deno.mkdir(`${dir}/cp`);
    const cp = await FakeControlPlane.start(`${dir}/cp`);
    const data = `${dir}/agent`;
    await installedDevice(data);
    const agent = await startAgent(data, cp, keys.root);
    try {
      const documents = {
        delegation: await cp.put(await signDelegation(delegation(keys), keys.root)),
        release: await cp.put(await signRelease(release({ deviceClass: null }), keys.release)),
      };
      await cp.socket.send(cp.announce("r1.b1.e1", documents), {
        hostname: AGENT_HOST,
        port: agent.socket.port,
      }, "jetson-0");
      await until(() => cp.bids("r1.b1.e1") === 1, "the bid");
      assert.equal("refusal" in await readState(data, "resnet"), false);
    } finally {
      await agent.close();
      await cp.close();
    }
  });
});

Deno.test({
  name:
    "two signed releases of one model applied at once: the check, trust.json and the switch are serialized per model, so the higher counter ends active and the lower is refused as a rollback",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const keys = await makeKeys();
    await Deno.mkdir(`${dir}/cp`);
    const cp = await FakeControlPlane.start(`${dir}/cp`);
    const data = `${dir}/agent`;
    await installedDevice(data); // resnet v1 active, counter 10 remembered
    const V3 = randomBytes(4096, 1304);
    const higher = toHex(blake3(V3)); // counter 12
    const lower = toHex(blake3(V2)); // counter 11
    const steps: string[] = [];
    const agent = await startAgent(data, cp, keys.root, {
      afterStepPersisted: (step, target) => steps.push(`${step} ${target}`),
      // The higher release, checked again, waits until the lower one is ready to be checked
      // too: without a per-model lock the lower one would pass (the memory still says 10)
      // and switch after the higher one.
      afterReleaseChecked: async (target) => {
        if (target !== higher) return;
        await until(() => steps.includes(`applied ${lower}`), "the lower release applied");
        await new Promise((r) => setTimeout(r, 200));
      },
    });
    const to = { hostname: AGENT_HOST, port: agent.socket.port };
    try {
      await until(() => cp.received.some((m) => m.type === "heartbeat"), "the first heartbeat");
      const good = await cp.put(await signDelegation(delegation(keys), keys.root));
      const r12 = await cp.put(
        await signRelease(
          release({ version: "v3", counter: 12, target: { blake3: higher, size: V3.length } }),
          keys.release,
        ),
      );
      const r11 = await cp.put(await signRelease(release({ counter: 11 }), keys.release));
      await cp.put(V2);
      await cp.put(V3);
      // Both pass the check before the bid (12 and 11 are above 10).
      await cp.socket.send(
        cp.announce("r12.b1.e1", { release: r12, delegation: good }, V3, "v3"),
        to,
        "jetson-0",
      );
      await cp.socket.send(
        cp.announce("r11.b1.e1", { release: r11, delegation: good }, V2),
        to,
        "jetson-0",
      );
      await until(
        () => cp.bids("r12.b1.e1") === 1 && cp.bids("r11.b1.e1") === 1,
        "the bids on both releases",
      );
      // The device leads both elections: it downloads both at once.
      await cp.socket.send({ type: "leaderAck", manifestId: "r12.b1.e1" }, to, "jetson-0");
      await until(() => steps.includes(`applied ${higher}`), "the higher release applied");
      await cp.socket.send({ type: "leaderAck", manifestId: "r11.b1.e1" }, to, "jetson-0");
      await until(
        () =>
          cp.statuses("r12.b1.e1").some((s) => s.state === "active") &&
          cp.statuses("r11.b1.e1").some((s) => s.state === "failed"),
        "both updates to end",
      );
      const refused = cp.statuses("r11.b1.e1").find((s) => s.state === "failed");
      assert.match(refused?.detail ?? "", /^refused: release counter 11 of resnet is not above 12/);
      assert.deepEqual(await Deno.readFile(currentPath(data, "resnet")), V3, "12 runs");
      const memory = JSON.parse(await Deno.readTextFile(`${data}/trust.json`));
      assert.equal(memory.counters.resnet.counter, 12);
      assert.equal(memory.counters.resnet.target, higher);
      const state = await readState(data, "resnet");
      assert.equal(state.refusal?.kind, "rollback");
      assert.equal(state.refusal?.manifestId, "r11.b1.e1");
    } finally {
      await agent.close();
      await cp.close();
    }
  });
});

Deno.test({
  name: "a damaged trust.json stops the agent before it binds a port, naming the file",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const keys = await makeKeys();
    await Deno.writeTextFile(`${dir}/trust.json`, '{"format":1,"delegationVersion":');
    const cpSocket = ControlSocket.open(CP_HOST, 0);
    try {
      await assert.rejects(
        () =>
          Agent.start({
            nodeId: "jetson-0",
            region: "eu",
            bind: AGENT_HOST,
            dataDir: dir,
            controlPlane: { hostname: CP_HOST, port: cpSocket.port },
            udpPort: 0,
            p2pPort: 0,
            trust: { kind: "pinned", root: keys.root },
          }),
        (err: unknown) =>
          err instanceof IoError && err.message.includes(`${dir}/trust.json is damaged`),
      );
      assert.equal(
        await Deno.readTextFile(`${dir}/trust.json`),
        '{"format":1,"delegationVersion":',
        "not reset",
      );
    } finally {
      cpSocket.close();
    }
  });
});

// The command line.

const AGENT_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.0/8",
  "--allow-sys=statfs",
];

function agentArgs(data: string, ...more: string[]): string[] {
  return [
    "agent",
    "--control-plane",
    `${CP_HOST}:9`,
    "--bind",
    "127.0.13.3",
    "--node-id",
    "a",
    "--data",
    data,
    ...more,
  ];
}

Deno.test("agent without --trust-root or --insecure is a usage error (exit 2) explaining both", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboyWith(AGENT_PERMISSIONS, dir, agentArgs(`${dir}/data`));
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /agent needs --trust-root root\.pub/);
    assert.match(run.stderr, /--insecure \(check nothing: install whatever the control plane/);
    assert.equal(run.stderr.trim().split("\n").length, 1, "one line");
    assert.equal(await Deno.stat(`${dir}/data`).catch(() => null), null, "nothing created");
  });
});

Deno.test("agent with both --trust-root and --insecure is a usage error (exit 2)", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboyWith(
      AGENT_PERMISSIONS,
      dir,
      agentArgs(`${dir}/data`, "--trust-root", `${dir}/root.pub`, "--insecure"),
    );
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /--trust-root and --insecure exclude each other/);
  });
});

Deno.test("agent --trust-root of a missing file is an I/O error (exit 3) naming it; of a release key, a usage error", async () => {
  await withTempDir(async (dir) => {
    const missing = await poolboyWith(
      AGENT_PERMISSIONS,
      dir,
      agentArgs(`${dir}/data`, "--trust-root", `${dir}/root.pub`),
    );
    assert.equal(missing.code, 3, missing.stderr);
    assert.match(missing.stderr, new RegExp(`${dir}/root\\.pub`));
    const { key } = await generateKey("release");
    await Deno.writeTextFile(`${dir}/release.pub`, publicKeyFileText(key));
    const wrongRole = await poolboyWith(
      AGENT_PERMISSIONS,
      dir,
      agentArgs(`${dir}/data`, "--trust-root", `${dir}/release.pub`),
    );
    assert.equal(wrongRole.code, 2, wrongRole.stderr);
    assert.match(wrongRole.stderr, /release\.pub/);
  });
});

Deno.test("agent --device-class follows the name rule", async () => {
  await withTempDir(async (dir) => {
    const run = await poolboyWith(
      AGENT_PERMISSIONS,
      dir,
      agentArgs(`${dir}/data`, "--insecure", "--device-class", "../x"),
    );
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /--device-class: "\.\.\/x" must be/);
  });
});

Deno.test("agent --insecure starts with a one-line warning of what it gives up, even with --quiet", async () => {
  await withTempDir(async (dir) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: poolboyArgs(agentArgs(`${dir}/data`, "--insecure", "--quiet"), AGENT_PERMISSIONS),
      cwd: dir,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    let stderr = "";
    const decoder = new TextDecoder();
    const reader = child.stderr.getReader();
    try {
      while (!stderr.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        stderr += decoder.decode(value, { stream: true });
      }
    } finally {
      child.kill("SIGTERM");
      reader.releaseLock();
      await child.stderr.cancel();
      await child.status;
    }
    const [line] = stderr.split("\n");
    assert.match(
      line,
      /WARNING: --insecure: this device installs whatever the control plane, or anyone spoofing it, announces/,
    );
  });
});
