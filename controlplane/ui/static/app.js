/**
 * The web dashboard's only script (served as a file: the Content-Security-Policy
 * forbids inline scripts). It reads the JSON API through `/ui/api/...` (the
 * session cookie stands for the token) and draws the page named by
 * `<main id="app" data-page data-id>`: the fleet overview, a rollout, or a
 * device. It redraws every 2 s while the tab is visible and stops while it is
 * hidden. Text goes in with `textContent` only (never as HTML); bars are SVG.
 * Every listing read is bounded (`MAX_PAGES` pages of `PAGE` entries).
 */

const REFRESH_MS = 2000;
const PAGE = 1000;
const MAX_PAGES = 10;
const SVG = "http://www.w3.org/2000/svg";

const app = document.getElementById("app");
const content = document.getElementById("content");
const updated = document.getElementById("updated");

/** The API's answer to GET `path` (through the dashboard), as JSON; to the login page on 401. */
async function get(path) {
  const response = await fetch(`/ui/api${path}`, {
    headers: { accept: "application/json" },
    credentials: "same-origin",
  });
  if (response.status === 401) {
    location.assign("/ui/login");
    throw new Error("the session ended");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ?? `HTTP ${response.status}`);
  return body;
}

/** Every page of a paged listing (`key`: the array's name), at most MAX_PAGES of them. */
async function pages(path, key) {
  const all = [];
  let total = 0;
  for (let i = 0; i < MAX_PAGES; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}offset=${i * PAGE}&limit=${PAGE}`);
    all.push(...page[key]);
    total = page.total;
    if (all.length >= total || page[key].length === 0) break;
  }
  return { items: all, total, partial: all.length < total };
}

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return node;
}

/** A table from a header row and rows of cells. */
function table(head, rows, attrs = {}) {
  return el(
    "table",
    attrs,
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      ...rows.map((r) => el("tr", r.attrs ?? {}, ...r.cells.map((c) => el("td", {}, c)))),
    ),
  );
}

/** A horizontal bar of `parts` ({ value, cls }) out of `total`, as SVG. */
function bar(parts, total) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 200 12");
  svg.setAttribute("width", "200");
  svg.setAttribute("height", "12");
  svg.setAttribute("class", "bar");
  const back = document.createElementNS(SVG, "rect");
  back.setAttribute("width", "200");
  back.setAttribute("height", "12");
  back.setAttribute("class", "bar-back");
  svg.append(back);
  let x = 0;
  for (const p of parts) {
    if (!(total > 0) || !(p.value > 0)) continue;
    const w = (200 * p.value) / total;
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", String(x));
    r.setAttribute("width", String(w));
    r.setAttribute("height", "12");
    r.setAttribute("class", p.cls);
    svg.append(r);
    x += w;
  }
  return svg;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function when(ms) {
  return ms === null || ms === undefined
    ? "—"
    : new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function percent(part, whole) {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "—";
}

/** "model version" of a digest, from the published versions (the digest's start if unknown). */
function versionName(versions, digest) {
  const v = versions.find((x) => x.digest === digest);
  return v ? v.version : `${digest.slice(0, 12)}…`;
}

function card(label, value, cls = "") {
  return el(
    "div",
    { class: `card ${cls}` },
    el("div", { class: "value" }, String(value)),
    el("div", { class: "label" }, label),
  );
}

const ACTIVE = "seg-active";
const FAILED = "seg-failed";
const BUSY = "seg-busy";

/** The states of a rollout's agent that count as under way. */
const BUSY_STATES = ["pending", "leader", "downloading", "downloaded", "applied"];

/** Whether a rollout's agent failed for good (the agent will not try again: its detail says so). */
function poisoned(agent) {
  return agent.state === "failed" && agent.detail.startsWith("poisoned");
}

/** Rollouts still holding devices (running, paused or halted), newest first, at most `n`. */
function openRollouts(summary, n) {
  return summary.rollouts
    .filter((r) => r.state === "running" || r.state === "paused" || r.state === "halted")
    .sort((a, b) => b.id - a.id)
    .slice(0, n);
}

async function overview() {
  const summary = await get("/v1/status?view=summary");
  const devices = await pages("/v1/devices", "agents");
  let poisonedCount = 0;
  for (const r of openRollouts(summary, 3)) {
    const agents = await get(`/v1/rollouts/${r.id}/devices?offset=0&limit=${PAGE}`);
    poisonedCount += agents.agents.filter(poisoned).length;
  }
  const d = summary.devices;
  const peers = devices.items.reduce((a, x) => a + x.served, 0);
  const fromCp = summary.controlPlane.served;
  const received = peers + fromCp;
  let full = 0;
  for (const r of summary.rollouts) {
    if (r.rollback) continue;
    const v = summary.versions.find((x) => x.model === r.model && x.version === r.version);
    full += (r.agentStates.active ?? 0) * (v ? v.size : 0);
  }
  const out = [];
  out.push(el(
    "section",
    { class: "cards" },
    card("devices", d.total),
    card("online", d.online, "ok"),
    card("offline", d.offline, d.offline > 0 ? "warn" : ""),
    card("poisoned", poisonedCount, poisonedCount > 0 ? "bad" : ""),
  ));
  out.push(el("h2", {}, "Devices per region"));
  out.push(table(
    ["region", "devices", "online", "offline", ""],
    Object.entries(d.byRegion).map(([region, c]) => ({
      cells: [
        region,
        c.total,
        c.online,
        c.offline,
        bar([{ value: c.online, cls: ACTIVE }, { value: c.offline, cls: FAILED }], c.total),
      ],
    })),
    { id: "regions" },
  ));
  out.push(el("h2", {}, "Versions per model"));
  const byModel = new Map();
  for (const dev of devices.items) {
    for (const [model, digest] of Object.entries(dev.active)) {
      if (!byModel.has(model)) byModel.set(model, new Map());
      const m = byModel.get(model);
      m.set(digest, (m.get(digest) ?? 0) + 1);
    }
  }
  const versionRows = [];
  for (const [model, counts] of [...byModel].sort()) {
    for (const [digest, n] of [...counts].sort((a, b) => b[1] - a[1])) {
      versionRows.push({
        cells: [
          model,
          versionName(summary.versions, digest),
          n,
          bar([{ value: n, cls: ACTIVE }], devices.items.length),
        ],
      });
    }
  }
  out.push(
    versionRows.length
      ? table(["model", "version", "devices", ""], versionRows, { id: "versions" })
      : el("p", {}, "No device runs a model yet."),
  );
  if (devices.partial) {
    out.push(
      el(
        "p",
        { class: "hint" },
        `Counted over the first ${devices.items.length} of ${devices.total} devices.`,
      ),
    );
  }
  out.push(el("h2", {}, "Bytes"));
  out.push(el(
    "section",
    { class: "cards" },
    card("from the control plane", bytes(fromCp)),
    card("from peers", bytes(peers)),
    card("peer share", percent(peers, received)),
    card(
      "saved against full downloads",
      full > 0
        ? `${bytes(Math.max(0, full - received))} (${percent(Math.max(0, full - received), full)})`
        : "—",
    ),
  ));
  out.push(
    el(
      "p",
      { class: "hint" },
      "Full downloads: every device a rollout brought to its version, times the version's size (rollbacks left out). Moved: what the control plane and the devices' blob servers sent.",
    ),
  );
  out.push(el("h2", {}, "Rollouts"));
  out.push(rolloutTable(summary));
  return out;
}

function rolloutTable(summary) {
  const rows = [...summary.rollouts].sort((a, b) => b.id - a.id).map((r) => {
    const s = r.agentStates;
    const busy = BUSY_STATES.reduce((a, k) => a + (s[k] ?? 0), 0);
    return {
      attrs: { "data-rollout": r.id },
      cells: [
        el("a", { href: `/ui/rollouts/${r.id}` }, `#${r.id}`),
        `${r.model} ${r.version}${r.rollback ? " (rollback)" : ""}`,
        r.region ?? "all",
        r.strategy,
        el("span", { class: `state state-${r.state}` }, r.state),
        `${s.active ?? 0}/${r.agents}`,
        bar([{ value: s.active ?? 0, cls: ACTIVE }, { value: busy, cls: BUSY }, {
          value: s.failed ?? 0,
          cls: FAILED,
        }], r.agents),
        String(s.failed ?? 0),
        r.reason,
      ],
    };
  });
  return rows.length
    ? table(
      ["id", "version", "region", "strategy", "state", "done", "progress", "failed", "reason"],
      rows,
      { id: "rollouts" },
    )
    : el("p", {}, "No rollout yet.");
}

