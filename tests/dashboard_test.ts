/**
 * The web dashboard at /ui (controlplane/ui/): its session store (random
 * 256-bit ids, an expiry, a bound on how many), and its login flow over HTTP
 * in process: the login form and `/ui?token=` open a session with an
 * HttpOnly, SameSite=Strict cookie; no session gets the login page (401) or a
 * 401 JSON; a viewer's token suffices; a revoked token's sessions end; logout
 * wants the session's form value and this host's Origin; static files come
 * from a fixed table; every answer carries the Content-Security-Policy.
 */

import assert from "node:assert/strict";
import { createToken, newToken } from "../controlplane/auth.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import { serveHttp } from "../controlplane/http_server.ts";
import type { Role } from "../controlplane/state_store.ts";
import { CONTENT_SECURITY_POLICY, cookieValue, SESSION_COOKIE } from "../controlplane/ui/routes.ts";
import { SESSION_ID_PATTERN, SessionStore } from "../controlplane/ui/sessions.ts";
import { withTempDir } from "./helpers.ts";
import { registerDevice } from "./support/devices.ts";

const BASE = "http://127.0.0.1:7402";

Deno.test("a session id is 32 random bytes in base64url, and each session has its own CSRF value", () => {
  const store = new SessionStore();
  const a = store.open("pbt_a", "a", "viewer", 0);
  const b = store.open("pbt_b", "b", "viewer", 0);
  assert.match(a.id, SESSION_ID_PATTERN);
  assert.match(a.csrf, SESSION_ID_PATTERN);
  assert.notEqual(a.id, b.id);
  assert.notEqual(a.csrf, a.id);
  assert.equal(store.get(a.id, 1)?.token, "pbt_a");
});

Deno.test("a session ends when it expires, and an expired one is dropped from the store", () => {
  const store = new SessionStore({ ttlMs: 1000 });
  const s = store.open("pbt_a", "a", "viewer", 5000);
  assert.equal(s.expires, 6000);
  assert.ok(store.get(s.id, 5999));
  assert.equal(store.get(s.id, 6000), undefined);
  assert.equal(store.size, 0);
});

Deno.test("the store keeps at most maxSessions: a new session past the bound drops the oldest", () => {
  const store = new SessionStore({ maxSessions: 3 });
  const ids = [1, 2, 3, 4].map((i) => store.open(`pbt_${i}`, `t${i}`, "viewer", i).id);
  assert.equal(store.size, 3);
  assert.equal(store.get(ids[0], 10), undefined);
  for (const id of ids.slice(1)) assert.ok(store.get(id, 10));
});

Deno.test("a malformed or unknown session id finds nothing; closeAllOf ends every session of one token", () => {
  const store = new SessionStore();
  const a1 = store.open("pbt_a", "a", "viewer", 0);
  const a2 = store.open("pbt_a", "a", "viewer", 0);
  const b = store.open("pbt_b", "b", "admin", 0);
  assert.equal(store.get("x".repeat(44), 1), undefined);
  assert.equal(store.get("../../etc", 1), undefined);
  assert.equal(store.get("A".repeat(43), 1), undefined);
  assert.equal(store.closeAllOf("pbt_a"), 2);
  assert.equal(store.get(a1.id, 1), undefined);
  assert.equal(store.get(a2.id, 1), undefined);
  assert.ok(store.get(b.id, 1));
});

Deno.test("a Cookie header is read for one name only, and an oversized one is ignored", () => {
  assert.equal(cookieValue("a=1; poolboy_session=xyz; b=2", SESSION_COOKIE), "xyz");
  assert.equal(cookieValue("poolboy_sessionx=1", SESSION_COOKIE), undefined);
  assert.equal(cookieValue(null, SESSION_COOKIE), undefined);
  assert.equal(cookieValue(`poolboy_session=${"a".repeat(9000)}`, SESSION_COOKIE), undefined);
});

/** A control plane in process, its handler, and a token of each role asked for. */
interface Dashboard {
  readonly cp: ControlPlane;
  readonly handle: (path: string, init?: RequestInit) => Promise<Response>;
  readonly token: (role: Role, name: string) => Promise<string>;
}

