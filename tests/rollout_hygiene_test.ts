/**
 * Rollout hygiene (issue 14), against an in-process control plane and its
 * HTTP API, and, for the data directory's lock, real processes: concurrent
 * conflicting publishes never leave a version without its bytes; a rollout to
 * a selection with no device is refused and creates nothing; rollouts of one
 * model in two regions run side by side; a device silent longer than
 * --offline-after does not hold its rollout, and is offered it again when it
 * returns; an admin removes a device; a second control plane on a data
 * directory in use is refused.
 */

import assert from "node:assert/strict";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import { Fleet } from "../testkit/fleet_harness.ts";
import type {
  DeviceList,
  RolloutInfo,
  RolloutList,
  StatusReport,
} from "../controlplane/api_types.ts";
import { OFFLINE_EXCLUDED } from "../controlplane/agent_progress.ts";
import { createToken } from "../controlplane/auth.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import { poolboyArgs, poolboyWith } from "./cli_helpers.ts";
import { registerDevice } from "./support/devices.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { withApi } from "./support/api_harness.ts";

/** A request body that arrives in `pieces` chunks, each after a turn of the event loop. */
function trickled(bytes: Uint8Array, pieces: number): ReadableStream<Uint8Array> {
  const size = Math.ceil(bytes.length / pieces);
  let at = 0;
  return new ReadableStream({
    async pull(controller) {
      await new Promise((r) => setTimeout(r, 0));
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

Deno.test("12 concurrent conflicting publishes: every version answered 201 has its bytes", async () => {
  await withApi({}, async ({ call, cp }) => {
    for (let round = 0; round < 4; round++) {
      const model = `m${round}`;
      assert.equal(
        (await call("PUT", `/v1/models/${model}/versions/v0`, randomBytes(4096, 1000 + round)))
          .status,
        201,
      );
      // Six files, each sent twice at once: as v0 again (a conflict) and as a new version.
      const files = Array.from({ length: 6 }, (_, k) => randomBytes(64 * 1024, round * 10 + k));
      const calls = files.flatMap((file, k) => [
        { version: "v0", file, pieces: 1 + ((k + round) % 4) },
        { version: `v${k + 1}`, file, pieces: 1 + ((k + round + 2) % 4) },
      ]);
      const answers = await Promise.all(calls.map(async (c) => {
        const r = await call(
          "PUT",
          `/v1/models/${model}/versions/${c.version}`,
          trickled(c.file, c.pieces),
        );
        await r.body?.cancel();
        return { ...c, status: r.status };
      }));
      for (const a of answers) {
        assert.equal(a.status, a.version === "v0" ? 409 : 201, `${model} ${a.version}`);
      }
      for (const v of (await cp.versions()).filter((v) => v.model === model)) {
        const path = cp.store.pathOf(fromHex(v.digest));
        const bytes = await Deno.readFile(path).catch(() => undefined);
        assert.ok(bytes, `${model} ${v.version}: its blob ${v.digest} is missing`);
        assert.equal(toHex(blake3(bytes)), v.digest, `${model} ${v.version}: its bytes`);
      }
    }
    // Nothing refused is left behind: the blobs are exactly the versions' files.
    const blobs = [];
    for await (const e of Deno.readDir(cp.store.dir)) {
      if (/^[0-9a-f]{64}$/.test(e.name)) blobs.push(e.name);
    }
    const digests = new Set((await cp.versions()).map((v) => v.digest));
    assert.deepEqual(blobs.sort(), [...digests].sort());
  });
});

Deno.test("two concurrent publishes of one new version with different bytes: one 201, one 409, and the version has the 201's bytes", async () => {
  await withApi({}, async ({ call, cp }) => {
    const files = [randomBytes(64 * 1024, 21), randomBytes(64 * 1024, 22)];
    const statuses = await Promise.all(files.map(async (file, i) => {
      const r = await call("PUT", "/v1/models/bert/versions/v1", trickled(file, 2 + i));
      await r.body?.cancel();
      return r.status;
    }));
    assert.deepEqual([...statuses].sort(), [201, 409]);
    const winner = files[statuses.indexOf(201)];
    const [version] = await cp.versions();
    assert.equal(version.digest, toHex(blake3(winner)));
    assert.equal(
      toHex(blake3(await Deno.readFile(cp.store.pathOf(fromHex(version.digest))))),
      version.digest,
    );
  });
});

/** The permissions `poolboy controlplane` and `poolboy token` run with in these tests. */
const CP_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.0/8",
];

/** `poolboy controlplane` on `dir` at a loopback address of its own (default ports). */
function spawnControlPlane(dir: string, host: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: poolboyArgs(["controlplane", "--bind", host, "--data", dir], CP_PERMISSIONS),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

/** Reads a child's stderr until a line contains `text`; the rest is drained in the background. */
async function waitForLine(child: Deno.ChildProcess, text: string): Promise<void> {
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes(text)) {
    const { done, value } = await lines.read();
    if (done) throw new Error(`the control plane ended before saying "${text}": ${seen}`);
    seen += value;
  }
  (async () => {
    while (!(await lines.read()).done) { /* drain */ }
  })();
}

Deno.test("a second control plane on a data directory in use is refused (exit 3, naming the directory and the holder's pid); poolboy token still works", async () => {
  await withTempDir(async (dir) => {
    const host = `127.77.${1 + Math.floor(Math.random() * 250)}.${
      1 + Math.floor(Math.random() * 250)
    }`;
    const first = spawnControlPlane(dir, host);
    try {
      await waitForLine(first, "http api on");
      const second = await poolboyWith(CP_PERMISSIONS, dir, [
        "controlplane",
        "--bind",
        host,
        "--data",
        dir,
      ]);
      assert.equal(second.code, 3, second.stderr);
      assert.match(second.stderr, /data directory .* is in use by another control plane/);
      assert.ok(second.stderr.includes(dir), second.stderr);
      assert.ok(second.stderr.includes(`pid ${first.pid}`), second.stderr);
      const token = await poolboyWith(CP_PERMISSIONS, dir, [
        "token",
        "create",
        "--data",
        dir,
        "--role",
        "viewer",
        "--name",
        "beside-a-running-control-plane",
      ]);
      assert.equal(token.code, 0, token.stderr);
      assert.match(token.stdout, /^pbt_/);
    } finally {
      first.kill("SIGTERM");
      await first.status;
    }
    // Once the holder is gone (even killed), the directory can be used again.
    const third = spawnControlPlane(dir, host);
    try {
      await waitForLine(third, "http api on");
    } finally {
      third.kill("SIGTERM");
      await third.status;
    }
  });
});

async function json<T>(response: Response): Promise<T> {
  return await response.json() as T;
}

Deno.test("a rollout to a region with no device, or to a fleet with none, is refused with 400 naming the region, and nothing is created", async () => {
  await withApi({}, async ({ call, cp }) => {
    assert.equal(
      (await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1))).status,
      201,
    );
    const everywhere = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1" }),
    );
    assert.equal(everywhere.status, 400);
    assert.match((await json<{ error: string }>(everywhere)).error, /no device is registered/);
    registerDevice(cp, "eu-0", "eu");
    const asia = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1", region: "asia" }),
    );
    assert.equal(asia.status, 400);
    assert.equal(
      (await json<{ error: string }>(asia)).error,
      'no device in region "asia" (devices are in: eu); nothing was created',
    );
    assert.deepEqual((await json<RolloutList>(await call("GET", "/v1/rollouts"))).rollouts, []);
    const eu = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1", region: "eu" }),
    );
    assert.equal(eu.status, 201);
  });
});

