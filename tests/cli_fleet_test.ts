/**
 * The fleet commands' command lines (cli/controlplane.ts, agent.ts,
 * publish.ts, rollout.ts, status.ts): help, usage errors and an unreachable
 * control plane, as a user meets them.
 */

import assert from "node:assert/strict";
import { CODEC_PERMISSIONS, poolboyWith, type RunResult } from "./cli_helpers.ts";

/** The fleet commands need the network (loopback here) and cbor-x's environment variable. */
const FLEET_PERMISSIONS = [
  ...CODEC_PERMISSIONS,
  "--allow-net=127.0.0.0/8",
];

async function poolboy(...args: string[]): Promise<RunResult> {
  return await poolboyWith(FLEET_PERMISSIONS, Deno.cwd(), args);
}

for (const command of ["controlplane", "agent", "publish", "rollout", "rollback", "status"]) {
  Deno.test(`${command} --help exits 0 and explains the command`, async () => {
    const run = await poolboy(command, "--help");
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^poolboy ${command} — `));
    assert.match(run.stdout, /Usage: poolboy/);
    assert.match(run.stdout, /Exit codes:/);
  });
}

Deno.test("the main help lists the fleet commands", async () => {
  const run = await poolboy("--help");
  for (const command of ["controlplane", "agent", "publish", "rollout", "status"]) {
    assert.match(run.stdout, new RegExp(`\\n  ${command} `));
  }
});

const USAGE: [string[], RegExp][] = [
  [["agent"], /agent needs --control-plane/],
  [["agent", "--control-plane", "127.0.0.1", "--bind", "127.0.0.2"], /agent needs --node-id/],
  [
    [
      "agent",
      "--control-plane",
      "cp.local",
      "--bind",
      "127.0.0.2",
      "--node-id",
      "a",
      "--data",
      "d",
    ],
    /--control-plane: "cp.local" is not HOST\[:PORT\]/,
  ],
  [
    [
      "agent",
      "--control-plane",
      "127.0.0.1",
      "--bind",
      "127.0.0.2",
      "--node-id",
      "a b",
      "--data",
      "d",
    ],
    /--node-id: "a b" must be/,
  ],
  [
    [
      "agent",
      "--control-plane",
      "127.0.0.1",
      "--bind",
      "127.0.0.2",
      "--node-id",
      "a",
      "--data",
      "d",
      "--udp-port",
      "70000",
    ],
    /--udp-port: "70000" is not a port/,
  ],
  [
    ["controlplane", "--bind", "localhost", "--data", "d"],
    /--bind: "localhost" is not an IP address/,
  ],
  [["controlplane", "--bind", "127.0.0.1"], /controlplane needs --data/],
  [
    ["controlplane", "--bind", "127.0.0.1", "--data", "d", "--agent-timeout", "soon"],
    /--agent-timeout: "soon" is not a duration/,
  ],
  [
    ["publish", "--control-plane", "http://127.0.0.1:9", "--model", "m", "--version", "v"],
    /publish takes one FILE/,
  ],
  [
    ["rollout", "--control-plane", "ftp://127.0.0.1", "--model", "m", "--version", "v"],
    /only http:\/\//,
  ],
  [["rollout", "--model", "m", "--version", "v"], /rollout needs --control-plane/],
  [["rollout", "explode", "--control-plane", "http://127.0.0.1:9"], /unknown action "explode"/],
  [
    ["rollout", "pause", "--control-plane", "http://127.0.0.1:9"],
    /rollout pause takes one rollout ID/,
  ],
  [
    [
      "rollout",
      "--control-plane",
      "http://127.0.0.1:9",
      "--model",
      "m",
      "--version",
      "v",
      "--strategy",
      "yolo",
    ],
    /--strategy: "yolo" is not all, canary or rolling/,
  ],
  [
    [
      "rollout",
      "--control-plane",
      "http://127.0.0.1:9",
      "--model",
      "m",
      "--version",
      "v",
      "--canary",
      "2",
    ],
    /--canary goes with --strategy canary/,
  ],
  [
    [
      "rollout",
      "--control-plane",
      "http://127.0.0.1:9",
      "--model",
      "m",
      "--version",
      "v",
      "--strategy",
      "rolling",
      "--batch",
      "0",
    ],
    /--batch: "0" is not a whole number/,
  ],
  [["rollback", "--control-plane", "http://127.0.0.1:9"], /rollback needs --model/],
  [
    [
      "agent",
      "--control-plane",
      "127.0.0.1",
      "--bind",
      "127.0.0.2",
      "--node-id",
      "a",
      "--data",
      "d",
      "--poison-after",
      "0",
    ],
    /--poison-after: "0" is not a count/,
  ],
  [["status", "--control-plane", "http://127.0.0.1:9", "extra"], /status takes no arguments/],
  [["device", "accept", "--control-plane", "http://127.0.0.1:9", "eu-0"], /needs --key-id HEX/],
  [
    ["device", "accept", "--control-plane", "http://127.0.0.1:9", "--key-id", "abc", "eu-0"],
    /needs --key-id HEX/,
  ],
];

for (const [args, message] of USAGE) {
  Deno.test(`usage error, exit 2: poolboy ${args.join(" ")}`, async () => {
    const run = await poolboy(...args);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, message);
    assert.equal(run.stderr.trim().split("\n").length, 1, "one line");
  });
}

Deno.test("status against a control plane that is not there: exit 3, naming the address", async () => {
  const run = await poolboy("status", "--control-plane", "http://127.0.0.1:9");
  assert.equal(run.code, 3, run.stderr);
  assert.match(run.stderr, /cannot reach the control plane at http:\/\/127\.0\.0\.1:9/);
});

Deno.test("status prints versions, agents, rollouts with their elections and bytes served", async () => {
  const { formatStatus } = await import("../cli/status.ts");
  const v1 = "1".repeat(64);
  const v2 = "2".repeat(64);
  const lines = formatStatus({
    boot: 3,
    versions: [
      {
        model: "resnet",
        version: "v1",
        digest: v1,
        size: 1024,
        created: 0,
        signed: false,
        counter: null,
      },
      {
        model: "resnet",
        version: "v2",
        digest: v2,
        size: 1024,
        created: 1,
        signed: true,
        counter: 2,
      },
    ],
    patches: [{ base: v1, target: v2, digest: "3".repeat(64), size: 100 }],
    agents: [
      {
        nodeId: "eu-0",
        region: "eu",
        host: "100.64.0.10",
        online: true,
        lastSeenMsAgo: 5,
        active: { resnet: v2 },
        served: 300,
      },
      {
        nodeId: "eu-1",
        region: "eu",
        host: "100.64.0.11",
        online: false,
        lastSeenMsAgo: 60_000,
        active: { resnet: v1 },
        served: 0,
      },
    ],
    rollouts: [{
      id: 7,
      model: "resnet",
      version: "v2",
      digest: v2,
      region: null,
      state: "running",
      created: 0,
      finished: null,
      strategy: "canary",
      canary: 1,
      canaryPercent: false,
      batch: 1,
      maxFailures: 0.2,
      rollback: false,
      reason: "1 of 1 in the current batch failed",
      agents: [
        { rolloutId: 7, nodeId: "eu-0", state: "active", detail: "v2", updated: 0 },
        { rolloutId: 7, nodeId: "eu-1", state: "offline", detail: "", updated: 0 },
      ],
      elections: [{
        manifestId: "r7.b3.e1",
        rolloutId: 7,
        region: "eu",
        base: v1,
        blob: "3".repeat(64),
        blobSize: 100,
        state: "closed",
        failure: null,
        leader: "eu-0",
        members: ["eu-0", "eu-1"],
        pending: ["eu-1"],
        timeline: {},
        controlPlaneServedForBlob: 100,
      }],
    }],
    controlPlane: {
      served: 100,
      servedByDigest: {},
      tick: { count: 0, totalMs: 0, maxMs: 0, lastMs: 0 },
      datagramBacklog: 0,
    },
    drops: {},
    patchErrors: {},
  }).join("\n");
  assert.match(lines, /control plane \(boot 3\): served 100 B/);
  assert.match(lines, /resnet v1: 1\.00 KiB, blake3 1{64}/);
  assert.match(lines, /resnet v1: 1\.00 KiB, blake3 1{64}, unsigned/);
  assert.match(lines, /resnet v2: 1\.00 KiB, blake3 2{64}, signed, counter 2/);
  assert.match(lines, /patch resnet v1 → resnet v2: 100 B/);
  assert.match(lines, /eu-0 +eu +online +resnet v2; served 300 B/);
  assert.match(lines, /eu-1 +eu +OFFLINE resnet v1/);
  assert.match(
    lines,
    /#7 resnet v2 → all regions: running, 1\/2 agents active \[canary\] \(1 of 1 in the current batch failed\)/,
  );
  assert.match(lines, /election r7\.b3\.e1 eu: closed, leader eu-0, patch 100 B, 1\/2 pending/);
  assert.match(lines, /eu-1: offline/);
});