async function withDashboard(fn: (d: Dashboard) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const cp = await ControlPlane.start({
      bind: "127.0.0.1",
      dataDir: dir,
      udpPort: 0,
      p2pPort: 0,
      tickMs: 3_600_000,
    });
    const handler = apiHandler(cp);
    try {
      await fn({
        cp,
        handle: (path, init) => handler(new Request(`${BASE}${path}`, init)),
        token: async (role, name) => (await createToken(cp.stateStore, role, name, 0)).token,
      });
    } finally {
      await cp.close();
    }
  });
}

function loginForm(token: string): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token }).toString(),
  };
}

/** The session cookie a Set-Cookie header sets (asserting its flags). */
function sessionFrom(response: Response): string {
  const setCookie = response.headers.get("set-cookie") ?? "";
  assert.match(setCookie, /^poolboy_session=[A-Za-z0-9_-]{43};/);
  assert.match(setCookie, /; HttpOnly/);
  assert.match(setCookie, /; SameSite=Strict/);
  assert.match(setCookie, /; Path=\/ui/);
  assert.match(setCookie, /; Max-Age=43200/);
  return setCookie.split(";")[0];
}

Deno.test("without a session, a dashboard page answers the login page with 401 and the pages' JSON reads answer 401", async () => {
  await withDashboard(async ({ handle }) => {
    const page = await handle("/ui");
    assert.equal(page.status, 401);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const html = await page.text();
    assert.match(html, /<form method="post" action="\/ui\/login">/);
    const read = await handle("/ui/api/v1/status?view=summary");
    assert.equal(read.status, 401);
    assert.match((await read.json()).error, /not logged in/);
    const badCookie = await handle("/ui/rollouts/1", {
      headers: { cookie: `${SESSION_COOKIE}=${"A".repeat(43)}` },
    });
    assert.equal(badCookie.status, 401);
    await badCookie.body?.cancel();
    const login = await handle("/ui/login");
    assert.equal(login.status, 200);
    await login.body?.cancel();
  });
});

Deno.test("a viewer's token posted to the login form opens a session: 303 to /ui with an HttpOnly, SameSite=Strict cookie, which then opens the pages and the JSON reads", async () => {
  await withDashboard(async ({ handle, token, cp }) => {
    const viewer = await token("viewer", "watcher");
    const login = await handle("/ui/login", loginForm(viewer));
    assert.equal(login.status, 303);
    assert.equal(login.headers.get("location"), "/ui");
    const cookie = sessionFrom(login);
    const page = await handle("/ui", { headers: { cookie } });
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /<main id="app" data-page="overview"/);
    assert.match(html, /watcher \(viewer\)/);
    assert.match(html, /<script src="\/ui\/static\/app.js" defer><\/script>/);
    assert.doesNotMatch(html, /<script>/, "no inline script");
    const read = await handle("/ui/api/v1/status?view=summary", { headers: { cookie } });
    assert.equal(read.status, 200);
    assert.equal((await read.json()).view, "summary");
    const audit = await cp.stateStore.audit(10);
    assert.ok(
      audit.some((a) => a.action === "POST /ui/login" && a.token === "watcher" && a.status === 303),
    );
  });
});

Deno.test("/ui?token= opens a session once and redirects to /ui without the token in the URL", async () => {
  await withDashboard(async ({ handle, token }) => {
    const viewer = await token("viewer", "script");
    const answer = await handle(`/ui?token=${viewer}`);
    assert.equal(answer.status, 303);
    assert.equal(answer.headers.get("location"), "/ui");
    assert.equal(answer.headers.get("referrer-policy"), "no-referrer");
    const cookie = sessionFrom(answer);
    const page = await handle("/ui", { headers: { cookie } });
    assert.equal(page.status, 200);
    await page.body?.cancel();
  });
});