Deno.test({
  name:
    "real processes: rollouts of one model in two regions run side by side to done; a device killed for longer than --offline-after does not hold a rollout, and a later rollout reaches it when it returns",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withTempDir(async (dir) => {
    const fleet = await Fleet.start({
      dir,
      cpHost: "127.0.91.1",
      trust: "insecure",
      agents: [
        { nodeId: "eu-0", region: "eu", host: "127.0.91.10" },
        { nodeId: "eu-1", region: "eu", host: "127.0.91.11" },
        { nodeId: "us-0", region: "us", host: "127.0.91.12" },
      ],
      cpArgs: ["--agent-timeout", "1s", "--offline-after", "2s"],
      agentArgs: ["--heartbeat-interval", "250ms"],
    });
    try {
      await fleet.waitFor(
        async () => (await fleet.status()).agents.filter((a) => a.online).length === 3,
        30_000,
        "every agent to register",
      );
      const [v1, v2] = [randomBytes(256 * 1024, 11), randomBytes(256 * 1024, 12)];
      await Deno.writeFile(`${dir}/v1.bin`, v1);
      await Deno.writeFile(`${dir}/v2.bin`, v2);
      const d1 = (await fleet.publish("resnet", "v1", `${dir}/v1.bin`)).version.digest;
      const d2 = (await fleet.publish("resnet", "v2", `${dir}/v2.bin`)).version.digest;
      const eu = await fleet.rollout("resnet", "v1", "eu");
      const us = await fleet.rollout("resnet", "v1", "us");
      const stateOf = (status: StatusReport, id: number) =>
        status.rollouts.find((r) => r.id === id)!;
      assert.notEqual(stateOf(await fleet.status(), eu.id).state, "superseded");
      await fleet.converged("resnet", d1, ["eu-0", "eu-1", "us-0"]);
      await fleet.waitFor(
        async () => {
          const status = await fleet.status();
          return [eu.id, us.id].every((id) => stateOf(status, id).state === "done");
        },
        30_000,
        "both regions' rollouts to be done",
      );

      // eu-1 goes away; a rollout of v2 to eu finishes without it once it is gone for 2 s.
      await fleet.killAgent("eu-1");
      const second = await fleet.rollout("resnet", "v2", "eu");
      await fleet.converged("resnet", d2, ["eu-0"]);
      let last: StatusReport | undefined;
      await fleet.waitFor(
        async () => stateOf(last = await fleet.status(), second.id).state === "done",
        30_000,
        "the rollout to be done without eu-1",
        () => JSON.stringify(last && stateOf(last, second.id)),
      );
      assert.deepEqual(
        stateOf(last!, second.id).agents.map((a) => [a.nodeId, a.state, a.detail]),
        [["eu-0", "active", stateOf(last!, second.id).agents[0].detail], [
          "eu-1",
          "offline",
          OFFLINE_EXCLUDED,
        ]],
      );
      assert.equal(
        last!.agents.find((a) => a.nodeId === "eu-1")!.active.resnet,
        d1,
        "eu-1 still runs v1",
      );
      // It returns; the finished rollout stays done, and a later rollout reaches it.
      await fleet.startAgent("eu-1");
      await fleet.waitFor(
        async () => (await fleet.status()).agents.find((a) => a.nodeId === "eu-1")!.online,
        30_000,
        "eu-1 to be back",
      );
      const third = await fleet.rollout("resnet", "v2", "eu");
      await fleet.converged("resnet", d2, ["eu-0", "eu-1"]);
      assert.equal(stateOf(await fleet.status(), second.id).state, "done");
      assert.ok(third.id > second.id);
    } catch (err) {
      const log = await Deno.readTextFile(`${dir}/cp.log`).catch(() => "");
      console.error(`--- control plane log ---\n${log.split("\n").slice(-40).join("\n")}`);
      throw err;
    } finally {
      await fleet.stop();
    }
  });
});

