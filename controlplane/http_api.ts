/**
 * The control plane's HTTP API for operators (and the `publish`, `rollout`
 * and `status` commands). JSON in and out, except a version's file, uploaded
 * as the raw request body. Errors are `{ "error": "..." }` with a 4xx status
 * for bad input and 500 for bugs.
 *
 * | method | path                                   | body              | answer                          |
 * |--------|----------------------------------------|-------------------|---------------------------------|
 * | GET    | /health                                |                   | `{ ok, boot }`                  |
 * | PUT    | /v1/models/{model}/versions/{version}  | the file's bytes  | `{ version, patches }` (201/200) |
 * | GET    | /v1/models                             |                   | `{ versions }`                  |
 * | POST   | /v1/rollouts                           | `{ model, version, region?, strategy?, canary?, batch?, maxFailures? }` | the rollout (201) |
 * | GET    | /v1/rollouts                           |                   | `{ rollouts }`                  |
 * | GET    | /v1/rollouts/{id}                      |                   | the rollout with its agents and elections |
 * | POST   | /v1/rollouts/{id}/{pause,resume,abort} |                   | the rollout (409 if it cannot)  |
 * | POST   | /v1/rollback                           | `{ model, to? }`  | the rollback's rollout (201)    |
 * | GET    | /v1/agents, /v1/devices                |                   | `{ agents }`                    |
 * | GET    | /v1/devices/{id}/history               |                   | `{ history }`                   |
 * | GET    | /v1/status                             |                   | the whole status report         |
 *
 * @module
 */

import { VerificationError } from "../kernel/errors.ts";
import { ConflictError, type ControlPlane, NotFoundError } from "./control_plane.ts";
import { DEFAULT_PLAN, type RolloutPlan } from "./state_db.ts";

/** Largest JSON request body accepted. */
export const MAX_JSON_BODY = 64 * 1024;

/** Names of models, versions and regions: what the control messages can carry. */
const NAME = /^[A-Za-z0-9._-]{1,128}$/;

class BadRequest extends Error {
  readonly status: number;
  constructor(message: string, status = 400) {
    super(message);
    this.status = status;
  }
}

/** The request handler for `Deno.serve`. */
export function apiHandler(cp: ControlPlane): (request: Request) => Promise<Response> {
  return async (request) => {
    try {
      return await route(cp, request);
    } catch (err) {
      if (err instanceof BadRequest) return json({ error: err.message }, err.status);
      if (err instanceof NotFoundError) return json({ error: err.message }, 404);
      if (err instanceof ConflictError) return json({ error: err.message }, 409);
      if (err instanceof VerificationError) return json({ error: err.message }, 422);
      const message = err instanceof Error ? err.message : String(err);
      return json({ error: `internal error: ${message}` }, 500);
    }
  };
}

async function route(cp: ControlPlane, request: Request): Promise<Response> {
  const url = new URL(request.url);
  const parts = url.pathname.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const method = request.method;
  const path = `/${parts.join("/")}`;
  if (path === "/health" && method === "GET") return json({ ok: true, boot: cp.boot });
  if (parts[0] !== "v1") throw new BadRequest(`no such endpoint: ${method} ${url.pathname}`, 404);
  if (parts[1] === "models" && parts.length === 5 && parts[3] === "versions") {
    if (method !== "PUT") throw methodNotAllowed(method, url.pathname);
    const model = name(parts[2], "model");
    const version = name(parts[4], "version");
    if (!request.body) throw new BadRequest("the request body must be the model file");
    const existed = cp.db.version(model, version) !== undefined;
    const result = await cp.publish(model, version, request.body);
    return json(result, existed ? 200 : 201);
  }
  if (path === "/v1/models") {
    if (method !== "GET") throw methodNotAllowed(method, url.pathname);
    return json({ versions: cp.db.versions() });
  }
  if (path === "/v1/rollouts") {
    if (method === "GET") return json({ rollouts: cp.db.rollouts() });
    if (method !== "POST") throw methodNotAllowed(method, url.pathname);
    const body = await jsonBody(request);
    const model = name(body.model, "model");
    const version = name(body.version, "version");
    const region = body.region === undefined || body.region === null
      ? null
      : name(body.region, "region");
    if (!cp.db.versions().some((v) => v.model === model)) {
      throw new NotFoundError(`unknown model "${model}"`);
    }
    return json(cp.rollout(model, version, region, planOf(body)), 201);
  }
  if (parts[1] === "rollouts" && parts.length === 4) {
    if (method !== "POST") throw methodNotAllowed(method, url.pathname);
    const action = parts[3];
    if (action !== "pause" && action !== "resume" && action !== "abort") {
      throw new BadRequest(`no such rollout action "${action}" (pause, resume or abort)`, 404);
    }
    return json(cp.control(rolloutId(parts[2]), action));
  }
  if (path === "/v1/rollback") {
    if (method !== "POST") throw methodNotAllowed(method, url.pathname);
    const body = await jsonBody(request);
    const model = name(body.model, "model");
    if (!cp.db.versions().some((v) => v.model === model)) {
      throw new NotFoundError(`unknown model "${model}"`);
    }
    const to = body.to === undefined || body.to === null ? undefined : name(body.to, "to");
    return json(cp.rollback(model, to), 201);
  }
  if (parts[1] === "devices" && parts.length === 4 && parts[3] === "history") {
    if (method !== "GET") throw methodNotAllowed(method, url.pathname);
    if (!cp.agents.has(parts[2])) throw new NotFoundError(`unknown device "${parts[2]}"`);
    return json({ history: cp.db.history(parts[2]) });
  }
  if (parts[1] === "rollouts" && parts.length === 3) {
    if (method !== "GET") throw methodNotAllowed(method, url.pathname);
    const id = rolloutId(parts[2]);
    const rollout = cp.status().rollouts.find((r) => r.id === id);
    if (!rollout) throw new NotFoundError(`unknown rollout "${parts[2]}"`);
    return json(rollout);
  }
  if ((path === "/v1/agents" || path === "/v1/devices") && method === "GET") {
    return json({ agents: cp.status().agents });
  }
  if (path === "/v1/status" && method === "GET") return json(cp.status());
  throw new BadRequest(`no such endpoint: ${method} ${url.pathname}`, 404);
}

