/**
 * The web dashboard at `/ui`, mounted by `http_api.ts` in front of the JSON
 * API and behind the same tokens (auth.ts; a viewer token suffices):
 *
 * | method | path                 | needs    | answer |
 * |--------|----------------------|----------|--------|
 * | GET    | /ui/login            | nothing  | the login page |
 * | POST   | /ui/login            | a token in the form (`token=pbt_...`, ≤ 4 KiB) | 303 to /ui with the session cookie; 401 the login page again |
 * | GET    | /ui?token=pbt_...    | the token | 303 to /ui (the token out of the URL) with the session cookie, as Jupyter does |
 * | POST   | /ui/logout           | session, its CSRF value in the form, Origin/Referer of this host if sent | 303 to /ui/login, cookie cleared |
 * | GET    | /ui, /ui/rollouts/{id}, /ui/devices/{id} | session | the page's HTML shell (401: the login page) |
 * | GET    | /ui/api/v1/...       | session  | the JSON API's answer to the same GET with the session's token (401 JSON without a session); only the dashboard's reads are let through |
 * | GET    | /ui/static/{file}    | nothing  | app.js, style.css from a fixed table (404 anything else) |
 *
 * The cookie (`poolboy_session`) is HttpOnly, SameSite=Strict, Path=/ui,
 * Max-Age the session's life. It is not marked Secure: the control plane
 * serves plain HTTP (TLS, where wanted, is a proxy in front; such a proxy
 * should add Secure). Every request with a session re-validates its token, so
 * a revoked token's sessions end at their next request. The pages only read;
 * the two forms that post are login (needs no cookie: SameSite=Strict and the
 * token itself are what counts) and logout (checked against the session's
 * CSRF value and, when the browser sends them, Origin or Referer). Every
 * answer carries a Content-Security-Policy of `default-src 'self'` with no
 * inline script or style, `Referrer-Policy: no-referrer` (a `?token=` URL
 * never leaks through a Referer) and `Cache-Control: no-store`.
 *
 * Logins, refused or not, go to the audit log (`POST /ui/login`, `GET /ui?token`).
 *
 * @module
 */

import { InvalidArgumentError, PayloadTooLargeError, PoolboyError } from "../../kernel/errors.ts";
import { auditEntry, authenticate } from "../auth.ts";
import { boundedBody } from "../http_body.ts";
import type { StateStore } from "../state_store.ts";
import { type DashboardPage, dashboardPage, loginPage } from "./pages.ts";
import { type Session, SessionStore } from "./sessions.ts";

/** The session cookie's name. */
export const SESSION_COOKIE = "poolboy_session";

/** Largest login or logout form accepted. */
export const MAX_FORM_BYTES = 4096;

/** The Content-Security-Policy of every dashboard answer. */
export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** The dashboard's static files: a fixed table, nothing else under /ui/static/ is served. */
const STATIC_FILES: Readonly<Record<string, string>> = {
  "app.js": "text/javascript; charset=utf-8",
  "style.css": "text/css; charset=utf-8",
};

/**
 * The JSON API's reads the pages may make through `/ui/api` (GET only; the
 * API checks the token's role as for any caller).
 */
const API_READS: readonly RegExp[] = [
  /^\/v1\/status$/,
  /^\/v1\/models$/,
  /^\/v1\/devices$/,
  /^\/v1\/devices\/[^/]{1,200}\/history$/,
  /^\/v1\/rollouts$/,
  /^\/v1\/rollouts\/[0-9]{1,15}$/,
  /^\/v1\/rollouts\/[0-9]{1,15}\/devices$/,
];

/** What the dashboard needs: the token store, the JSON API itself, and its sessions. */
export interface UiOptions {
  readonly stateStore: StateStore;
  /** The JSON API's handler (`http_api.ts`), which the pages' reads go through. */
  readonly api: (request: Request) => Promise<Response>;
  /** Default: a store with the default limits. */
  readonly sessions?: SessionStore;
  /** The clock (ms since the epoch); default Date.now. */
  readonly now?: () => number;
}

/** Whether `pathname` is the dashboard's (`/ui` or under `/ui/`). */
export function isUiPath(pathname: string): boolean {
  return pathname === "/ui" || pathname.startsWith("/ui/");
}