/** The batches of a rollout's agents (by node id), as the control plane admits them. */
function batchesOf(rollout, agents) {
  const sorted = [...agents].sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
  if (rollout.strategy === "canary") {
    const n = rollout.canaryPercent
      ? Math.max(1, Math.ceil((sorted.length * rollout.canary) / 100))
      : Math.min(rollout.canary, sorted.length);
    return [{ name: "canary", agents: sorted.slice(0, n) }, {
      name: "rest",
      agents: sorted.slice(n),
    }];
  }
  if (rollout.strategy === "rolling") {
    const k = Math.max(1, rollout.batch);
    const out = [];
    for (let i = 0; i < sorted.length && out.length < 1000; i += k) {
      out.push({ name: `batch ${out.length + 1}`, agents: sorted.slice(i, i + k) });
    }
    return out;
  }
  return [{ name: "all", agents: sorted }];
}

function progressRows(groups) {
  return groups.map((g) => {
    const n = g.agents.length;
    const active = g.agents.filter((a) => a.state === "active").length;
    const failed = g.agents.filter((a) => a.state === "failed").length;
    const busy = g.agents.filter((a) => BUSY_STATES.includes(a.state)).length;
    return {
      cells: [
        g.name,
        n,
        active,
        busy,
        failed,
        bar([{ value: active, cls: ACTIVE }, { value: busy, cls: BUSY }, {
          value: failed,
          cls: FAILED,
        }], n),
      ],
    };
  });
}

