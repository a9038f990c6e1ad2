/**
 * The fleet simulator (testkit/fleet_sim, `deno task fleet:sim`) as a
 * correctness test: 1,000 simulated devices in 4 regions and one real agent,
 * against the real control plane process, one rollout of a patch. No timing
 * thresholds: what is checked is that everyone ends on the new version, that
 * every simulated device verified the rollout's blob, that the control
 * plane sent the patch about once per region (issue 15), and that the
 * followers got it from a swarm: every piece of every follower verified, many
 * devices of each region serving pieces, none more than its upload slots at
 * once. Speed is measured by the task, not here.
 */

import assert from "node:assert/strict";
import { MAX_DOCUMENT_BYTES } from "../release/documents.ts";
import { FleetSimulation } from "../testkit/fleet_sim/run.ts";

const DEVICES = 1000;
const REGIONS = 4;
const REAL = 1;
/** Small pieces, so that the ~200 KB patch is several of them. */
const PIECE_SIZE = 64 * 1024;
const UPLOAD_SLOTS = 4;

Deno.test({
  name:
    "1,000 simulated devices and a real agent in 4 regions all end on the new version, each with the rollout's blob verified piece by piece from a swarm, and the control plane sends the patch once per region",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const simulation = new FleetSimulation({
      devices: DEVICES,
      regions: REGIONS,
      realAgents: REAL,
      heartbeatMs: 5_000,
      pieceSize: PIECE_SIZE,
      uploadSlots: UPLOAD_SLOTS,
      // Not agents' 10 s: a thousand devices on a shared machine's cores may be slow to vet and
      // serve, and the control plane's egress must not depend on the machine's load.
      stallMs: 60_000,
    });
    const { report, done, blob, target } = await simulation.run();

    assert.ok(report.completed, "every device was done before the rollout's deadline");
    assert.equal(report.done, DEVICES + REAL, "every device and the agent run v2");
    const ids = new Set(done.map((d) => d.id));
    assert.equal(ids.size, DEVICES, "every simulated device reported done once");
    for (let i = 0; i < DEVICES; i++) assert.ok(ids.has(`sim-${i}`), `sim-${i} is done`);
    for (const d of done) {
      assert.equal(d.blob, blob, `${d.id} verified the rollout's blob`);
      assert.equal(d.target, target, `${d.id} runs the rollout's target`);
    }
    assert.equal(report.verified, DEVICES);
    assert.equal(report.failures, 0, "no device reported a failure");

    assert.equal(report.elections.length, REGIONS, "one election per region");
    for (const e of report.elections) {
      assert.equal(e.state, "closed", `the election of ${e.region} closed`);
      assert.ok(e.leader !== null);
    }
    assert.ok(report.electionsClosedS !== null);

    // One patch per region from the control plane (a leader each), 5 % for retries at most;
    // besides the patch, only the signed documents every device checks before it bids.
    assert.ok(report.egressRatio >= 1, `egress ratio ${report.egressRatio} is at least 1`);
    assert.ok(report.egressRatio <= 1.05, `egress ratio ${report.egressRatio} is at most 1.05`);
    assert.ok(report.documentBytes <= (DEVICES + REAL) * 2 * MAX_DOCUMENT_BYTES);
    assert.ok(report.devicesFromControlPlane <= REGIONS, "followers got the patch from leaders");

    // The measurements are there (their values are the benchmark's business).
    assert.ok(report.cpPeakRssMB > 0 && report.cpCpuS > 0 && report.storeBytes > 0);
    assert.ok(report.statusCalls > 0 && report.datagramsPerS > 0);

    // The swarm: every follower fetched and verified every piece of the blob.
    const { swarm } = report;
    const leaders = done.filter((d) => d.leader).length;
    const followers = DEVICES - leaders;
    assert.ok(swarm.pieceCount > 1, `the patch is ${swarm.pieceCount} pieces`);
    assert.equal(swarm.swarmDownloads, followers, "every follower downloaded by pieces");
    for (const d of done.filter((x) => !x.leader)) {
      assert.equal(d.pieceCount, swarm.pieceCount, `${d.id} downloaded the blob's pieces`);
      assert.equal(d.pieces, d.pieceCount, `${d.id} verified every piece`);
    }
    assert.equal(swarm.piecesVerified, swarm.pieceCount * followers);
    assert.ok(swarm.pieceListBytes > 0, "the piece lists came from the control plane");
    assert.ok(swarm.bytesFromPeers > swarm.bytesFromControlPlane, "most bytes came from peers");
    // A swarm, not a star: in every region many devices served pieces, not the leader alone.
    for (const e of report.elections) {
      const serving = swarm.servingDevicesByRegion[e.region] ?? 0;
      assert.ok(serving > 1, `${serving} devices of ${e.region} served pieces`);
    }
    assert.ok(
      swarm.maxConcurrentUploads >= 1 && swarm.maxConcurrentUploads <= UPLOAD_SLOTS,
      `no device sent more than ${UPLOAD_SLOTS} bodies at once (${swarm.maxConcurrentUploads})`,
    );
  },
});

Deno.test("a simulation refuses more regions than devices before it starts anything", () => {
  assert.throws(() => new FleetSimulation({ devices: 3, regions: 4 }), RangeError);
  assert.throws(() => new FleetSimulation({ devices: 0, regions: 1 }), RangeError);
});
