/**
 * The control plane's HTTP API for operators (and the `publish`, `rollout`
 * and `status` commands). JSON in and out, except a version's file, uploaded
 * as the raw request body. Errors are `{ "error": "..." }` with a 4xx status
 * for bad input and 500 for bugs: every `PoolboyError` answers with its own
 * `httpStatus`, mapped in one place (`apiHandler`). Endpoints are a route
 * table: an unknown path is 404, a known path with another method 405.
 *
 * Bodies are counted while they stream (`http_server.ts` hands them over as
 * streams): JSON and signed documents past 64 KiB, and uploads past
 * `ApiLimits.maxUploadBytes`, are 413 without reading the rest. A path with a
 * malformed percent-escape is 400, whoever asks.
 *
 * Every endpoint but `GET /health` needs `Authorization: Bearer TOKEN`
 * (auth.ts): no, a malformed, unknown or revoked token is 401, a role below
 * the route's (the `role` column) 403, before anything is read or changed.
 * Every call but a GET is written to the audit log with its answer, and so is
 * every 401 and 403.
 *
 * | method | path                                   | role     | body              | answer                          |
 * |--------|----------------------------------------|----------|-------------------|---------------------------------|
 * | GET    | /health                                | none     |                   | `{ ok, boot }`                  |
 * | PUT    | /v1/models/{model}/versions/{version}  | deployer | the file's bytes  | `{ version, patches }` (201/200) |
 * | GET    | /v1/models                             | viewer   |                   | `{ versions }`                  |
 * | PUT    | /v1/delegation                         | deployer | delegation JSON   | `{ digest, version, created }` (201/200; 409 older or other bytes) |
 * | GET    | /v1/delegation                         | viewer   |                   | the stored delegation document  |
 * | PUT    | /v1/models/{model}/versions/{version}/release | deployer | manifest JSON | `{ digest, counter, created }` (201/200; 409 not this version's) |
 * | GET    | /v1/models/{model}/versions/{version}/release | viewer |        | the version's current manifest  |
 * | GET    | /v1/models/{model}/releases            | viewer   |                   | `{ model, highestCounter }`     |
 * | POST   | /v1/rollouts                           | deployer | `{ model, version, region?, strategy?, canary?, batch?, maxFailures? }` | the rollout (201) |
 * | GET    | /v1/rollouts                           | viewer   |                   | `{ rollouts }`                  |
 * | GET    | /v1/rollouts/{id}                      | viewer   |                   | the rollout with its agents and elections |
 * | GET    | /v1/rollouts/{id}/devices?offset=N&limit=M | viewer |                 | `{ rolloutId, agents, total, offset, limit }`: its agents by node id (N ≥ 0, default 0; M: 1-1000, default 100) |
 * | POST   | /v1/rollouts/{id}/{pause,resume,abort} | deployer |                   | the rollout (409 if it cannot)  |
 * | POST   | /v1/rollback                           | deployer | `{ model, to? }`  | the rollback's rollout (201)    |
 * | GET    | /v1/agents, /v1/devices                | viewer   |                   | `{ agents }` (every device; /v1/devices also `pending`) |
 * | GET    | /v1/devices?offset=N&limit=M           | viewer   |                   | `{ agents, total, offset, limit }`: one page, by node id (N ≥ 0, default 0; M: 1-1000, default 100) |
 * | GET    | /v1/devices/{id}/history               | viewer   |                   | `{ history }`                   |
 * | DELETE | /v1/devices/{id}                       | admin    |                   | `{ nodeId, removed }` (404 unknown) |
 * | GET    | /v1/status                             | viewer   |                   | the whole status report (also `?view=full`) |
 * | GET    | /v1/status?view=summary                | viewer   |                   | the summary: the report with counts instead of device lists (`StatusSummary`) |
 * | POST   | /v1/enrollment-tokens                  | admin    | `{ uses?, expiresMs? }` | `{ token, uses, expires }` (201; the token is shown once) |
 * | POST   | /v1/enroll                             | none     | `{ nodeId, region, publicKey, token? }` (≤ 4 KiB) | `{ nodeId, controlPlaneKey, mac }` (200), `{ pending: true }` (202), 401/403 refused token, 409 enrolled with another key |
 * | POST   | /v1/devices/{id}/accept                | admin    | `{ keyId }`       | `{ nodeId, accepted }` (404 not pending, 409 another key) |
 * | GET    | /metrics                               | viewer   |                   | Prometheus text format 0.0.4 (metrics.ts, docs/metrics.md) |
 * | GET    | /v1/audit?limit=N                      | admin    |                   | `{ entries }`, newest first (N: 1-1000, default 100) |
 * | GET, POST | /ui, /ui/...                        | a session (viewer) | | the web dashboard (ui/routes.ts: its own table, login and cookie) |
 *
 * @module
 */

