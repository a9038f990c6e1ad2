/**
 * The web dashboard's HTML: the login page and the shell of each page (the
 * overview, a rollout, a device). A shell holds no data: `static/app.js`
 * fetches the JSON API through `/ui/api/...` and fills it in, every 2 s while
 * the tab is visible. No inline script or style (the Content-Security-Policy
 * forbids them); every text put in is HTML-escaped.
 *
 * @module
 */

/** A page the dashboard shows once logged in. */
export type DashboardPage =
  | { readonly kind: "overview" }
  | { readonly kind: "rollout"; readonly id: number }
  | { readonly kind: "device"; readonly id: string };

/** `text` with HTML's special characters escaped (for text and quoted attributes). */
export function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) =>
      c === "&"
        ? "&amp;"
        : c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === '"'
        ? "&quot;"
        : "&#39;",
  );
}

function head(title: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · poolboy</title>
<link rel="stylesheet" href="/ui/static/style.css">
</head>
`;
}

/** The login page; `message` says why it is shown again (a refused token), if it is. */
export function loginPage(message: string | null): string {
  return `${head("log in")}<body class="login">
<main>
<h1>poolboy</h1>
<p>Log in with an API token (any role: a viewer token suffices).</p>
${message === null ? "" : `<p class="error" id="login-error">${escapeHtml(message)}</p>`}
<form method="post" action="/ui/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required
 placeholder="pbt_..." maxlength="200">
<button type="submit">Log in</button>
</form>
<p class="hint">An admin makes one on the control plane's host:
<code>poolboy token create --data DIR --role viewer --name NAME</code></p>
</main>
</body>
</html>
`;
}

/** A logged-in page's shell: navigation, the logout form (with the session's CSRF value), and where app.js draws. */
export function dashboardPage(page: DashboardPage, who: string, csrf: string): string {
  const title = page.kind === "overview"
    ? "fleet"
    : page.kind === "rollout"
    ? `rollout ${page.id}`
    : `device ${page.id}`;
  const id = page.kind === "overview" ? "" : String(page.id);
  return `${head(title)}<body>
<header>
<nav><a href="/ui">Fleet</a></nav>
<span class="who">${escapeHtml(who)}</span>
<form method="post" action="/ui/logout" class="logout">
<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">
<button type="submit">Log out</button>
</form>
</header>
<main id="app" data-page="${page.kind}" data-id="${escapeHtml(id)}">
<h1>${escapeHtml(title)}</h1>
<p id="updated" class="updated">loading…</p>
<div id="content"></div>
</main>
<script src="/ui/static/app.js" defer></script>
</body>
</html>
`;
}
