/**
 * The control plane's HTTP API (controlplane/http_api.ts), in process: what
 * operators and the CLI send, and the 4xx answers to bad input, which change
 * nothing.
 */

import assert from "node:assert/strict";
import { MAX_JSON_BODY } from "../controlplane/http_api.ts";
import { randomBytes } from "./helpers.ts";
import { withApi as withApiAs } from "./support/api_harness.ts";
import { registerDevice } from "./support/devices.ts";

/**
 * Every call is an admin's (tests/auth_test.ts is where tokens are refused);
 * one device, eu-0 in region eu, is registered (a rollout needs one).
 */
async function withApi(
  fn: (
    call: (method: string, path: string, body?: BodyInit) => Promise<Response>,
    dir: string,
  ) => Promise<void>,
): Promise<void> {
  await withApiAs({}, async ({ call, cp, dir }) => {
    registerDevice(cp, "eu-0", "eu");
    await fn(call, dir);
  });
}

async function json(response: Response): Promise<Record<string, unknown>> {
  return await response.json() as Record<string, unknown>;
}

Deno.test("GET /health answers ok", async () => {
  await withApi(async (call) => {
    const r = await call("GET", "/health");
    assert.equal(r.status, 200);
    assert.equal((await json(r)).ok, true);
  });
});

Deno.test("a version is published by PUT, listed, and republishing the same bytes is harmless", async () => {
  await withApi(async (call) => {
    const bytes = randomBytes(100_000, 1);
    const first = await call("PUT", "/v1/models/resnet/versions/v1", bytes);
    assert.equal(first.status, 201);
    const body = await json(first);
    const version = body.version as { digest: string; size: number };
    assert.equal(version.size, 100_000);
    assert.match(version.digest, /^[0-9a-f]{64}$/);
    assert.equal((await call("PUT", "/v1/models/resnet/versions/v1", bytes)).status, 200);
    const list = await json(await call("GET", "/v1/models"));
    assert.equal((list.versions as unknown[]).length, 1);
  });
});

Deno.test("other bytes under an existing version are refused with 409", async () => {
  await withApi(async (call, dir) => {
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1));
    const r = await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 2));
    assert.equal(r.status, 409);
    assert.match(String((await json(r)).error), /already published/);
    const stored = [];
    for await (const e of Deno.readDir(`${dir}/blobs`)) {
      if (/^[0-9a-f]{64}$/.test(e.name)) stored.push(e);
    }
    assert.equal(stored.length, 1, "the refused upload is not kept");
  });
});

Deno.test("a rollout of a published version is created; bad rollouts get 4xx and create nothing", async () => {
  await withApi(async (call) => {
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1));
    const cases: [BodyInit, number, RegExp][] = [
      ["{not json", 400, /not valid JSON/],
      ["[1,2]", 400, /JSON object/],
      [JSON.stringify({ model: "resnet" }), 400, /version must be/],
      [JSON.stringify({ model: "nope", version: "v1" }), 404, /unknown model "nope"/],
      [JSON.stringify({ model: "resnet", version: "v9" }), 404, /unknown version/],
      [JSON.stringify({ model: "resnet", version: "v1", region: "a b" }), 400, /region must be/],
      ["x".repeat(MAX_JSON_BODY + 1), 413, /over 65536 bytes/],
    ];
    for (const [body, status, error] of cases) {
      const r = await call("POST", "/v1/rollouts", body);
      assert.equal(r.status, status, String(body).slice(0, 40));
      assert.match(String((await json(r)).error), error);
    }
    assert.deepEqual((await json(await call("GET", "/v1/rollouts"))).rollouts, []);
    const ok = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ model: "resnet", version: "v1" }),
    );
    assert.equal(ok.status, 201);
    const rollout = await json(ok);
    assert.equal(rollout.id, 1);
    const got = await json(await call("GET", "/v1/rollouts/1"));
    assert.equal(got.version, "v1");
    assert.equal((await call("GET", "/v1/rollouts/2")).status, 404);
  });
});

Deno.test("unknown paths get 404 and wrong methods 405", async () => {
  await withApi(async (call) => {
    assert.equal((await call("GET", "/v2/anything")).status, 404);
    assert.equal((await call("DELETE", "/v1/rollouts")).status, 405);
    assert.equal((await call("GET", "/v1/models/m/versions/v1")).status, 405);
    const bad = await call("PUT", "/v1/models/bad%20name/versions/v1", "x");
    assert.equal(bad.status, 400);
  });
});