import {
  InvalidArgumentError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
  PoolboyError,
} from "../kernel/errors.ts";
import { boundedBody } from "./http_body.ts";
import type {
  AuditEntry,
  AuditList,
  DeviceAccepted,
  DeviceList,
  DevicePage,
  DeviceRemoved,
  DocumentStored,
  EnrollmentTokenInfo,
  ErrorBody,
  HealthInfo,
  HistoryList,
  PublishResult,
  ReleaseCounters,
  RolloutAgentPage,
  RolloutInfo,
  RolloutList,
  RolloutReport,
  VersionList,
} from "./api_types.ts";
import { isName, NAME_RULE } from "../kernel/names.ts";
import { MAX_DOCUMENT_BYTES } from "../release/documents.ts";
import { MAX_ENROLL_BODY } from "../release/enrollment.ts";
import { auditEntry, authenticate } from "./auth.ts";
import { renderMetrics } from "./metrics.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../kernel/prometheus.ts";
import type { ControlPlane } from "./control_plane.ts";
import { historyEntry, rolloutInfo, versionInfo } from "./status_report.ts";
import { isUiPath, uiHandler } from "./ui/routes.ts";
import { DEFAULT_PLAN, type Role, type RolloutPlan, type TokenRecord } from "./state_store.ts";

/** Largest JSON request body accepted. */
export const MAX_JSON_BODY = 64 * 1024;

/** An enrolment token works this long unless the request says otherwise (1 hour). */
export const DEFAULT_ENROLLMENT_EXPIRY_MS = 3600 * 1000;

/** Largest upload (a version's file) accepted by default: `--max-upload`. */
export const DEFAULT_MAX_UPLOAD = 64 * 1024 ** 3;

/** Limits of the API's request bodies (bodies are counted while they stream). */
export interface ApiLimits {
  /** Largest version file a PUT may upload; over it → 413 and nothing stored. */
  readonly maxUploadBytes: number;
}

/** A handler's answer: a JSON value and its status, or a stored JSON document's exact bytes. */
type Answer =
  | { readonly body: unknown; readonly status?: number; readonly document?: undefined }
  | {
    readonly document: Uint8Array;
    /** Default `application/json`. */
    readonly contentType?: string;
    readonly body?: undefined;
    readonly status?: undefined;
  };

/** What a call was about, for the audit log; a handler may set it once it has read the body. */
interface AuditNote {
  target: string | null;
}

/**
 * One endpoint: `pattern` matches the path's segments; `:name` segments are
 * parameters. `role`: the least role a caller's token needs (null: no token).
 */
interface Route {
  readonly method: string;
  readonly pattern: string;
  readonly role: Role | null;
  readonly handler: (
    cp: ControlPlane,
    params: Record<string, string>,
    request: Request,
    note: AuditNote,
    limits: ApiLimits,
  ) => Promise<Answer>;
}

/** The audit log's default and largest page. */
export const AUDIT_DEFAULT_LIMIT = 100;
export const AUDIT_MAX_LIMIT = 1000;

