/**
 * `deno task demo`: the main job on built-in defaults. Makes a synthetic model
 * (a ~100 MB SafeTensors file) and a fine-tuned version of it (last layers
 * retrained, header metadata grown so every later byte shifts), encodes the
 * patch, applies it, checks the rebuilt file is byte-identical, and prints what
 * was saved. Then runs a small fleet on loopback (testkit/fleet_harness.ts:
 * real processes): keys (root, release, a delegation), an operator token, a
 * control plane and 4 devices in 2 regions pinning the root key, two signed
 * releases rolled out; prints what each device got and from whom, and what the
 * control plane's uplink saved. Everything happens in a temporary directory,
 * removed at the end (processes stopped) unless `--keep` is given.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { applyFile } from "../codec/applier.ts";
import { encodeFile } from "../codec/encoder.ts";
import { hashFile } from "../codec/hash_file.ts";
import { countOf, formatBytes, megabytesPerSecond } from "../kernel/units.ts";
import { retrainLast, transformerPlan, writeModel } from "./synthetic_model.ts";
import { type AgentSpec, Fleet, modelBytesServed } from "../testkit/fleet_harness.ts";
import type { StatusReport } from "../controlplane/api_types.ts";
import { readPublicKey } from "../release/keys.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    keep: { type: "boolean" },
    "no-fleet": { type: "boolean" },
    layers: { type: "string", default: "12" },
    hidden: { type: "string", default: "640" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`deno task demo [--keep] [--layers N] [--hidden N] [--no-fleet]

Makes a synthetic SafeTensors model (N transformer blocks of width H, float32)
and a fine-tuned version (last two tensors retrained, metadata grown), then
encodes, applies and verifies the patch, and prints the numbers.
Then starts a fleet on loopback (127.0.77.x): release keys and a delegation,
an operator token, a control plane and 4 devices in 2 regions that pin the
root key; publishes two signed releases of a smaller model and rolls them out,
and prints what each device got, from whom, and what the uplink saved.
--no-fleet skips the fleet; --keep leaves the files in the temporary directory
(processes are always stopped) and prints its path.`);
  Deno.exit(0);
}

const layers = Number(values.layers);
const hidden = Number(values.hidden);
const dir = await Deno.makeTempDir({ prefix: "poolboy-demo-" });
try {
  const base = `${dir}/model-v1.safetensors`;
  const target = `${dir}/model-v2.safetensors`;
  const patch = `${dir}/v1-to-v2.patch`;
  const rebuilt = `${dir}/model-v2.rebuilt.safetensors`;

  const plan = transformerPlan(layers, hidden);
  console.log(`1. making a synthetic model: ${layers} blocks of width ${hidden}, float32`);
  const baseSize = await writeModel(base, plan);
  const targetSize = await writeModel(target, retrainLast(plan, 2, 42));
  console.log(`   v1 ${formatBytes(baseSize)}, v2 ${formatBytes(targetSize)}`);
  console.log(
    "   v2 = v1 with the last 2 tensors retrained and its header grown (all offsets shift)",
  );

  console.log("2. encode v1 + v2 -> patch");
  const enc = await encodeFile(base, target, patch);
  const ops = (
    [
      ["COPY", enc.copyBytes, enc.copyOps],
      ["LITERAL", enc.literalBytes, enc.literalOps],
      ["ZLITERAL", enc.zliteralBytes, enc.zliteralOps],
      ["DELTA", enc.deltaBytes, enc.deltaOps],
    ] as const
  ).filter(([, , count]) => count > 0)
    .map(([name, bytes, count]) => `${name} ${formatBytes(bytes)} (${countOf(count, "op")})`);
  console.log(
    `   patch ${formatBytes(enc.patchSize)} (format 4, the default): ${ops.join(", ")}, ${
      (enc.elapsedMs / 1000).toFixed(2)
    } s, ${megabytesPerSecond(enc.targetSize, enc.elapsedMs).toFixed(0)} MB/s`,
  );

  console.log("3. apply patch to v1 -> rebuilt v2 (streamed, BLAKE3-verified, atomic rename)");
  const app = await applyFile(base, patch, rebuilt);
  console.log(
    `   ${formatBytes(app.targetSize)} in ${(app.elapsedMs / 1000).toFixed(2)} s, ${
      megabytesPerSecond(app.targetSize, app.elapsedMs).toFixed(0)
    } MB/s`,
  );

  console.log("4. verify");
  const [want, got] = await Promise.all([hashFile(target), hashFile(rebuilt)]);
  if (want !== got) throw new Error(`rebuilt file differs: ${got} != ${want}`);
  console.log(`   rebuilt v2 BLAKE3 ${got} = original v2`);

  const saved = 100 * (1 - enc.patchSize / targetSize);
  console.log(
    `\nshipping the patch instead of the model saves ${saved.toFixed(1)}%: ${
      formatBytes(enc.patchSize)
    } instead of ${formatBytes(targetSize)} per device.`,
  );
  if (!values["no-fleet"]) await fleetDemo(`${dir}/fleet`);
  if (values.keep) console.log(`files kept in ${dir}`);
} finally {
  if (!values.keep) await Deno.remove(dir, { recursive: true });
}

/** The fleet part: keys, a token, a control plane and 4 devices on loopback, two signed releases. */
async function fleetDemo(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const model = "demo-model";
  const v1Path = `${dir}/model-v1.safetensors`;
  const v2Path = `${dir}/model-v2.safetensors`;
  const small = transformerPlan(4, 256);
  await writeModel(v1Path, small);
  const size = await writeModel(v2Path, retrainLast(small, 2, 42));
  await writeModel(`${dir}/model-v3.safetensors`, retrainLast(small, 1, 7));
  const agents: AgentSpec[] = ["eu", "us"].flatMap((region, r) =>
    [0, 1].map((k) => ({
      nodeId: `${region}-${k}`,
      region,
      host: `127.0.77.${10 + 2 * r + k}`,
    }))
  );

  console.log(
    "\n5. a fleet on loopback: release keys, an operator token, a control plane, 4 devices",
  );
  const fleet = await Fleet.start({
    dir,
    cpHost: "127.0.77.1",
    agents,
    cpArgs: ["--agent-timeout", "1500ms"],
    agentArgs: ["--heartbeat-interval", "250ms"],
  });
  try {
    const keys = fleet.keys!;
    const rootId = await keyId(keys.rootPub);
    const releaseId = await keyId(keys.releasePub);
    console.log(`   poolboy keygen root    -> root key ${rootId} (root.key belongs offline)`);
    console.log(`   poolboy keygen release -> release key ${releaseId}`);
    console.log(
      `   poolboy delegate       -> keys.json: root ${rootId} says release key ${releaseId} may sign`,
    );
    console.log(
      `   poolboy token create   -> ${
        fleet.token?.slice(0, 8)
      }… (admin; the control plane keeps only its hash)`,
    );
    console.log(
      `   control plane 127.0.77.1; devices ${
        agents.map((a) => `${a.nodeId} (${a.host})`).join(", ")
      }, each with --trust-root root.pub and --enroll (a one-use token of poolboy device enroll-token)`,
    );
    await fleet.waitFor(
      async () => (await fleet.status()).agents.filter((a) => a.online).length === agents.length,
      30_000,
      "every device to register",
    );

    const ids = agents.map((a) => a.nodeId);
    const release = async (step: number, version: string, path: string) => {
      const published = await fleet.publish(model, version, path);
      const digest = published.version.digest;
      const before = await fleet.status();
      const { id } = await fleet.rollout(model, version);
      const status = await fleet.converged(model, digest, ids);
      const rollout = status.rollouts.find((r) => r.id === id)!;
      const sent = status.controlPlane.served - before.controlPlane.served;
      const models = modelBytesServed(status) - modelBytesServed(before);
      console.log(
        `${step}. poolboy publish ${version} --key release.key --keys keys.json; poolboy rollout ${version}`,
      );
      console.log(
        `   ${version}: ${formatBytes(published.version.size)}, blake3 ${
          digest.slice(0, 16)
        }…, signed by ${releaseId}, release counter ${published.release?.counter}`,
      );
      for (const a of agents) {
        const election = rollout.elections.find((e) =>
          e.state === "closed" && e.members.includes(a.nodeId)
        );
        const blob = election?.base === null ? "the whole file" : "a patch";
        const from = election?.leader === a.nodeId
          ? `from the control plane (leader of ${a.region})`
          : `from its peer ${election?.leader ?? "?"}`;
        console.log(
          `   ${a.nodeId.padEnd(5)} ${a.region}: runs ${version} ${
            status.agents.find((s) => s.nodeId === a.nodeId)?.active[model].slice(0, 16)
          }…, got ${blob} (${formatBytes(election?.blobSize ?? 0)}) ${from}`,
        );
      }
      return { sent, models, size: published.version.size };
    };
    await release(6, "v1", v1Path);
    const v2 = await release(7, "v2", v2Path);

    // What a compromised control plane or a stolen token could push: a file nobody signed.
    console.log(
      "8. poolboy publish v3 --unsigned; poolboy rollout v3 (what a compromised control plane could push)",
    );
    await fleet.publish(model, "v3", `${dir}/model-v3.safetensors`, { unsigned: true });
    const { id: refusedId } = await fleet.rollout(model, "v3");
    let refused: StatusReport | undefined;
    await fleet.waitFor(
      async () => {
        refused = await fleet.status();
        const rollout = refused.rollouts.find((r) => r.id === refusedId);
        return ids.every((n) =>
          rollout?.agents.some((a) => a.nodeId === n && /^refused/.test(a.detail))
        );
      },
      30_000,
      "every device to refuse the unsigned release",
    );
    const refusedRollout = refused!.rollouts.find((r) => r.id === refusedId)!;
    for (const a of agents) {
      const entry = refusedRollout.agents.find((e) => e.nodeId === a.nodeId)!;
      console.log(
        `   ${a.nodeId.padEnd(5)} ${a.region}: still runs v2 ${
          refused!.agents.find((s) => s.nodeId === a.nodeId)?.active[model].slice(0, 16)
        }…; ${entry.detail}`,
      );
    }
    const naive = agents.length * size;
    console.log(
      `9. the control plane's uplink for v2: ${formatBytes(v2.sent)} instead of ${
        formatBytes(naive)
      } (the whole file to each of ${agents.length} devices): ${
        (100 * (1 - v2.sent / naive)).toFixed(1)
      }% saved`,
    );
    console.log(
      `   = ${formatBytes(v2.models)} of patches (one per region; peers served the rest) + ${
        formatBytes(v2.sent - v2.models)
      } of signed documents (each device fetches the manifest and delegation before it bids)`,
    );
    const last: StatusReport = await fleet.status();
    console.log(
      `   the fleet's state: \`poolboy status --control-plane ${fleet.url}\` (${last.agents.length} devices, ${last.rollouts.length} rollouts)`,
    );
    // The dashboard opens a session for the operator's token (as a browser would with ?token=).
    const login = await fetch(`${fleet.url}/ui?token=${encodeURIComponent(fleet.token ?? "")}`, {
      redirect: "manual",
    });
    await login.body?.cancel();
    const session = login.status === 303 && login.headers.has("set-cookie");
    console.log(
      `   the dashboard: ${fleet.url}/ui (log in with a token; ${
        session ? "it opened a session for the operator's token" : `it answered ${login.status}`
      }); \`deno task fleet --stay\` keeps a fleet and its dashboard up until Ctrl-C`,
    );
  } finally {
    await fleet.stop();
  }
  console.log("   every process stopped.");
}

/** The first 16 hex digits of a public key file's key id. */
async function keyId(pubPath: string): Promise<string> {
  return (await readPublicKey(pubPath)).keyId.slice(0, 16);
}