/** The dashboard's request handler. */
export function uiHandler(options: UiOptions): (request: Request) => Promise<Response> {
  const sessions = options.sessions ?? new SessionStore();
  const now = options.now ?? Date.now;
  const store = options.stateStore;
  const files = new Map<string, Uint8Array<ArrayBuffer>>();

  /** The request's session, its token re-validated now; a session whose token no longer works is ended. */
  async function sessionOf(request: Request): Promise<Session | undefined> {
    const id = cookieValue(request.headers.get("cookie"), SESSION_COOKIE);
    if (id === undefined) return undefined;
    const session = sessions.get(id, now());
    if (session === undefined) return undefined;
    const decision = await authenticate(
      store,
      `Bearer ${session.token}`,
      "viewer",
      "the dashboard",
    );
    if (!decision.ok) {
      sessions.closeAllOf(session.token);
      return undefined;
    }
    return session;
  }

  /** Checks `token` and opens a session: the 303 to /ui with its cookie, or the login page (401). */
  async function logIn(token: string, action: string): Promise<Response> {
    const decision = await authenticate(store, `Bearer ${token.trim()}`, "viewer", action);
    let response: Response;
    let reason = "ok";
    if (decision.ok) {
      const session = sessions.open(
        token.trim(),
        decision.caller.name,
        decision.caller.role,
        now(),
      );
      response = redirect("/ui", sessionCookie(session.id, Math.floor(sessions.ttlMs / 1000)));
    } else {
      reason = decision.reason;
      response = html(loginPage(`${decision.error.message}`), decision.error.httpStatus);
    }
    await store.addAudit(
      auditEntry(now(), decision.caller, action, "dashboard", response.status, reason),
    );
    return response;
  }

  async function handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;

    if (path.startsWith("/ui/static/")) {
      if (method !== "GET") return errorJson(`method ${method} not allowed on ${path}`, 405);
      const name = path.slice("/ui/static/".length);
      const type = Object.hasOwn(STATIC_FILES, name) ? STATIC_FILES[name] : undefined;
      if (type === undefined) return errorJson(`no such file: ${path.slice(0, 200)}`, 404);
      let bytes = files.get(name);
      if (bytes === undefined) {
        bytes = await Deno.readFile(new URL(`./static/${name}`, import.meta.url));
        files.set(name, bytes);
      }
      return new Response(bytes, { status: 200, headers: { "content-type": type } });
    }

    if (path === "/ui/login") {
      if (method === "GET") return html(loginPage(null), 200);
      if (method !== "POST") return errorJson(`method ${method} not allowed on ${path}`, 405);
      const form = await formBody(request);
      return await logIn(form.get("token") ?? "", "POST /ui/login");
    }

    if (path === "/ui/logout") {
      if (method !== "POST") return errorJson(`method ${method} not allowed on ${path}`, 405);
      if (!sameOrigin(request)) return errorJson("logout from another site refused", 403);
      const form = await formBody(request);
      const session = await sessionOf(request);
      if (session !== undefined) {
        if (!sameText(form.get("csrf") ?? "", session.csrf)) {
          return errorJson("logout without this session's form value refused", 403);
        }
        sessions.close(session.id);
      }
      return redirect("/ui/login", sessionCookie("", 0));
    }

    if (path === "/ui" && url.searchParams.has("token")) {
      if (method !== "GET") return errorJson(`method ${method} not allowed on ${path}`, 405);
      return await logIn(url.searchParams.get("token") ?? "", "GET /ui?token");
    }

    const page = pageOf(path);
    const apiPath = path.startsWith("/ui/api/") ? path.slice("/ui/api".length) : undefined;
    if (page === undefined && apiPath === undefined) {
      return errorJson(`no such page: ${path.slice(0, 200)}`, 404);
    }
    if (method !== "GET") return errorJson(`method ${method} not allowed on ${path}`, 405);

    const session = await sessionOf(request);
    if (apiPath !== undefined) {
      if (session === undefined) {
        return errorJson("not logged in (or the session ended): log in at /ui/login", 401);
      }
      if (!API_READS.some((r) => r.test(apiPath))) {
        return errorJson(`the dashboard does not read ${apiPath.slice(0, 200)}`, 404);
      }
      const answer = await options.api(
        new Request(`${url.origin}${apiPath}${url.search}`, {
          method: "GET",
          headers: { authorization: `Bearer ${session.token}` },
        }),
      );
      // The token was valid a moment ago; if the API refuses it now, the session ends.
      if (answer.status === 401) sessions.closeAllOf(session.token);
      return answer;
    }
    if (session === undefined) return html(loginPage(null), 401);
    return html(dashboardPage(page!, `${session.tokenName} (${session.role})`, session.csrf), 200);
  }

  return async (request) => {
    let response: Response;
    try {
      response = await handle(request);
    } catch (err) {
      const status = err instanceof PoolboyError ? err.httpStatus : 500;
      const message = err instanceof Error ? err.message : String(err);
      response = errorJson(
        err instanceof PoolboyError && status < 500 ? message : `internal error: ${message}`,
        status,
      );
    }
    return secured(response);
  };
}