/** Every endpoint (the table above). */
const ROUTES: readonly Route[] = [
  {
    method: "GET",
    pattern: "/health",
    role: null,
    handler: (cp) => answer<HealthInfo>({ ok: true, boot: cp.boot }),
  },
  {
    method: "PUT",
    pattern: "/v1/models/:model/versions/:version",
    role: "deployer",
    handler: async (cp, params, request, _note, limits) => {
      const model = name(params.model, "model");
      const version = name(params.version, "version");
      if (!request.body) throw new InvalidArgumentError("the request body must be the model file");
      const outcome = await cp.publish(model, version, boundedUpload(request, limits));
      const result: PublishResult = {
        version: versionInfo(outcome.version, cp.release(model, version)),
        patches: outcome.patches,
      };
      return { body: result, status: outcome.created ? 201 : 200 };
    },
  },
  {
    method: "GET",
    pattern: "/v1/models",
    role: "viewer",
    handler: async (cp) =>
      answer<VersionList>({
        versions: (await cp.versions()).map((v) => versionInfo(v, cp.release(v.model, v.version))),
      }),
  },
  {
    method: "PUT",
    pattern: "/v1/delegation",
    role: "deployer",
    handler: async (cp, _params, request) => {
      const { record, created } = await cp.putDelegation(await documentBody(request));
      return answer<DocumentStored>(
        { digest: record.digest, version: record.version, created },
        created ? 201 : 200,
      );
    },
  },
  {
    method: "GET",
    pattern: "/v1/delegation",
    role: "viewer",
    handler: async (cp) => ({ document: (await cp.delegationDocument()).bytes }),
  },
  {
    method: "PUT",
    pattern: "/v1/models/:model/versions/:version/release",
    role: "deployer",
    handler: async (cp, params, request) => {
      const model = name(params.model, "model");
      const version = name(params.version, "version");
      const bytes = await documentBody(request);
      const { record, created } = await cp.putRelease(model, version, bytes);
      return answer<DocumentStored>(
        { digest: record.digest, counter: record.counter, created },
        created ? 201 : 200,
      );
    },
  },
  {
    method: "GET",
    pattern: "/v1/models/:model/versions/:version/release",
    role: "viewer",
    handler: async (cp, params) => {
      const model = name(params.model, "model");
      const version = name(params.version, "version");
      return { document: (await cp.releaseDocument(model, version)).bytes };
    },
  },
  {
    method: "GET",
    pattern: "/v1/models/:model/releases",
    role: "viewer",
    handler: (cp, params) => {
      const model = name(params.model, "model");
      return answer<ReleaseCounters>({ model, highestCounter: cp.highestCounter(model) });
    },
  },
  {
    method: "GET",
    pattern: "/v1/rollouts",
    role: "viewer",
    handler: async (cp) =>
      answer<RolloutList>({ rollouts: (await cp.rollouts()).map(rolloutInfo) }),
  },
  {
    method: "POST",
    pattern: "/v1/rollouts",
    role: "deployer",
    handler: async (cp, _params, request, note) => {
      const body = await jsonBody(request);
      const model = name(body.model, "model");
      const version = name(body.version, "version");
      const region = body.region === undefined || body.region === null
        ? null
        : name(body.region, "region");
      note.target = `${model} ${version}${region === null ? "" : ` in ${region}`}`;
      await knownModel(cp, model);
      const rollout = await cp.rollout(model, version, region, planOf(body));
      note.target = `rollout ${rollout.id}: ${note.target}`;
      return answer<RolloutInfo>(rolloutInfo(rollout), 201);
    },
  },
  {
    method: "GET",
    pattern: "/v1/rollouts/:id",
    role: "viewer",
    handler: async (cp, params) => {
      const id = rolloutId(params.id);
      const rollout = (await cp.apiStatus()).report.rollouts.find((r) => r.id === id);
      if (!rollout) throw new NotFoundError(`unknown rollout "${params.id}"`);
      return answer<RolloutReport>(rollout);
    },
  },
  {
    method: "GET",
    pattern: "/v1/rollouts/:id/devices",
    role: "viewer",
    handler: async (cp, params, request) => {
      const id = rolloutId(params.id);
      const { offset, limit } = pageOf(new URL(request.url).searchParams);
      return answer<RolloutAgentPage>(await cp.rolloutAgentPage(id, offset, limit));
    },
  },
  {
    method: "POST",
    pattern: "/v1/rollouts/:id/:action",
    role: "deployer",
    handler: async (cp, params) => {
      const action = params.action;
      if (action !== "pause" && action !== "resume" && action !== "abort") {
        throw new NotFoundError(`no such rollout action "${action}" (pause, resume or abort)`);
      }
      return answer<RolloutInfo>(rolloutInfo(await cp.control(rolloutId(params.id), action)));
    },
  },
  {
    method: "POST",
    pattern: "/v1/rollback",
    role: "deployer",
    handler: async (cp, _params, request, note) => {
      const body = await jsonBody(request);
      const model = name(body.model, "model");
      note.target = model;
      await knownModel(cp, model);
      const to = body.to === undefined || body.to === null ? undefined : name(body.to, "to");
      const rollout = await cp.rollback(model, to);
      note.target = `rollout ${rollout.id}: ${model} ${rollout.version}`;
      return answer<RolloutInfo>(rolloutInfo(rollout), 201);
    },
  },
  {
    method: "GET",
    pattern: "/v1/devices/:id/history",
    role: "viewer",
    handler: async (cp, params) => {
      if (!cp.agents.has(params.id)) throw new NotFoundError(`unknown device "${params.id}"`);
      return answer<HistoryList>({ history: (await cp.history(params.id)).map(historyEntry) });
    },
  },
  {
    method: "DELETE",
    pattern: "/v1/devices/:id",
    role: "admin",
    handler: async (cp, params) => {
      await cp.removeDevice(params.id);
      return answer<DeviceRemoved>({ nodeId: params.id, removed: true });
    },
  },
  {
    method: "POST",
    pattern: "/v1/enrollment-tokens",
    role: "admin",
    handler: async (cp, _params, request, note) => {
      const body = await jsonBody(request);
      const uses = body.uses ?? 1;
      const expiresMs = body.expiresMs ?? DEFAULT_ENROLLMENT_EXPIRY_MS;
      if (typeof uses !== "number" || typeof expiresMs !== "number") {
        throw new InvalidArgumentError("uses and expiresMs must be numbers");
      }
      const made = await cp.enrollment.createToken(uses, expiresMs, Date.now());
      note.target = `enrolment token (${made.uses} uses)`;
      return answer<EnrollmentTokenInfo>(made, 201);
    },
  },
  {
    method: "POST",
    pattern: "/v1/enroll",
    role: null,
    handler: async (cp, _params, request, note) => {
      const body = await jsonBody(request, MAX_ENROLL_BODY);
      if (typeof body.nodeId === "string") note.target = `device ${body.nodeId.slice(0, 128)}`;
      const outcome = await cp.enrollment.enroll(body, Date.now());
      if (outcome.kind === "pending") {
        cp.logLine(`device ${String(body.nodeId)} asks to enrol: pending an admin's accept`);
        return answer({ pending: true }, 202);
      }
      cp.logLine(`device ${outcome.answer.nodeId} enrolled`);
      return answer(outcome.answer);
    },
  },
  {
    method: "POST",
    pattern: "/v1/devices/:id/accept",
    role: "admin",
    handler: async (cp, params, request) => {
      const body = await jsonBody(request);
      await cp.enrollment.accept(params.id, body.keyId, Date.now());
      return answer<DeviceAccepted>({ nodeId: params.id, accepted: true });
    },
  },
  {
    method: "GET",
    pattern: "/v1/agents",
    role: "viewer",
    handler: async (cp) => answer<DeviceList>({ agents: (await cp.apiStatus()).report.agents }),
  },
  {
    method: "GET",
    pattern: "/v1/devices",
    role: "viewer",
    handler: async (cp, _params, request) => {
      const query = new URL(request.url).searchParams;
      if (query.has("offset") || query.has("limit")) {
        const { offset, limit } = pageOf(query);
        return answer<DevicePage>(cp.devicePage(offset, limit));
      }
      return answer<DeviceList>({
        agents: (await cp.apiStatus()).report.agents,
        pending: cp.enrollment.pending(Date.now()).map((p) => ({
          nodeId: p.nodeId,
          region: p.region,
          keyId: p.keyId,
          requested: p.requested,
        })),
      });
    },
  },
  {
    method: "GET",
    pattern: "/v1/status",
    role: "viewer",
    // The report's JSON as built (status_cache.ts): the same text `json` would make of it.
    handler: async (cp, _params, request) => {
      const view = new URL(request.url).searchParams.get("view");
      if (view === "summary") return { document: (await cp.apiSummary()).bytes };
      if (view !== null && view !== "full") {
        throw new InvalidArgumentError(
          `view must be "summary" or "full" (got ${JSON.stringify(view.slice(0, 20))})`,
        );
      }
      return { document: (await cp.apiStatus()).bytes };
    },
  },
  {
    method: "GET",
    pattern: "/metrics",
    role: "viewer",
    handler: (cp) =>
      Promise.resolve({
        document: new TextEncoder().encode(renderMetrics(cp.metrics())),
        contentType: PROMETHEUS_CONTENT_TYPE,
      }),
  },
  {
    method: "GET",
    pattern: "/v1/audit",
    role: "admin",
    handler: async (cp, _params, request) => {
      const limit = auditLimit(new URL(request.url).searchParams.get("limit"));
      const entries = (await cp.stateStore.audit(limit)).map((a): AuditEntry => ({
        at: a.at,
        token: a.token,
        role: a.role,
        action: a.action,
        target: a.target,
        status: a.status,
        reason: a.reason,
      }));
      return answer<AuditList>({ entries });
    },
  },
];

