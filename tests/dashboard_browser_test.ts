/**
 * The web dashboard in a real browser: headless Chromium (Debian's
 * /usr/bin/chromium, driven over the DevTools protocol: tests/support/cdp.ts)
 * against a control plane served over HTTP with a small fleet (six devices in
 * two regions, a rolling rollout in batches of two with one failed device).
 * Without a token the page is the login form and the JSON is refused; with a
 * viewer's token the overview shows the rollout, and its page shows the
 * progress per batch and region and the failed device's reason, and follows
 * a change without a reload (it polls every 2 s). A screenshot
 * is kept as test-artifacts/dashboard.png (the overview's as dashboard-overview.png). Skipped, with one line saying so,
 * where Chromium is not installed (`.ci/run` installs it).
 */

import assert from "node:assert/strict";
import { createToken } from "../controlplane/auth.ts";
import { ControlPlane } from "../controlplane/control_plane.ts";
import { apiHandler } from "../controlplane/http_api.ts";
import { serveHttp } from "../controlplane/http_server.ts";
import type { RolloutAgentRecord } from "../controlplane/state_store.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { CHROMIUM, chromiumInstalled, launchChromium } from "./support/cdp.ts";
import { registerDevice } from "./support/devices.ts";

const ARTIFACT_DIR = new URL("../test-artifacts/", import.meta.url).pathname;
const REASON = "health check failed: exit status 3 (./check.sh: model answers NaN)";

const installed = chromiumInstalled();
if (!installed) {
  console.log(
    `dashboard browser test ignored: ${CHROMIUM} is missing (apt-get install -y chromium)`,
  );
}

