/**
 * Devices for tests that need the control plane to know some (a rollout to a
 * selection with no device is refused): `registerDevice` puts one in an
 * in-process control plane's registry as its heartbeat would, and
 * `heartbeatFrom` sends a real heartbeat to a control plane in another
 * process, signed by a device key enrolled through its HTTP API (issue 14:
 * only enrolled devices' signed datagrams count).
 *
 * @module
 */

import type { ControlPlane } from "../../controlplane/control_plane.ts";
import type { AgentRecord } from "../../controlplane/state_store.ts";
import type { SigningKey } from "../../release/keys.ts";
import { deviceSocket, enrollDeviceOver } from "./identity.ts";

/** Registers `nodeId` in `region` in an in-process control plane, heard from now. */
export function registerDevice(
  cp: ControlPlane,
  nodeId: string,
  region = "eu",
  extra: Partial<AgentRecord> = {},
): void {
  cp.agents.set(nodeId, {
    nodeId,
    region,
    host: "127.0.0.2",
    udpPort: 9,
    p2pPort: 9,
    active: {},
    held: [],
    served: 0,
    startedAt: 1,
    lastSeen: Date.now(),
    ...extra,
  });
}

/**
 * Sends one heartbeat of `nodeId` in `region` from 127.0.0.2 to the control
 * plane's UDP endpoint; the caller waits until the device is listed.
 */
export async function heartbeatFrom(
  controlPlane: { hostname: string; port: number },
  nodeId: string,
  key: SigningKey,
  region = "eu",
): Promise<void> {
  const socket = deviceSocket("127.0.0.2", new Map([[nodeId, key]]));
  try {
    await socket.send({
      type: "heartbeat",
      nodeId,
      region,
      host: "127.0.0.2",
      udpPort: socket.port,
      p2pPort: 9,
      held: [],
      active: [],
      served: 0,
      startedAt: 1,
    }, controlPlane);
  } finally {
    socket.close();
  }
}

/**
 * Enrols `nodeId` with a control plane in another process (its HTTP API
 * `api.url`, an admin's `api.token`), then heartbeats it until `listed` says
 * the control plane knows it (a datagram may be lost).
 */
export async function heartbeatUntilListed(
  controlPlane: { hostname: string; port: number },
  api: { url: string; token: string },
  nodeId: string,
  listed: () => Promise<boolean>,
  region = "eu",
): Promise<void> {
  const key = await enrollDeviceOver(api.url, api.token, nodeId, region);
  for (const deadline = Date.now() + 10_000;;) {
    await heartbeatFrom(controlPlane, nodeId, key, region);
    if (await listed()) return;
    if (Date.now() > deadline) throw new Error(`${nodeId}'s heartbeat was not registered`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