/** Every endpoint's method, path pattern and the role it needs (null: none), as the table says. */
export const ENDPOINTS: readonly Pick<Route, "method" | "pattern" | "role">[] = ROUTES.map((
  { method, pattern, role },
) => ({ method, pattern, role }));

/** The request handler (served by `http_server.ts`; `limits`: defaults where absent). */
export function apiHandler(
  cp: ControlPlane,
  limits: Partial<ApiLimits> = {},
): (request: Request) => Promise<Response> {
  const bodyLimits: ApiLimits = { maxUploadBytes: limits.maxUploadBytes ?? DEFAULT_MAX_UPLOAD };
  const api = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const action = `${request.method} ${url.pathname}`;
    const found = findRoute(request.method, url.pathname);
    const note: AuditNote = {
      target: found.route ? defaultTarget(found.route.pattern, found.params) : null,
    };
    let caller: TokenRecord | null = null;
    let refused = false;
    let response: Response;
    let reason = "ok";
    try {
      // A path that cannot be decoded is malformed whoever asks: 400 before the token.
      if (found.route?.role !== null && !found.malformed) {
        // Before anything is read or changed: who is calling, and may they?
        // An unknown path or method needs a valid token too (anonymous callers learn nothing).
        const need = found.route?.role ?? "viewer";
        const decision = await authenticate(
          cp.stateStore,
          request.headers.get("authorization"),
          need,
          action,
        );
        caller = decision.caller;
        if (!decision.ok) {
          refused = true;
          reason = decision.reason;
          throw decision.error;
        }
      }
      if (found.route === undefined) throw found.error;
      const answered = await found.route.handler(cp, found.params, request, note, bodyLimits);
      // Whatever an operator's call changed shows in the next status report.
      if (request.method !== "GET") cp.invalidateStatus();
      if (answered.document !== undefined) {
        // A signed document is answered byte for byte: its digest is what devices check.
        response = new Response(new Uint8Array(answered.document), {
          status: 200,
          headers: { "content-type": answered.contentType ?? "application/json" },
        });
      } else {
        response = json(answered.body, answered.status);
      }
    } catch (err) {
      // The one place errors become answers: a PoolboyError carries its HTTP status.
      const status = err instanceof PoolboyError ? err.httpStatus : 500;
      const message = err instanceof Error ? err.message : String(err);
      const body: ErrorBody = {
        error: err instanceof PoolboyError && status < 500 ? message : `internal error: ${message}`,
      };
      if (!refused) reason = body.error;
      response = errorJson(body, status);
    }
    if (refused || request.method !== "GET") {
      try {
        await cp.stateStore.addAudit(
          auditEntry(Date.now(), caller, action, note.target, response.status, reason),
        );
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        await response.body?.cancel();
        const body: ErrorBody = {
          error:
            `internal error: cannot write the audit log (answer was ${response.status}): ${message}`,
        };
        return errorJson(body, 500);
      }
    }
    return response;
  };
  // The web dashboard (ui/routes.ts): its pages read through this same API with the session's token.
  const ui = uiHandler({ stateStore: cp.stateStore, api });
  return (request) => isUiPath(new URL(request.url).pathname) ? ui(request) : api(request);
}