Deno.test("every endpoint answers another method with 405, and a path no endpoint has with 404", async () => {
  await withApi(async (call) => {
    const wrongMethods: [string, string][] = [
      ["POST", "/health"],
      ["DELETE", "/v1/models"],
      ["PUT", "/v1/rollouts/1"],
      ["GET", "/v1/rollback"],
      ["POST", "/v1/devices/eu-0/history"],
      ["POST", "/v1/agents"],
      ["POST", "/v1/devices"],
      ["PUT", "/v1/status"],
      ["GET", "/v1/devices/x"],
    ];
    for (const [method, path] of wrongMethods) {
      const r = await call(method, path);
      assert.equal(r.status, 405, `${method} ${path}`);
      assert.match(String((await json(r)).error), new RegExp(`method ${method} not allowed`));
    }
    for (
      const path of ["/", "/v1", "/v1/models/m", "/v1/rollouts/1/pause/now", "/v1/devices/x/y"]
    ) {
      const r = await call("GET", path);
      assert.equal(r.status, 404, path);
      assert.match(String((await json(r)).error), /no such endpoint/);
    }
  });
});

Deno.test("rollout plans are checked: bad strategies, canaries, batches and thresholds get 400", async () => {
  await withApi(async (call) => {
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1));
    const base = { model: "resnet", version: "v1" };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ strategy: "yolo" }, /strategy must be "all", "canary" or "rolling"/],
      [{ strategy: "canary", canary: "0" }, /canary must be a count/],
      [{ strategy: "canary", canary: "150%" }, /canary must be a count/],
      [{ strategy: "rolling", batch: 0 }, /batch must be a whole number/],
      [{ strategy: "rolling", batch: "2" }, /batch must be a whole number/],
      [{ maxFailures: "20" }, /maxFailures must be a percentage/],
    ];
    for (const [extra, error] of cases) {
      const r = await call("POST", "/v1/rollouts", JSON.stringify({ ...base, ...extra }));
      assert.equal(r.status, 400, JSON.stringify(extra));
      assert.match(String((await json(r)).error), error);
    }
    assert.deepEqual((await json(await call("GET", "/v1/rollouts"))).rollouts, []);
    const ok = await call(
      "POST",
      "/v1/rollouts",
      JSON.stringify({ ...base, strategy: "canary", canary: "10%", maxFailures: "50%" }),
    );
    const rollout = await json(ok);
    assert.equal(ok.status, 201);
    assert.deepEqual(
      [rollout.strategy, rollout.canary, rollout.canaryPercent, rollout.maxFailures],
      ["canary", 10, true, 0.5],
    );
  });
});

Deno.test("pause, resume and abort follow the rollout's state; anything else is 404 or 409", async () => {
  await withApi(async (call) => {
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1));
    await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" }));
    const act = async (path: string) => {
      const r = await call("POST", path);
      return [r.status, (await json(r)).state ?? null];
    };
    assert.equal((await call("POST", "/v1/rollouts/1/resume")).status, 409, "running: no resume");
    assert.deepEqual(await act("/v1/rollouts/1/pause"), [200, "paused"]);
    assert.equal((await call("POST", "/v1/rollouts/1/pause")).status, 409, "paused: no pause");
    assert.deepEqual(await act("/v1/rollouts/1/resume"), [200, "running"]);
    assert.deepEqual(await act("/v1/rollouts/1/abort"), [200, "aborted"]);
    assert.equal((await call("POST", "/v1/rollouts/1/resume")).status, 409, "aborted is final");
    assert.equal((await call("POST", "/v1/rollouts/9/pause")).status, 404);
    assert.equal((await call("POST", "/v1/rollouts/1/explode")).status, 404);
    assert.equal((await call("GET", "/v1/rollouts/1/pause")).status, 405);
  });
});

Deno.test("rollback needs a known model and something to go back to", async () => {
  await withApi(async (call) => {
    const r1 = await call("POST", "/v1/rollback", JSON.stringify({ model: "nope" }));
    assert.equal(r1.status, 404);
    await call("PUT", "/v1/models/resnet/versions/v1", randomBytes(1000, 1));
    await call("PUT", "/v1/models/resnet/versions/v2", randomBytes(1000, 2));
    const r2 = await call("POST", "/v1/rollback", JSON.stringify({ model: "resnet" }));
    assert.equal(r2.status, 404);
    assert.match(String((await json(r2)).error), /never rolled out/);
    await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v1" }));
    await call("POST", "/v1/rollouts", JSON.stringify({ model: "resnet", version: "v2" }));
    const back = await call("POST", "/v1/rollback", JSON.stringify({ model: "resnet" }));
    assert.equal(back.status, 201);
    const rollout = await json(back);
    assert.equal(rollout.version, "v1");
    assert.equal(rollout.rollback, true);
    const rollouts = (await json(await call("GET", "/v1/rollouts"))).rollouts as {
      state: string;
    }[];
    assert.deepEqual(rollouts.map((r) => r.state), ["superseded", "superseded", "running"]);
    const bad = await call("POST", "/v1/rollback", JSON.stringify({ model: "resnet", to: "v9" }));
    assert.equal(bad.status, 404);
  });
});