function rolloutId(text: string): number {
  if (!/^[0-9]{1,15}$/.test(text)) throw new NotFoundError(`unknown rollout "${text}"`);
  return Number(text);
}

/** The rollout plan from a request body, defaults where absent; 400 for anything off. */
export function planOf(body: Record<string, unknown>): RolloutPlan {
  const strategy = body.strategy ?? "all";
  if (strategy !== "all" && strategy !== "canary" && strategy !== "rolling") {
    throw new BadRequest(
      `strategy must be "all", "canary" or "rolling" (got ${JSON.stringify(strategy)})`,
    );
  }
  let canary = 1;
  let canaryPercent = false;
  if (body.canary !== undefined) {
    const m = /^([0-9]{1,9})(%?)$/.exec(String(body.canary));
    if (!m || Number(m[1]) < 1 || (m[2] === "%" && Number(m[1]) > 100)) {
      throw new BadRequest(
        `canary must be a count (1 or more) or a percentage like 10% (got ${
          JSON.stringify(body.canary)
        })`,
      );
    }
    canary = Number(m[1]);
    canaryPercent = m[2] === "%";
  }
  const batch = body.batch ?? 1;
  if (!Number.isSafeInteger(batch) || (batch as number) < 1) {
    throw new BadRequest(
      `batch must be a whole number of at least 1 (got ${JSON.stringify(batch)})`,
    );
  }
  let maxFailures = DEFAULT_PLAN.maxFailures;
  if (body.maxFailures !== undefined) {
    const m = /^([0-9]{1,3}(?:\.[0-9]+)?)%$/.exec(String(body.maxFailures));
    if (!m || Number(m[1]) > 100) {
      throw new BadRequest(
        `maxFailures must be a percentage like 20% (got ${JSON.stringify(body.maxFailures)})`,
      );
    }
    maxFailures = Number(m[1]) / 100;
  }
  return { strategy, canary, canaryPercent, batch: batch as number, maxFailures, rollback: false };
}

function methodNotAllowed(method: string, path: string): BadRequest {
  return new BadRequest(`method ${method} not allowed on ${path}`, 405);
}

function name(value: unknown, what: string): string {
  if (typeof value !== "string" || !NAME.test(value)) {
    throw new BadRequest(
      `${what} must be 1-128 characters of letters, digits, ".", "_" or "-" (got ${
        JSON.stringify(value)
      })`,
    );
  }
  return value;
}

async function jsonBody(request: Request): Promise<Record<string, unknown>> {
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > MAX_JSON_BODY) {
    throw new BadRequest(`request body over ${MAX_JSON_BODY} bytes`, 413);
  }
  const text = await request.text();
  if (text.length > MAX_JSON_BODY) {
    throw new BadRequest(`request body over ${MAX_JSON_BODY} bytes`, 413);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BadRequest("the request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BadRequest("the request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}
