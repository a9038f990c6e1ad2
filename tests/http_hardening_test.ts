/**
 * The operator API against clients that misbehave (issue 14, HTTP hardening),
 * most of it against a real `poolboy controlplane` process on its own loopback
 * address: bodies are counted while they stream (a chunked 600 MiB JSON body
 * is answered 413 and the process's peak memory stays flat), uploads are
 * bounded by `--max-upload` and leave nothing behind, a client that trickles
 * its headers or its body is cut while others are served, one address may
 * hold only so many connections, and a path with a malformed percent-escape
 * is 400.
 */

import assert from "node:assert/strict";
import net from "node:net";
import type { VersionList } from "../controlplane/api_types.ts";
import { apiHandler, MAX_JSON_BODY } from "../controlplane/http_api.ts";
import { MAX_DOCUMENT_BYTES } from "../release/documents.ts";
import { decodeOutput, MOD_PATH } from "./cli_helpers.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { withApi } from "./support/api_harness.ts";

const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.0/8",
  "--allow-env=POOLBOY_TOKEN",
];
const HTTP_PORT = 7402;
const encoder = new TextEncoder();

/** A control plane process, its data directory and an admin's token. */
interface Process {
  readonly host: string;
  readonly pid: number;
  readonly dir: string;
  readonly token: string;
  readonly call: (method: string, path: string, body?: BodyInit) => Promise<Response>;
}

/** Runs `fn` against `poolboy controlplane --bind host ...flags` with an admin token made before it starts. */
async function withControlPlane(
  host: string,
  flags: string[],
  fn: (cp: Process) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const data = `${dir}/data`;
    const made = decodeOutput(
      await new Deno.Command(Deno.execPath(), {
        args: ["run", ...PERMISSIONS, MOD_PATH, "token", "create", "--data", data, "--role"]
          .concat(["admin", "--name", "hardening"]),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output(),
    );
    assert.equal(made.code, 0, made.stderr);
    const token = made.stdout.trim();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MOD_PATH, "controlplane", "--bind", host, "--data", data]
        .concat(["-q", ...flags]),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const base = `http://${host}:${HTTP_PORT}`;
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const up = await fetch(`${base}/health`).then(async (r) => {
          await r.body?.cancel();
          return r.ok;
        }, () => false);
        if (up) break;
        if (Date.now() > deadline) throw new Error("the control plane's API did not answer");
        await new Promise((r) => setTimeout(r, 100));
      }
      await fn({
        host,
        pid: child.pid,
        dir: data,
        token,
        call: (method, path, body) =>
          fetch(`${base}${path}`, {
            method,
            body,
            headers: { authorization: `Bearer ${token}` },
          }),
      });
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await stderr;
    }
  });
}

/** A field of /proc/PID/status in kB (VmHWM: the peak resident set). */
async function procStatusKb(pid: number, field: string): Promise<number> {
  // Read by `cat`: Deno asks for --allow-all to read another process's /proc files.
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdout: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  const m = new RegExp(`^${field}:\\s+([0-9]+) kB`, "m").exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/** A raw connection to the API: what a misbehaving client writes, byte by byte if it likes. */
async function connect(host: string): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: host, port: HTTP_PORT });
}

/**
 * Everything the server sends until it closes the connection (or the read
 * fails: a reset after the answer).
 */
async function readUntilClosed(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break;
    }
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  return new TextDecoder().decode(await new Blob(chunks).arrayBuffer());
}

/**
 * One HTTP/1.1 answer: its head and a Content-Length body, or what came
 * before the server closed the connection.
 */
async function readResponse(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(4096);
  const decoder = new TextDecoder();
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const length = /^content-length:\s*([0-9]+)/im.exec(text.slice(0, end));
      if (length && text.length >= end + 4 + Number(length[1])) return text;
    }
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      return text;
    }
    if (n === null) return text;
    text += decoder.decode(buf.subarray(0, n), { stream: true });
  }
}

/** Writes all of `bytes` (a socket write may take only part of them). */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** Writes `text` one byte at a time, `gapMs` apart, until the server has closed (then true). */
async function trickle(
  conn: Deno.Conn,
  text: string,
  gapMs: number,
  closed: () => boolean,
): Promise<boolean> {
  // Cycles through `text` so a slow client never runs out of bytes to trickle.
  for (let i = 0; i < 10_000; i++) {
    if (closed()) return true;
    try {
      await writeAll(conn, encoder.encode(text[i % text.length]));
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, gapMs));
  }
  return closed();
}