Deno.test("an unknown, malformed or revoked token is refused at login: the login page again with 401, no cookie, and the refusal audited", async () => {
  await withDashboard(async ({ handle, token, cp }) => {
    const revoked = await token("admin", "old");
    await cp.stateStore.revokeToken("old", 1);
    for (const bad of [newToken(), "pbt_short", "", revoked]) {
      const answer = await handle("/ui/login", loginForm(bad));
      assert.equal(answer.status, 401, bad);
      assert.equal(answer.headers.get("set-cookie"), null);
      assert.match(await answer.text(), /id="login-error"/);
    }
    const viaUrl = await handle(`/ui?token=${revoked}`);
    assert.equal(viaUrl.status, 401);
    assert.equal(viaUrl.headers.get("set-cookie"), null);
    await viaUrl.body?.cancel();
    const audit = await cp.stateStore.audit(10);
    assert.ok(audit.some((a) => a.action === "POST /ui/login" && a.reason === "revoked token"));
    assert.ok(audit.some((a) => a.action === "GET /ui?token" && a.status === 401));
  });
});

Deno.test("revoking a token ends its sessions at their next request: pages answer the login page, reads 401", async () => {
  await withDashboard(async ({ handle, token, cp }) => {
    const viewer = await token("viewer", "soon-gone");
    const cookie = sessionFrom(await handle("/ui/login", loginForm(viewer)));
    const before = await handle("/ui/api/v1/devices?offset=0&limit=10", { headers: { cookie } });
    assert.equal(before.status, 200);
    await before.body?.cancel();
    assert.ok(await cp.stateStore.revokeToken("soon-gone", Date.now()));
    const read = await handle("/ui/api/v1/devices?offset=0&limit=10", { headers: { cookie } });
    assert.equal(read.status, 401);
    await read.body?.cancel();
    const page = await handle("/ui", { headers: { cookie } });
    assert.equal(page.status, 401);
    assert.match(await page.text(), /action="\/ui\/login"/);
  });
});

