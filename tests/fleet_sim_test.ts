/**
 * The fleet simulator (testkit/fleet_sim, `deno task fleet:sim`) as a
 * correctness test: 1,000 simulated devices in 4 regions and one real agent,
 * against the real control plane process, one rollout of a patch. No timing
 * thresholds: what is checked is that everyone ends on the new version, that
 * every simulated device verified the rollout's blob, and that the control
 * plane sent the patch about once per region (issue 15). Speed is measured
 * by the task, not here.
 */

import assert from "node:assert/strict";
import { MAX_DOCUMENT_BYTES } from "../release/documents.ts";
import { FleetSimulation } from "../testkit/fleet_sim/run.ts";

const DEVICES = 1000;
const REGIONS = 4;
const REAL = 1;

Deno.test({
  name:
    "1,000 simulated devices and a real agent in 4 regions all end on the new version, each with the rollout's blob verified, and the control plane sends the patch once per region",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const simulation = new FleetSimulation({
      devices: DEVICES,
      regions: REGIONS,
      realAgents: REAL,
      heartbeatMs: 5_000,
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
  },
});

Deno.test("a simulation refuses more regions than devices before it starts anything", () => {
  assert.throws(() => new FleetSimulation({ devices: 3, regions: 4 }), RangeError);
  assert.throws(() => new FleetSimulation({ devices: 0, regions: 1 }), RangeError);
});