async function rolloutPage(id) {
  const summary = await get("/v1/status?view=summary");
  const rollout = summary.rollouts.find((r) => r.id === Number(id));
  if (!rollout) return [el("p", { class: "error" }, `No rollout ${id}.`)];
  const agents = await pages(`/v1/rollouts/${rollout.id}/devices`, "agents");
  const devices = await pages("/v1/devices", "agents");
  const regionOf = new Map(devices.items.map((d) => [d.nodeId, d.region]));
  const out = [];
  out.push(el(
    "section",
    { class: "cards" },
    card(
      "state",
      rollout.state,
      rollout.state === "halted" || rollout.state === "aborted" ? "bad" : "",
    ),
    card("version", `${rollout.model} ${rollout.version}`),
    card("done", `${rollout.agentStates.active ?? 0}/${rollout.agents}`, "ok"),
    card(
      "failed",
      rollout.agentStates.failed ?? 0,
      (rollout.agentStates.failed ?? 0) > 0 ? "bad" : "",
    ),
  ));
  out.push(
    el(
      "p",
      {},
      `Strategy ${rollout.strategy}, started ${when(rollout.created)}, finished ${
        when(rollout.finished)
      }.${rollout.reason ? ` ${rollout.reason}` : ""}`,
    ),
  );
  out.push(el("h2", {}, "Progress per batch"));
  out.push(
    table(
      ["batch", "devices", "active", "under way", "failed", ""],
      progressRows(batchesOf(rollout, agents.items)),
      { id: "batches" },
    ),
  );
  out.push(el("h2", {}, "Progress per region"));
  const byRegion = new Map();
  for (const a of agents.items) {
    const region = regionOf.get(a.nodeId) ?? "?";
    if (!byRegion.has(region)) byRegion.set(region, []);
    byRegion.get(region).push(a);
  }
  out.push(
    table(
      ["region", "devices", "active", "under way", "failed", ""],
      progressRows([...byRegion].sort().map(([name, list]) => ({ name, agents: list }))),
      { id: "by-region" },
    ),
  );
  const failed = agents.items.filter((a) => a.state === "failed");
  out.push(el("h2", {}, "Failures"));
  out.push(
    failed.length
      ? table(
        ["device", "region", "when", "reason"],
        failed.map((a) => ({
          attrs: { class: "failure", "data-node": a.nodeId },
          cells: [
            el("a", { href: `/ui/devices/${encodeURIComponent(a.nodeId)}` }, a.nodeId),
            regionOf.get(a.nodeId) ?? "?",
            when(a.updated),
            el("span", { class: "reason" }, `${poisoned(a) ? "[poisoned] " : ""}${a.detail}`),
          ],
        })),
        { id: "failures" },
      )
      : el("p", {}, "None."),
  );
  out.push(el("h2", {}, "Elections"));
  out.push(
    rollout.elections.length
      ? table(
        [
          "region",
          "state",
          "leader",
          "members",
          "pending",
          "served by the control plane",
          "failure",
        ],
        rollout.elections.map((e) => ({
          cells: [
            e.region,
            e.state,
            e.leader ?? "—",
            e.members,
            e.pending,
            bytes(e.controlPlaneServedForBlob),
            e.failure ?? "",
          ],
        })),
      )
      : el("p", {}, "None."),
  );
  out.push(el("h2", {}, "Devices"));
  out.push(table(
    ["device", "state", "updated", "detail"],
    agents.items.map((a) => ({
      cells: [
        el("a", { href: `/ui/devices/${encodeURIComponent(a.nodeId)}` }, a.nodeId),
        a.state,
        when(a.updated),
        a.detail,
      ],
    })),
  ));
  if (agents.partial) {
    out.push(
      el("p", { class: "hint" }, `The first ${agents.items.length} of ${agents.total} devices.`),
    );
  }
  return out;
}

