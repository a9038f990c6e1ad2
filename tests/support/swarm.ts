/**
 * Swarm fixtures for the blob tests (issue 15): a stand-in control-plane key,
 * device credentials with a ticket of that key for a blob, the agent-side
 * authorizer that admits them, and blob servers on loopback that hold a blob
 * whole (in a BlobStore) or serve what a test shares with them.
 *
 * @module
 */

import { generateKey, type SigningKey } from "../../release/keys.ts";
import {
  type BlobCredentials,
  signTicket,
  TICKET_TTL_MS,
  ticketHolders,
} from "../../transfer/blob_auth.ts";
import type { BlobSource } from "../../transfer/blob_client.ts";
import { BlobServer, type BlobServerOptions } from "../../transfer/blob_server.ts";
import { BlobStore } from "../../transfer/blob_store.ts";

/** A control plane's key, and what its devices need to ask agents' servers for blobs. */
export interface SwarmIdentity {
  readonly controlPlane: SigningKey;
  /** Credentials of device `nodeId` with a ticket for `digest`. */
  credentials(nodeId: string, digest: Uint8Array): Promise<BlobCredentials>;
  /** Server options that admit ticket holders of this control plane (an agent's server). */
  readonly serverAuth: Pick<BlobServerOptions, "authorize">;
}

/** A fresh control-plane key and its ticket machinery. */
export async function swarmIdentity(): Promise<SwarmIdentity> {
  const { key: controlPlane } = await generateKey("controlplane");
  return {
    controlPlane,
    async credentials(nodeId, digest) {
      const { key } = await generateKey("device");
      const ticket = await signTicket({
        manifestId: "m1",
        digest,
        nodeId,
        publicKey: key.publicKey,
        expires: Date.now() + TICKET_TTL_MS,
      }, controlPlane.privateKey);
      return { nodeId, privateKey: key.privateKey, ticket };
    },
    serverAuth: { authorize: ticketHolders(() => controlPlane.publicKey) },
  };
}

/** A BlobStore in `dir` holding `blob` (written through `dir.src`). */
export async function storeWith(dir: string, blob: Uint8Array): Promise<BlobStore> {
  const store = await BlobStore.open(dir);
  await Deno.writeFile(`${dir}.src`, blob);
  await store.importFile(`${dir}.src`);
  return store;
}

/** A source naming `server`. */
export function sourceOf(server: BlobServer, label: string): BlobSource {
  return { hostname: server.hostname, port: server.port, label };
}