Deno.test({
  name:
    "in headless Chromium: without a token the dashboard is refused; a viewer's token logs in, and a rollout's page shows its progress per batch and region and the failed device's reason",
  ignore: !installed,
  fn: async () => {
    await withTempDir(async (dir) => {
      const cp = await ControlPlane.start({
        bind: "127.0.0.1",
        dataDir: dir,
        udpPort: 0,
        p2pPort: 0,
        tickMs: 3_600_000,
      });
      const server = await serveHttp({ hostname: "127.0.0.1", port: 0 }, apiHandler(cp));
      const base = `http://127.0.0.1:${server.port}`;
      try {
        const { token } = await createToken(cp.stateStore, "viewer", "ops-viewer", 0);
        // The fleet: v1 everywhere, v2 rolled out in batches of two; eu-2 failed.
        const v1 = randomBytes(4000, 1);
        const v2 = randomBytes(4000, 2);
        await cp.publish("resnet", "v1", new Blob([v1]).stream());
        await cp.publish("resnet", "v2", new Blob([v2]).stream());
        const nodes = ["eu-0", "eu-1", "eu-2", "eu-3", "us-0", "us-1"];
        for (const n of nodes) {
          registerDevice(cp, n, n.slice(0, 2), {
            active: { resnet: toHex(blake3(n === "eu-0" || n === "eu-1" ? v2 : v1)) },
          });
        }
        const rollout = await cp.rollout("resnet", "v2", null, {
          strategy: "rolling",
          canary: 1,
          canaryPercent: false,
          batch: 2,
          maxFailures: 1,
          rollback: false,
        });
        const now = Date.now();
        const progress = (nodeId: string, state: RolloutAgentRecord["state"], detail = "") => ({
          rolloutId: rollout.id,
          nodeId,
          state,
          detail,
          updated: now,
        });
        await cp.stateStore.setRolloutAgents([
          progress("eu-0", "active"),
          progress("eu-1", "active"),
          progress("eu-2", "failed", REASON),
          progress("eu-3", "downloading", "12 of 40 pieces"),
          progress("us-0", "waiting"),
          progress("us-1", "waiting"),
        ]);
        await cp.stateStore.addHistory({
          nodeId: "eu-2",
          model: "resnet",
          at: now,
          event: "failed",
          digest: toHex(blake3(v2)),
          detail: REASON,
        });
        cp.invalidateStatus();

        // Without a token: refused, outside and inside the browser.
        const anonymous = await fetch(`${base}/ui`);
        assert.equal(anonymous.status, 401);
        await anonymous.body?.cancel();

        const page = await launchChromium();
        try {
          await page.goto(`${base}/ui/rollouts/${rollout.id}`);
          await page.waitFor(
            `document.querySelector("form[action='/ui/login']")`,
            "the login form",
          );
          assert.equal(
            await page.evaluate<number>(
              `fetch("/ui/api/v1/status?view=summary").then((r) => r.status)`,
            ),
            401,
          );
          assert.equal(
            await page.evaluate<boolean>(`!!document.getElementById("rollouts")`),
            false,
          );

          // Log in with the token through the form.
          await page.evaluate(
            `document.getElementById("token").value = ${JSON.stringify(token)};
             document.querySelector("form[action='/ui/login']").submit(); true`,
          );
          await page.waitFor(
            `location.pathname === "/ui" && document.querySelector("#rollouts tr[data-rollout]")`,
            "the overview's rollouts",
          );
          const row = await page.evaluate<string>(
            `document.querySelector("#rollouts tr[data-rollout='${rollout.id}']").textContent`,
          );
          assert.match(row, /resnet v2/);
          assert.match(row, /2\/6/, "two of six devices done");
          assert.equal(
            await page.evaluate<boolean>(`document.cookie.includes("poolboy_session")`),
            false,
            "the session cookie is HttpOnly",
          );

          await page.waitFor(`document.querySelector("#versions tbody tr")`, "the versions");
          await Deno.mkdir(ARTIFACT_DIR, { recursive: true });
          await Deno.writeFile(`${ARTIFACT_DIR}dashboard-overview.png`, await page.screenshot());

          // The rollout's page: progress per batch and region, and the failure's reason.
          await page.goto(`${base}/ui/rollouts/${rollout.id}`);
          await page.waitFor(`document.querySelector("#failures .reason")`, "the failures");
          assert.equal(
            await page.evaluate<string>(
              `document.querySelector("#failures tr.failure[data-node='eu-2'] .reason").textContent`,
            ),
            REASON,
          );
          const batches = await page.evaluate<string[]>(
            `[...document.querySelectorAll("#batches tbody tr")].map((r) => [...r.cells].slice(0, 5).map((c) => c.textContent).join(" "))`,
          );
          assert.deepEqual(batches, [
            "batch 1 2 2 0 0",
            "batch 2 2 0 1 1",
            "batch 3 2 0 0 0",
          ]);
          const regions = await page.evaluate<string[]>(
            `[...document.querySelectorAll("#by-region tbody tr")].map((r) => [...r.cells].slice(0, 5).map((c) => c.textContent).join(" "))`,
          );
          assert.deepEqual(regions, ["eu 4 2 1 1", "us 2 0 0 0"]);
          await Deno.mkdir(ARTIFACT_DIR, { recursive: true });
          const png = await page.screenshot();
          assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47], "a PNG");
          await Deno.writeFile(`${ARTIFACT_DIR}dashboard.png`, png);

          // It refreshes by itself: eu-3 finishes, and the open page shows it without a reload.
          await page.evaluate(`window.notReloaded = true`);
          await cp.stateStore.setRolloutAgents([progress("eu-3", "active")]);
          cp.invalidateStatus();
          await page.waitFor(
            `[...document.querySelectorAll("#batches tbody tr")][1]?.cells[2].textContent === "1"`,
            "the page's next refresh",
          );
          assert.equal(await page.evaluate<boolean>(`window.notReloaded === true`), true);

          // The failed device's page: its history.
          await page.goto(`${base}/ui/devices/eu-2`);
          await page.waitFor(`document.querySelector("#history tbody tr")`, "the device's history");
          assert.match(
            await page.evaluate<string>(`document.querySelector("#history tbody tr").textContent`),
            /failed.*v2.*health check failed/,
          );

          // Nothing the Content-Security-Policy blocked, no script error in any page so far
          // (the refused fetches' 401s are logged as network errors: those are expected).
          const problems = page.problems().filter((p) => !/status of 401/.test(p));
          assert.deepEqual(problems.filter((p) => /Content.Security.Policy/i.test(p)), []);
          assert.deepEqual(problems.filter((p) => p.startsWith("exception")), []);

          // Without the cookie the browser is refused again.
          await page.send("Network.clearBrowserCookies");
          await page.goto(`${base}/ui`);
          await page.waitFor(
            `document.querySelector("form[action='/ui/login']")`,
            "the login form",
          );
          assert.equal(
            await page.evaluate<number>(
              `fetch("/ui/api/v1/status?view=summary").then((r) => r.status)`,
            ),
            401,
          );
        } finally {
          await page.close();
        }
      } finally {
        await server.close();
        await cp.close();
      }
    });
  },
});
