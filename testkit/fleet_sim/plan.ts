/**
 * The fleet simulator's address plan (testkit/fleet_sim): which loopback
 * address, node id and region each simulated device has, where the control
 * plane and the real agents live, and the ports every simulated device uses.
 *
 * The ranges are the simulator's own: the control plane on 127.20.0.1, real
 * agents on 127.20.1.x, simulated devices from 127.21.0.1 on (250 per /24,
 * .1 to .250). The test suite uses 127.0.x.x, 127.13.x.x and 127.92.x.x.
 *
 * @module
 */

/** The control plane's address. */
export const CP_HOST = "127.20.0.1";
/** Ports of the control plane (those of testkit/fleet_harness.ts). */
export const CP_PORTS = { udp: 7400, p2p: 7401, http: 7402 } as const;
/** Every simulated device's UDP port and blob server port, each on its own address. */
export const DEVICE_PORTS = { udp: 7410, p2p: 7411 } as const;
/** Simulated devices per /24. */
const PER_SUBNET = 250;
/** Second octet of the first simulated device's address. */
const FIRST_OCTET = 21;
/** The most simulated devices the plan has addresses for. */
export const MAX_DEVICES = (256 - FIRST_OCTET) * 256 * PER_SUBNET;
/** The most real agents (127.20.1.10 to .249). */
export const MAX_REAL_AGENTS = 240;

/** One simulated device. */
export interface DevicePlan {
  readonly index: number;
  readonly nodeId: string;
  readonly region: string;
  readonly host: string;
}

/** The region of the i-th device of a fleet of `regions` regions: round robin. */
export function regionOf(index: number, regions: number): string {
  return `r${index % regions}`;
}

/** The i-th simulated device: `sim-<i>`, in region `r<i % regions>`, at its own 127.21+ address. */
export function devicePlan(index: number, regions: number): DevicePlan {
  if (!Number.isSafeInteger(index) || index < 0 || index >= MAX_DEVICES) {
    throw new RangeError(`device index ${index} out of range`);
  }
  const subnet = Math.floor(index / PER_SUBNET);
  const a = FIRST_OCTET + Math.floor(subnet / 256);
  const b = subnet % 256;
  const c = 1 + (index % PER_SUBNET);
  return {
    index,
    nodeId: `sim-${index}`,
    region: regionOf(index, regions),
    host: `127.${a}.${b}.${c}`,
  };
}

/** The k-th real agent: `real-<k>` at 127.20.1.(10 + k), regions round robin like the devices. */
export function realAgentPlan(k: number, regions: number): DevicePlan {
  if (!Number.isSafeInteger(k) || k < 0 || k >= MAX_REAL_AGENTS) {
    throw new RangeError(`real agent ${k} out of range`);
  }
  return {
    index: k,
    nodeId: `real-${k}`,
    region: regionOf(k, regions),
    host: `127.20.1.${10 + k}`,
  };
}