async function devicePage(id) {
  const summary = await get("/v1/status?view=summary");
  const devices = await pages("/v1/devices", "agents");
  const device = devices.items.find((d) => d.nodeId === id);
  const history = await get(`/v1/devices/${encodeURIComponent(id)}/history`);
  const out = [];
  if (device) {
    out.push(el(
      "section",
      { class: "cards" },
      card("region", device.region),
      card(
        device.online ? "online" : "offline",
        `seen ${Math.round(device.lastSeenMsAgo / 1000)} s ago`,
        device.online ? "ok" : "warn",
      ),
      card("served to peers", bytes(device.served)),
      card("host", device.host),
    ));
    const active = Object.entries(device.active);
    out.push(el("h2", {}, "Running"));
    out.push(
      active.length
        ? table(
          ["model", "version", "digest"],
          active.map(([m, dg]) => ({
            cells: [m, versionName(summary.versions, dg), `${dg.slice(0, 16)}…`],
          })),
        )
        : el("p", {}, "No model."),
    );
  } else {
    out.push(
      el(
        "p",
        { class: "hint" },
        devices.partial ? "Not among the devices read." : "Not registered now.",
      ),
    );
  }
  out.push(el("h2", {}, "History"));
  out.push(
    history.history.length
      ? table(
        ["when", "model", "event", "version", "detail"],
        [...history.history].reverse().map((h) => ({
          cells: [when(h.at), h.model, h.event, versionName(summary.versions, h.digest), h.detail],
        })),
        { id: "history" },
      )
      : el("p", {}, "Nothing yet."),
  );
  return out;
}

let timer = null;
let running = false;

async function refresh() {
  if (running) return;
  running = true;
  try {
    const page = app.dataset.page;
    const id = app.dataset.id;
    const nodes = page === "rollout"
      ? await rolloutPage(id)
      : page === "device"
      ? await devicePage(id)
      : await overview();
    content.replaceChildren(...nodes);
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.classList.remove("error");
  } catch (err) {
    updated.textContent = `cannot refresh: ${err instanceof Error ? err.message : String(err)}`;
    updated.classList.add("error");
  } finally {
    running = false;
  }
  schedule();
}

function schedule() {
  clearTimeout(timer);
  timer = document.hidden ? null : setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(timer);
    timer = null;
  } else {
    void refresh();
  }
});

void refresh();
