/**
 * An in-process control plane and its HTTP API for tests: `withApi` starts a
 * ControlPlane on a temporary data directory (ports chosen by the OS), gives a
 * token of one role to every call, and closes everything afterwards. Tests of
 * refused tokens (tests/auth_test.ts) make their own.
 *
 * @module
 */

import { createToken } from "../../controlplane/auth.ts";
import { ControlPlane, type ControlPlaneOptions } from "../../controlplane/control_plane.ts";
import { apiHandler } from "../../controlplane/http_api.ts";
import type { Role } from "../../controlplane/state_store.ts";
import { withTempDir } from "../helpers.ts";

/** What a test gets: the control plane, its data directory and a caller of its API. */
export interface Api {
  readonly cp: ControlPlane;
  readonly dir: string;
  readonly call: (method: string, path: string, body?: BodyInit) => Promise<Response>;
}

/** How to start it: the callers' role (default admin) and control plane options. */
export interface ApiOptions {
  readonly role?: Role;
  readonly controlPlane?: Partial<ControlPlaneOptions>;
}

/** Runs `fn` against a fresh in-process control plane whose every call carries a `role` token. */
export async function withApi(options: ApiOptions, fn: (api: Api) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
      ...options.controlPlane,
    });
    const handler = apiHandler(cp);
    const role = options.role ?? "admin";
    const { token } = await createToken(cp.stateStore, role, role, 0);
    const headers = { authorization: `Bearer ${token}` };
    try {
      await fn({
        cp,
        dir,
        call: (method, path, body) =>
          handler(new Request(`http://127.0.0.1${path}`, { method, body, headers })),
      });
    } finally {
      await cp.close();
    }
  });
}