/** Names in the blob store and its partial directory. */
async function blobFiles(data: string): Promise<string[]> {
  const names: string[] = [];
  for (const dir of [`${data}/blobs`, `${data}/blobs/.partial`]) {
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(`${dir}/${e.name}`);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return names.sort();
}

Deno.test("a chunked 600 MiB JSON body is answered 413 while it streams, and the control plane's peak memory stays flat", async () => {
  await withControlPlane("127.0.14.21", [], async (cp) => {
    const before = await procStatusKb(cp.pid, "VmHWM");
    const conn = await connect(cp.host);
    await writeAll(
      conn,
      encoder.encode(
        `POST /v1/rollouts HTTP/1.1\r\nhost: ${cp.host}\r\nauthorization: Bearer ${cp.token}\r\n` +
          `content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`,
      ),
    );
    let answered = false;
    const reply = readResponse(conn).then((text) => {
      answered = true;
      return text;
    });
    // 600 chunks of 1 MiB of a JSON string that never ends, until the server has answered.
    const piece = new Uint8Array(1024 * 1024).fill(0x61);
    piece[0] = 0x22;
    const chunk = new Uint8Array([...encoder.encode("100000\r\n"), ...piece, 13, 10]);
    await writeAll(conn, encoder.encode(`1\r\n{\r\n`));
    for (let i = 0; i < 600 && !answered; i++) {
      try {
        await writeAll(conn, chunk);
      } catch {
        break;
      }
    }
    // A server that read it all is owed the last chunk before it answers.
    if (!answered) await writeAll(conn, encoder.encode("0\r\n\r\n")).catch(() => {});
    const text = await reply;
    conn.close();
    assert.match(text, /^HTTP\/1\.1 413 /, text.slice(0, 200));
    assert.match(text, /request body over 65536 bytes/);
    const after = await procStatusKb(cp.pid, "VmHWM");
    assert.ok(
      after - before <= 40 * 1024,
      `peak RSS grew by ${after - before} kB (from ${before} kB to ${after} kB)`,
    );
    // The control plane still answers.
    const r = await cp.call("GET", "/v1/models");
    assert.equal(r.status, 200);
    await r.body?.cancel();
  });
});

Deno.test("an upload over --max-upload is answered 413, and neither a version nor a blob nor a partial file remains", async () => {
  await withControlPlane("127.0.14.22", ["--max-upload", "1MiB"], async (cp) => {
    const files = await blobFiles(cp.dir);
    // Streamed (chunked): cut once past the limit.
    const big = randomBytes(3 * 1024 * 1024, 14);
    const streamed = await cp.call(
      "PUT",
      "/v1/models/resnet/versions/v1",
      new Blob([big]).stream(),
    );
    assert.equal(streamed.status, 413);
    assert.match((await streamed.json()).error, /at most 1048576 bytes/);
    // With a Content-Length over the limit: refused before anything is read.
    const declared = await cp.call("PUT", "/v1/models/resnet/versions/v2", big);
    assert.equal(declared.status, 413);
    await declared.body?.cancel();
    const list = await cp.call("GET", "/v1/models");
    assert.deepEqual(((await list.json()) as VersionList).versions, []);
    assert.deepEqual(await blobFiles(cp.dir), files);
    const temps: string[] = [];
    for await (const e of Deno.readDir(`${cp.dir}/blobs`)) {
      if (e.name.endsWith(".tmp")) temps.push(e.name);
    }
    assert.deepEqual(temps, []);
    // A file within the limit is published.
    const small = await cp.call(
      "PUT",
      "/v1/models/resnet/versions/v3",
      new Blob([big.subarray(0, 512 * 1024)]).stream(),
    );
    assert.equal(small.status, 201);
    await small.body?.cancel();
  });
});

Deno.test("a client that trickles its headers is cut after --header-timeout, and another client is served meanwhile", async () => {
  await withControlPlane("127.0.14.23", ["--header-timeout", "1s"], async (cp) => {
    const slow = await connect(cp.host);
    let closed = false;
    const reply = readUntilClosed(slow).then((text) => {
      closed = true;
      return text;
    });
    await writeAll(slow, encoder.encode(`GET /v1/status HTTP/1.1\r\nhost: ${cp.host}\r\n`));
    // While it trickles, a normal client is answered.
    const served = cp.call("GET", "/v1/status");
    const cut = trickle(slow, "x-slow: abcdefghijklmnopqrstuvwxyz\r\n", 100, () => closed);
    const r = await served;
    assert.equal(r.status, 200);
    await r.body?.cancel();
    assert.equal(await cut, true, "the trickling client was never cut");
    const text = await reply;
    slow.close();
    assert.ok(text === "" || /^HTTP\/1\.1 408 /.test(text), text);
    // A connection that says nothing at all is closed too.
    const idle = await connect(cp.host);
    await readUntilClosed(idle);
    idle.close();
  });
});

Deno.test("a client that trickles its body is cut with 408 after --body-timeout, nothing is stored, and another client is served meanwhile", async () => {
  await withControlPlane("127.0.14.24", ["--body-timeout", "1s"], async (cp) => {
    const files = await blobFiles(cp.dir);
    for (
      const [path, type] of [
        ["/v1/rollouts", "application/json"],
        ["/v1/models/resnet/versions/v1", "application/octet-stream"],
      ]
    ) {
      const slow = await connect(cp.host);
      let closed = false;
      const reply = readUntilClosed(slow).then((text) => {
        closed = true;
        return text;
      });
      await writeAll(
        slow,
        encoder.encode(
          `${path.endsWith("v1") ? "PUT" : "POST"} ${path} HTTP/1.1\r\nhost: ${cp.host}\r\n` +
            `authorization: Bearer ${cp.token}\r\ncontent-type: ${type}\r\ncontent-length: 1000\r\n\r\n`,
        ),
      );
      const cut = trickle(slow, `{"model":"resnet","version":"v1"}`, 100, () => closed);
      const r = await cp.call("GET", "/v1/status");
      assert.equal(r.status, 200);
      await r.body?.cancel();
      assert.equal(await cut, true, `the trickling ${path} body was never cut`);
      const text = await reply;
      slow.close();
      assert.match(text, /^HTTP\/1\.1 408 /, text.slice(0, 200));
      assert.match(text, /the request body is too slow/);
    }
    const list = await cp.call("GET", "/v1/models");
    assert.deepEqual(((await list.json()) as VersionList).versions, []);
    assert.deepEqual(await blobFiles(cp.dir), files);
  });
});

Deno.test("one address may hold --connections-per-address connections; more are closed at once, other addresses are still served", async () => {
  await withControlPlane("127.0.14.25", ["--connections-per-address", "4"], async (cp) => {
    // Every connection from one client address, 127.0.14.26.
    const from = "127.0.14.26";
    const held: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const { socket, answer } = await askFrom(from, cp.host);
      assert.match(answer, /^HTTP\/1\.1 200 /);
      held.push(socket);
    }
    const fifth = await askFrom(from, cp.host);
    assert.equal(fifth.answer, "", "a fifth connection was answered");
    // Another address is served meanwhile.
    const other = await askFrom("127.0.14.27", cp.host);
    assert.match(other.answer, /^HTTP\/1\.1 200 /);
    other.socket.destroy();
    // Once one is closed, the address is served again.
    const gone = new Promise((resolve) => held[0].once("close", resolve));
    held[0].destroy();
    await gone;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const again = await askFrom(from, cp.host);
      again.socket.destroy();
      if (/^HTTP\/1\.1 200 /.test(again.answer)) break;
      if (Date.now() > deadline) throw new Error("the address was not served again");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const socket of held) socket.destroy();
  });
});