/** The page a path names, or undefined. */
function pageOf(path: string): DashboardPage | undefined {
  if (path === "/ui" || path === "/ui/") return { kind: "overview" };
  const rollout = /^\/ui\/rollouts\/([0-9]{1,15})$/.exec(path);
  if (rollout) return { kind: "rollout", id: Number(rollout[1]) };
  const device = /^\/ui\/devices\/([^/]{1,200})$/.exec(path);
  if (device) {
    try {
      return { kind: "device", id: decodeURIComponent(device[1]) };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** `response` with the dashboard's security headers. */
function secured(response: Response): Response {
  const headers = new Headers(response.headers);
  headers.set("content-security-policy", CONTENT_SECURITY_POLICY);
  headers.set("x-content-type-options", "nosniff");
  headers.set("referrer-policy", "no-referrer");
  headers.set("x-frame-options", "DENY");
  headers.set("cache-control", "no-store");
  return new Response(response.body, { status: response.status, headers });
}

/** The session cookie's Set-Cookie value (an empty id and 0 clear it). */
function sessionCookie(id: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}`;
}

/** The value of cookie `name` in a Cookie header (hostile: at most 8 KiB and 50 cookies read). */
export function cookieValue(header: string | null, name: string): string | undefined {
  if (header === null || header.length > 8192) return undefined;
  const pairs = header.split(";", 50);
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq < 0) continue;
    if (pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Whether a state-changing form comes from this host: an Origin or Referer,
 * when sent, must be `http://HOST` of the request's Host header (the URL's host without one).
 */
function sameOrigin(request: Request): boolean {
  const host = request.headers.get("host") ?? new URL(request.url).host;
  const origin = request.headers.get("origin");
  if (origin !== null) return origin === `http://${host}`;
  const referer = request.headers.get("referer");
  if (referer !== null) return referer.startsWith(`http://${host}/`);
  return true;
}

/** Equal strings, compared in time independent of where they differ. */
function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** A urlencoded form body of at most `MAX_FORM_BYTES`, counted while it streams. */
async function formBody(request: Request): Promise<URLSearchParams> {
  const type = (request.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    await request.body?.cancel();
    throw new InvalidArgumentError("the form must be application/x-www-form-urlencoded");
  }
  if (Number(request.headers.get("content-length") ?? "0") > MAX_FORM_BYTES) {
    throw new PayloadTooLargeError(`a form is at most ${MAX_FORM_BYTES} bytes`);
  }
  const bytes = await boundedBody(
    request,
    MAX_FORM_BYTES,
    `a form is at most ${MAX_FORM_BYTES} bytes`,
  );
  return new URLSearchParams(new TextDecoder().decode(bytes));
}

function redirect(location: string, cookie: string): Response {
  return new Response(null, { status: 303, headers: { location, "set-cookie": cookie } });
}

function html(text: string, status: number): Response {
  return new Response(text, { status, headers: { "content-type": "text/html; charset=utf-8" } });
}

function errorJson(message: string, status: number): Response {
  return new Response(JSON.stringify({ error: message }) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}