Deno.test("a device silent longer than --offline-after no longer holds its rollout, shows offline, and is offered it again when it returns", async () => {
  const offlineAfterMs = 60_000;
  await withApi({
    controlPlane: { tickMs: 3_600_000, agentTimeoutMs: 10_000, offlineAfterMs },
  }, async ({ call, cp }) => {
    const v1 = randomBytes(1000, 3);
    const digest = toHex(blake3(v1));
    await call("PUT", "/v1/models/resnet/versions/v1", v1);
    const now = Date.now();
    registerDevice(cp, "eu-0", "eu", { active: { resnet: digest }, lastSeen: now });
    registerDevice(cp, "eu-1", "eu", { lastSeen: now - 20_000 }); // offline, not for long
    const created = await json<RolloutInfo>(
      await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" })),
    );
    const rolloutNow = async () => {
      const report = await json<StatusReport>(await call("GET", "/v1/status"));
      const r = report.rollouts.find((r) => r.id === created.id)!;
      return { state: r.state, agents: r.agents.map((a) => [a.nodeId, a.state, a.detail]) };
    };
    cp.tick(now);
    assert.deepEqual(await rolloutNow(), {
      state: "running",
      agents: [["eu-0", "active", ""], ["eu-1", "offline", ""]],
    }, "offline for less than --offline-after: the rollout waits for it");
    cp.tick(now - 20_000 + offlineAfterMs + 1);
    assert.deepEqual(await rolloutNow(), {
      state: "done",
      agents: [["eu-0", "active", ""], ["eu-1", "offline", OFFLINE_EXCLUDED]],
    }, "offline for longer: done without it");

    // A second rollout, still running when the silent device returns: it is offered it again.
    const v2 = randomBytes(1000, 4);
    await call("PUT", "/v1/models/resnet/versions/v2", v2);
    const second = await json<RolloutInfo>(
      await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v2" })),
    );
    const later = now + 2 * offlineAfterMs;
    registerDevice(cp, "eu-0", "eu", { active: { resnet: digest }, lastSeen: later });
    cp.tick(later);
    const progress = async () => {
      const report = await json<StatusReport>(await call("GET", "/v1/status"));
      return report.rollouts.find((r) => r.id === second.id)!.agents.map((
        a,
      ) => [a.nodeId, a.state]);
    };
    assert.deepEqual(await progress(), [["eu-0", "pending"], ["eu-1", "offline"]]);
    registerDevice(cp, "eu-1", "eu", { lastSeen: later + 1000 }); // it heartbeats again
    cp.tick(later + 1000);
    assert.deepEqual(await progress(), [["eu-0", "pending"], ["eu-1", "pending"]]);
  });
});