Deno.test("logout needs the session's form value and, when sent, this host's Origin; after it the cookie opens nothing", async () => {
  await withDashboard(async ({ handle, token }) => {
    const viewer = await token("viewer", "leaver");
    const cookie = sessionFrom(await handle("/ui/login", loginForm(viewer)));
    const html = await (await handle("/ui", { headers: { cookie } })).text();
    const csrf = /name="csrf" value="([A-Za-z0-9_-]{43})"/.exec(html)?.[1];
    assert.ok(csrf, "the page's logout form carries the session's CSRF value");
    const post = (form: Record<string, string>, origin: string) =>
      handle("/ui/logout", {
        method: "POST",
        headers: {
          cookie,
          origin,
          host: "127.0.0.1:7402",
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams(form).toString(),
      });
    const crossSite = await post({ csrf }, "http://evil.example");
    assert.equal(crossSite.status, 403);
    await crossSite.body?.cancel();
    const noValue = await post({}, "http://127.0.0.1:7402");
    assert.equal(noValue.status, 403);
    await noValue.body?.cancel();
    const still = await handle("/ui", { headers: { cookie } });
    assert.equal(still.status, 200, "a refused logout leaves the session open");
    await still.body?.cancel();
    const out = await post({ csrf }, "http://127.0.0.1:7402");
    assert.equal(out.status, 303);
    assert.equal(out.headers.get("location"), "/ui/login");
    assert.match(out.headers.get("set-cookie") ?? "", /^poolboy_session=; .*Max-Age=0/);
    const after = await handle("/ui", { headers: { cookie } });
    assert.equal(after.status, 401);
    await after.body?.cancel();
  });
});

Deno.test("static files come from a fixed table with their content types; anything else under /ui/static is 404", async () => {
  await withDashboard(async ({ handle }) => {
    const js = await handle("/ui/static/app.js");
    assert.equal(js.status, 200);
    assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.match(await js.text(), /REFRESH_MS/);
    const css = await handle("/ui/static/style.css");
    assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
    await css.body?.cancel();
    for (
      const path of [
        "/ui/static/../routes.ts",
        "/ui/static/%2e%2e/routes.ts",
        "/ui/static/..%2Froutes.ts",
        "/ui/static/",
        "/ui/static/app.js/",
        "/ui/static/sessions.ts",
        "/ui/static/toString",
        "/ui/static/__proto__",
      ]
    ) {
      const answer = await handle(path);
      assert.ok(answer.status === 404, `${path}: ${answer.status}`);
      await answer.body?.cancel();
    }
  });
});

Deno.test("every dashboard answer carries the Content-Security-Policy (self only, no inline script), nosniff and no-referrer", async () => {
  await withDashboard(async ({ handle, token }) => {
    assert.match(CONTENT_SECURITY_POLICY, /default-src 'self'/);
    assert.doesNotMatch(CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval/);
    const cookie = sessionFrom(await handle("/ui/login", loginForm(await token("viewer", "v"))));
    for (
      const [path, init] of [
        ["/ui", {}],
        ["/ui", { headers: { cookie } }],
        ["/ui/login", {}],
        ["/ui/static/app.js", {}],
        ["/ui/api/v1/status?view=summary", { headers: { cookie } }],
        ["/ui/nowhere", {}],
      ] as const
    ) {
      const answer = await handle(path, init);
      assert.equal(answer.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY, path);
      assert.equal(answer.headers.get("x-content-type-options"), "nosniff", path);
      assert.equal(answer.headers.get("referrer-policy"), "no-referrer", path);
      await answer.body?.cancel();
    }
  });
});

Deno.test("the pages read only the dashboard's JSON endpoints, by GET: an admin's session cannot read the audit log or change anything through /ui/api", async () => {
  await withDashboard(async ({ handle, token, cp }) => {
    registerDevice(cp, "eu-1");
    const cookie = sessionFrom(await handle("/ui/login", loginForm(await token("admin", "boss"))));
    const audit = await handle("/ui/api/v1/audit", { headers: { cookie } });
    assert.equal(audit.status, 404);
    await audit.body?.cancel();
    const post = await handle("/ui/api/v1/rollouts", {
      method: "POST",
      headers: { cookie, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(post.status, 405);
    await post.body?.cancel();
    for (const path of ["/v1/rollouts", "/v1/models", "/v1/devices/eu-1/history"]) {
      const read = await handle(`/ui/api${path}`, { headers: { cookie } });
      assert.equal(read.status, 200, path);
      await read.body?.cancel();
    }
  });
});

Deno.test("the JSON API itself is unchanged by the dashboard: a Bearer token is still what it needs, a session cookie is not", async () => {
  await withDashboard(async ({ handle, token }) => {
    const viewer = await token("viewer", "api-user");
    const cookie = sessionFrom(await handle("/ui/login", loginForm(viewer)));
    const withCookie = await handle("/v1/status", { headers: { cookie } });
    assert.equal(withCookie.status, 401);
    await withCookie.body?.cancel();
    const withToken = await handle("/v1/status", {
      headers: { authorization: `Bearer ${viewer}` },
    });
    assert.equal(withToken.status, 200);
    await withToken.body?.cancel();
  });
});

Deno.test("over a real HTTP connection: /ui?token= answers 303 with the cookie, the cookie opens /ui, and without it /ui is the login page (401)", async () => {
  await withDashboard(async ({ cp, token }) => {
    const server = await serveHttp({ hostname: "127.0.0.1", port: 0 }, apiHandler(cp));
    const base = `http://127.0.0.1:${server.port}`;
    try {
      const viewer = await token("viewer", "over-http");
      const login = await fetch(`${base}/ui?token=${viewer}`, { redirect: "manual" });
      assert.equal(login.status, 303);
      assert.equal(login.headers.get("location"), "/ui");
      await login.body?.cancel();
      const cookie = sessionFrom(login);
      const page = await fetch(`${base}/ui`, { headers: { cookie } });
      assert.equal(page.status, 200);
      assert.equal(page.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY);
      await page.body?.cancel();
      const anonymous = await fetch(`${base}/ui`);
      assert.equal(anonymous.status, 401);
      assert.match(await anonymous.text(), /action="\/ui\/login"/);
    } finally {
      await server.close();
    }
  });
});