/** The route of a request, or the 404/405 error it gets. */
type Found =
  | {
    readonly route: Route;
    readonly params: Record<string, string>;
    readonly error?: undefined;
    readonly malformed?: undefined;
  }
  | {
    readonly route: undefined;
    readonly params?: undefined;
    readonly error: PoolboyError;
    readonly malformed: boolean;
  };

function findRoute(method: string, pathname: string): Found {
  let parts: string[];
  try {
    parts = pathname.split("/").filter((p) => p !== "").map(decodeURIComponent);
  } catch {
    return {
      route: undefined,
      error: new InvalidArgumentError(`malformed percent-escape in the path ${pathname}`),
      malformed: true,
    };
  }
  let pathExists = false;
  for (const r of ROUTES) {
    const params = match(r.pattern, parts);
    if (params === undefined) continue;
    if (r.method === method) return { route: r, params };
    pathExists = true;
  }
  if (pathExists) {
    return {
      route: undefined,
      error: new MethodNotAllowedError(`method ${method} not allowed on ${pathname}`),
      malformed: false,
    };
  }
  return {
    route: undefined,
    error: new NotFoundError(`no such endpoint: ${method} ${pathname}`),
    malformed: false,
  };
}

/** What a call is about, from its path's parameters (handlers may say more). */
function defaultTarget(pattern: string, params: Record<string, string>): string | null {
  if (params.model !== undefined) {
    return params.version === undefined ? params.model : `${params.model} ${params.version}`;
  }
  if (params.id !== undefined) {
    return `${pattern.startsWith("/v1/devices/") ? "device" : "rollout"} ${params.id}`;
  }
  if (pattern === "/v1/delegation") return "delegation";
  return null;
}