Deno.test("an admin removes a device: its registry entry and its progress go, the audit log has it, and it is back in the registry only when it is registered again (by enrolling anew)", async () => {
  await withApi({ controlPlane: { tickMs: 3_600_000 } }, async ({ call, cp }) => {
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 5));
    registerDevice(cp, "eu-0");
    registerDevice(cp, "eu-1");
    for (const agent of cp.agents.values()) await cp.stateStore.putAgent(agent); // as heartbeats do
    const created = await json<RolloutInfo>(
      await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" })),
    );
    cp.tick(Date.now());
    const removed = await call("DELETE", "/v1/devices/eu-0");
    assert.equal(removed.status, 200);
    assert.deepEqual(await json(removed), { nodeId: "eu-0", removed: true });
    const devices = await json<DeviceList>(await call("GET", "/v1/devices"));
    assert.deepEqual(devices.agents.map((a) => a.nodeId), ["eu-1"]);
    assert.deepEqual((await cp.stateStore.agents()).map((a) => a.nodeId), ["eu-1"]);
    assert.deepEqual(
      (await cp.stateStore.rolloutAgents(created.id)).map((a) => a.nodeId),
      ["eu-1"],
    );
    const [entry] = await cp.stateStore.audit(1);
    assert.deepEqual([entry.action, entry.target, entry.status, entry.role], [
      "DELETE /v1/devices/eu-0",
      "device eu-0",
      200,
      "admin",
    ]);
    const again = await call("DELETE", "/v1/devices/eu-0");
    assert.equal(again.status, 404);
    assert.match((await json<{ error: string }>(again)).error, /unknown device "eu-0"/);
    registerDevice(cp, "eu-0"); // what enrolling anew leads to (its old key was forgotten)
    cp.tick(Date.now());
    assert.deepEqual(
      (await json<DeviceList>(await call("GET", "/v1/devices"))).agents.map((a) => a.nodeId).sort(),
      ["eu-0", "eu-1"],
    );
  });
});

Deno.test({
  name: "poolboy device list and remove call the API; removing needs an admin's token",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withApi({}, async ({ cp }) => {
    registerDevice(cp, "eu-0");
    const tokens: Record<string, string> = {};
    for (const role of ["deployer", "admin"] as const) {
      tokens[role] = (await createToken(cp.stateStore, role, `cli-${role}`, 0)).token;
    }
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      apiHandler(cp),
    );
    const url = `http://127.0.0.1:${server.addr.port}`;
    const device = (token: string, ...args: string[]) =>
      poolboyWith(CP_PERMISSIONS, ".", [
        "device",
        ...args,
        "--control-plane",
        url,
        "--token",
        token,
      ]);
    try {
      const list = await device(tokens.deployer, "list", "--json");
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual((JSON.parse(list.stdout) as DeviceList).agents.map((a) => a.nodeId), [
        "eu-0",
      ]);
      const refused = await device(tokens.deployer, "remove", "eu-0");
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /403/);
      assert.ok(cp.agents.has("eu-0"));
      const removed = await device(tokens.admin, "remove", "eu-0");
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal(removed.stdout.trim(), "device eu-0 removed");
      assert.equal(cp.agents.has("eu-0"), false);
      const unknown = await device(tokens.admin, "remove", "eu-0");
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /unknown device "eu-0"/);
    } finally {
      await server.shutdown();
    }
  });
});