/**
 * Connects from `local` and asks GET /health: the socket (left open) and the
 * first bytes answered, or "" when the server closed it without an answer.
 */
function askFrom(local: string, host: string): Promise<{ socket: net.Socket; answer: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: HTTP_PORT, localAddress: local });
    socket.once("connect", () => {
      socket.write(`GET /health HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
    });
    socket.once("data", (data: Uint8Array) => {
      resolve({ socket, answer: new TextDecoder().decode(data) });
    });
    socket.once("close", () => resolve({ socket, answer: "" }));
    socket.once("error", (err: Error) => {
      if (socket.connecting) reject(err);
    });
  });
}

Deno.test("a path with a malformed percent-escape is answered 400, with or without a token", async () => {
  await withApi({}, async ({ call, cp }) => {
    for (const path of ["/v1/models/%ZZ/releases", "/v1/rollouts/%E0%A4%A", "/v1/%"]) {
      const r = await call("GET", path);
      assert.equal(r.status, 400, path);
      assert.match((await r.json()).error, /malformed percent-escape/);
    }
    const put = await call("PUT", "/v1/models/res%zznet/versions/v1", "x");
    assert.equal(put.status, 400);
    await put.body?.cancel();
    const anonymous = await apiHandler(cp)(new Request("http://127.0.0.1/v1/models/%ZZ/releases"));
    assert.equal(anonymous.status, 400);
    await anonymous.body?.cancel();
  });
});

Deno.test("JSON bodies and signed documents are capped at 64 KiB while they stream, chunked ones too, without reading the rest", async () => {
  await withApi({}, async ({ call }) => {
    for (
      const [method, path, max] of [
        ["POST", "/v1/rollouts", MAX_JSON_BODY],
        ["POST", "/v1/rollback", MAX_JSON_BODY],
        ["PUT", "/v1/delegation", MAX_DOCUMENT_BYTES],
        ["PUT", "/v1/models/resnet/versions/v1/release", MAX_DOCUMENT_BYTES],
      ] as const
    ) {
      // 16 MiB of spaces in 16 KiB pieces, made only as they are read.
      let pulled = 0;
      const body = new ReadableStream<Uint8Array>({
        pull: (controller) => {
          if (pulled >= 16 * 1024 * 1024) return controller.close();
          pulled += 16 * 1024;
          controller.enqueue(new Uint8Array(16 * 1024).fill(0x20));
        },
      });
      const r = await call(method, path, body);
      assert.equal(r.status, 413, `${method} ${path}`);
      await r.body?.cancel();
      assert.ok(pulled <= max + 1024 * 1024, `${method} ${path} read ${pulled} bytes`);
    }
  });
});