/** `?limit=N` of the audit log: 1 to `AUDIT_MAX_LIMIT`, default `AUDIT_DEFAULT_LIMIT`. */
function auditLimit(text: string | null): number {
  if (text === null) return AUDIT_DEFAULT_LIMIT;
  const n = /^[0-9]{1,7}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= AUDIT_MAX_LIMIT)) {
    throw new InvalidArgumentError(
      `limit must be a whole number from 1 to ${AUDIT_MAX_LIMIT} (got ${
        JSON.stringify(text.slice(0, 20))
      })`,
    );
  }
  return n;
}

/** The pages of device lists: default and largest `limit`. */
export const PAGE_DEFAULT_LIMIT = 100;
export const PAGE_MAX_LIMIT = 1000;

/** The largest `offset` accepted (no fleet is bigger). */
const PAGE_MAX_OFFSET = 10_000_000;

/** `?offset=N&limit=M` of a listing: N from 0 (default 0), M from 1 to `PAGE_MAX_LIMIT` (default 100). */
function pageOf(query: URLSearchParams): { offset: number; limit: number } {
  const whole = (key: string, fallback: number, min: number, max: number): number => {
    const text = query.get(key);
    if (text === null) return fallback;
    const n = /^[0-9]{1,8}$/.test(text) ? Number(text) : NaN;
    if (!(n >= min && n <= max)) {
      throw new InvalidArgumentError(
        `${key} must be a whole number from ${min} to ${max} (got ${
          JSON.stringify(text.slice(0, 20))
        })`,
      );
    }
    return n;
  };
  return {
    offset: whole("offset", 0, 0, PAGE_MAX_OFFSET),
    limit: whole("limit", PAGE_DEFAULT_LIMIT, 1, PAGE_MAX_LIMIT),
  };
}

