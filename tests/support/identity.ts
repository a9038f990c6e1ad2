/**
 * Device identity for tests that put datagrams on the wire by hand (issue 14:
 * every control datagram is signed, by an enrolled device's key or by the
 * control plane's): enrol a device key with an in-process control plane or
 * through a control plane's HTTP API, sockets that sign as devices or as a
 * control plane, and an agent data directory pinned to a test's control-plane
 * key (as `agent --enroll` would leave it).
 *
 * @module
 */

import type { ControlPlane } from "../../controlplane/control_plane.ts";
import { writeEnrollment } from "../../agent/enrollment.ts";
import { generateKey, type SigningKey, toBase64Url } from "../../release/keys.ts";
import type { ControlMessage } from "../../transfer/control_messages.ts";
import { ControlSocket, type ControlSocketOptions } from "../../transfer/control_socket.ts";

/** Device keys by node id. */
export type DeviceKeys = Map<string, SigningKey>;

/** Enrols `nodeId` (a new key) with an in-process control plane; returns its key. */
export async function enrollDevice(
  cp: ControlPlane,
  nodeId: string,
  region = "eu",
  keys?: DeviceKeys,
): Promise<SigningKey> {
  const { key } = await generateKey("device");
  const { token } = await cp.enrollment.createToken(1, 60_000, Date.now());
  await cp.enrollment.enroll(
    { nodeId, region, publicKey: toBase64Url(key.publicKey), token },
    Date.now(),
  );
  keys?.set(nodeId, key);
  return key;
}

/**
 * Enrols `nodeId` (a new key) with the control plane whose HTTP API is `url`,
 * using `adminToken` to make its enrolment token; returns its key.
 */
export async function enrollDeviceOver(
  url: string,
  adminToken: string,
  nodeId: string,
  region = "eu",
): Promise<SigningKey> {
  const made = await fetch(`${url}/v1/enrollment-tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}` },
    body: JSON.stringify({ uses: 1, expiresMs: 60_000 }),
  });
  if (made.status !== 201) throw new Error(`enrolment token: HTTP ${made.status}`);
  const { token } = await made.json() as { token: string };
  const { key } = await generateKey("device");
  const enrolled = await fetch(`${url}/v1/enroll`, {
    method: "POST",
    body: JSON.stringify({ nodeId, region, publicKey: toBase64Url(key.publicKey), token }),
  });
  if (enrolled.status !== 200) throw new Error(`enrol ${nodeId}: HTTP ${enrolled.status}`);
  await enrolled.body?.cancel();
  return key;
}

/** A socket on `host` that signs each message with the key of the node it names. */
export function deviceSocket(
  host: string,
  keys: DeviceKeys,
  options: ControlSocketOptions = {},
): ControlSocket {
  return ControlSocket.open(host, 0, {
    ...options,
    signer: (m: ControlMessage) => "nodeId" in m ? keys.get(m.nodeId)?.privateKey : undefined,
  });
}

/** A test's stand-in control plane: its key, and a socket on `host` that signs with it. */
export async function fakeControlPlane(
  host: string,
  port = 0,
): Promise<{ key: SigningKey; socket: ControlSocket }> {
  const { key } = await generateKey("controlplane");
  const socket = ControlSocket.open(host, port, { signer: () => key.privateKey });
  return { key, socket };
}

/** Leaves `dataDir` as an agent enrolled with a control plane of key `cpKey` would have it. */
export async function pinControlPlane(
  dataDir: string,
  nodeId: string,
  cpKey: SigningKey,
): Promise<void> {
  await Deno.mkdir(dataDir, { recursive: true });
  await writeEnrollment(dataDir, {
    format: 1,
    nodeId,
    controlPlaneKey: toBase64Url(cpKey.publicKey),
    controlPlane: "127.0.0.1:7402",
  });
}