/** The parameters of `pattern` in `parts`, or undefined if it does not match. */
function match(pattern: string, parts: readonly string[]): Record<string, string> | undefined {
  const segments = pattern.split("/").filter((p) => p !== "");
  if (segments.length !== parts.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    if (segments[i].startsWith(":")) params[segments[i].slice(1)] = parts[i];
    else if (segments[i] !== parts[i]) return undefined;
  }
  return params;
}

function answer<T>(body: T, status = 200): Promise<Answer> {
  return Promise.resolve({ body, status });
}

async function knownModel(cp: ControlPlane, model: string): Promise<void> {
  if (!(await cp.versions()).some((v) => v.model === model)) {
    throw new NotFoundError(`unknown model "${model}"`);
  }
}

function rolloutId(text: string): number {
  if (!/^[0-9]{1,15}$/.test(text)) throw new NotFoundError(`unknown rollout "${text}"`);
  return Number(text);
}

/** The rollout plan from a request body, defaults where absent; 400 for anything off. */
export function planOf(body: Record<string, unknown>): RolloutPlan {
  const strategy = body.strategy ?? "all";
  if (strategy !== "all" && strategy !== "canary" && strategy !== "rolling") {
    throw new InvalidArgumentError(
      `strategy must be "all", "canary" or "rolling" (got ${JSON.stringify(strategy)})`,
    );
  }
  let canary = 1;
  let canaryPercent = false;
  if (body.canary !== undefined) {
    const m = /^([0-9]{1,9})(%?)$/.exec(String(body.canary));
    if (!m || Number(m[1]) < 1 || (m[2] === "%" && Number(m[1]) > 100)) {
      throw new InvalidArgumentError(
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
    throw new InvalidArgumentError(
      `batch must be a whole number of at least 1 (got ${JSON.stringify(batch)})`,
    );
  }
  let maxFailures = DEFAULT_PLAN.maxFailures;
  if (body.maxFailures !== undefined) {
    const m = /^([0-9]{1,3}(?:\.[0-9]+)?)%$/.exec(String(body.maxFailures));
    if (!m || Number(m[1]) > 100) {
      throw new InvalidArgumentError(
        `maxFailures must be a percentage like 20% (got ${JSON.stringify(body.maxFailures)})`,
      );
    }
    maxFailures = Number(m[1]) / 100;
  }
  return { strategy, canary, canaryPercent, batch: batch as number, maxFailures, rollback: false };
}

function name(value: unknown, what: string): string {
  // The one name rule (kernel/names.ts), the control messages' and the agent's too.
  if (!isName(value)) {
    throw new InvalidArgumentError(`${what} must be ${NAME_RULE} (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** A signed document's bytes from a request body (at most MAX_DOCUMENT_BYTES). */
async function documentBody(request: Request): Promise<Uint8Array> {
  return await boundedBody(
    request,
    MAX_DOCUMENT_BYTES,
    `a signed document is at most ${MAX_DOCUMENT_BYTES} bytes`,
  );
}

/**
 * An upload's body, cut with 413 (`PayloadTooLargeError`) as soon as it is
 * past `limits.maxUploadBytes` (the blob store then removes its partial file).
 */
function boundedUpload(request: Request, limits: ApiLimits): ReadableStream<Uint8Array> {
  const max = limits.maxUploadBytes;
  const tooLarge = `an upload is at most ${max} bytes (--max-upload)`;
  if (Number(request.headers.get("content-length") ?? "0") > max) {
    throw new PayloadTooLargeError(tooLarge);
  }
  let size = 0;
  return request.body!.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform: (chunk, controller) => {
        size += chunk.length;
        if (size > max) throw new PayloadTooLargeError(tooLarge);
        controller.enqueue(chunk);
      },
    }),
  );
}

async function jsonBody(
  request: Request,
  max = MAX_JSON_BODY,
): Promise<Record<string, unknown>> {
  const bytes = await boundedBody(request, max, `request body over ${max} bytes`);
  const text = new TextDecoder().decode(bytes);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidArgumentError("the request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError("the request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** An error answer: `{ "error": "..." }` on one line. */
function errorJson(body: ErrorBody, status: number): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}
