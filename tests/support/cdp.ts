/**
 * A headless Chromium for browser tests, driven over the DevTools protocol
 * (CDP) on a WebSocket: `launchChromium` starts Debian's `/usr/bin/chromium`
 * with `--remote-debugging-port=0` on a fresh profile, reads the port it
 * chose from the profile's `DevToolsActivePort`, and attaches to its first
 * page. Only what the dashboard test needs: navigate, evaluate, wait for a
 * condition (with a deadline), cookies cleared, a screenshot, and the
 * page's log entries and uncaught exceptions (the newest 1,000). Test code only.
 *
 * Not playwright-core: npm:playwright-core@1.65.1 under Deno 2.9 cannot load
 * with the test task's permissions (at import it asks for sys "homedir", then
 * reads /proc/sys/fs/binfmt_misc/WSLInterop, which Deno grants only to
 * --allow-all).
 *
 * @module
 */

/** Where Debian's package puts it. */
export const CHROMIUM = "/usr/bin/chromium";

/** The flags every launch uses (headless, no sandbox as root, nothing phoning home). */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** How long any one step may take before the test fails (a deadline, not a measurement). */
const STEP_DEADLINE_MS = 60_000;

/** How many log entries and exceptions a page keeps. */
const MAX_PROBLEMS = 1000;

/** A log entry's or an uncaught exception's text, from a CDP event; undefined for other events. */
function problemOf(
  event: { method?: string; params?: Record<string, unknown> },
): string | undefined {
  if (event.method === "Log.entryAdded") {
    const entry = event.params?.entry as { level?: string; text?: string } | undefined;
    return `log ${entry?.level ?? "?"}: ${entry?.text ?? ""}`;
  }
  if (event.method === "Runtime.exceptionThrown") {
    const details = event.params?.exceptionDetails as
      | { text?: string; exception?: { description?: string } }
      | undefined;
    return `exception: ${details?.exception?.description ?? details?.text ?? ""}`;
  }
  return undefined;
}

/** Whether Chromium is installed here. */
export function chromiumInstalled(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/** A page of a running Chromium. */
export interface BrowserPage {
  /** Sends one CDP command to the page and returns its result. */
  send(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Loads `url` (returns once the navigation is committed; use `waitFor` for content). */
  goto(url: string): Promise<void>;
  /** The value of a JavaScript expression in the page (awaited if a promise). */
  evaluate<T>(expression: string): Promise<T>;
  /** Evaluates `expression` until it is truthy; fails with `what` past the deadline. */
  waitFor(expression: string, what: string): Promise<void>;
  /** The page's log entries and uncaught exceptions so far, as text (the newest 1,000). */
  problems(): readonly string[];
  /** A PNG of the viewport. */
  screenshot(): Promise<Uint8Array>;
  /** Kills the browser and removes its profile. */
  close(): Promise<void>;
}

/** Starts Chromium on a fresh profile and attaches to its page. */
export async function launchChromium(): Promise<BrowserPage> {
  const profile = await Deno.makeTempDir({ prefix: "poolboy-chromium-" });
  const child = new Deno.Command(CHROMIUM, {
    args: [
      ...CHROMIUM_ARGS,
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "--window-size=1280,1000",
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const cleanup = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  };
  try {
    const port = await until(async () => {
      const text = await Deno.readTextFile(`${profile}/DevToolsActivePort`).catch(() => "");
      const first = text.split("\n")[0];
      return /^[0-9]{1,5}$/.test(first) ? Number(first) : undefined;
    }, "Chromium's DevToolsActivePort");
    const wsUrl = await until(async () => {
      const response = await fetch(`http://127.0.0.1:${port}/json/list`).catch(() => undefined);
      if (response === undefined) return undefined;
      const targets = await response.json() as { type: string; webSocketDebuggerUrl?: string }[];
      return targets.find((t) => t.type === "page")?.webSocketDebuggerUrl;
    }, "Chromium's first page");
    return await attach(wsUrl, cleanup);
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** `probe()` until it gives a value, every 100 ms, failing past the deadline. */
async function until<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = Date.now() + STEP_DEADLINE_MS;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function attach(wsUrl: string, cleanup: () => Promise<void>): Promise<BrowserPage> {
  const socket = new WebSocket(wsUrl);
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error(`cannot connect to ${wsUrl}`));
  });
  let nextId = 1;
  const problems: string[] = [];
  const waiting = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data)) as {
      id?: number;
      result?: Record<string, unknown>;
      error?: { message: string };
    };
    if (message.id === undefined) {
      const text = problemOf(message as { method?: string; params?: Record<string, unknown> });
      if (text !== undefined) {
        problems.push(text);
        if (problems.length > MAX_PROBLEMS) problems.shift();
      }
      return;
    }
    const w = waiting.get(message.id);
    if (!w) return;
    waiting.delete(message.id);
    if (message.error) w.reject(new Error(message.error.message));
    else w.resolve(message.result ?? {});
  };
  socket.onclose = () => {
    for (const w of waiting.values()) w.reject(new Error("the browser closed the connection"));
    waiting.clear();
  };
  const send = (method: string, params: Record<string, unknown> = {}) => {
    const id = nextId++;
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error(`${method}: no answer within the deadline`));
      }, STEP_DEADLINE_MS);
      waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      socket.send(JSON.stringify({ id, method, params }));
    });
  };
  const evaluate = async <T>(expression: string): Promise<T> => {
    const result = await send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    });
    const details = result.exceptionDetails as { text?: string } | undefined;
    if (details) throw new Error(`in the page: ${details.text ?? "exception"} (${expression})`);
    return (result.result as { value: T }).value;
  };
  await send("Page.enable");
  await send("Runtime.enable");
  await send("Network.enable");
  await send("Log.enable");
  await send("Emulation.setDeviceMetricsOverride", {
    width: 1280,
    height: 1000,
    deviceScaleFactor: 1,
    mobile: false,
  });
  return {
    send,
    goto: async (url) => {
      const result = await send("Page.navigate", { url });
      if (typeof result.errorText === "string") throw new Error(`${url}: ${result.errorText}`);
    },
    evaluate,
    waitFor: async (expression, what) => {
      await until(async () => {
        const ok = await evaluate<boolean>(`Boolean(${expression})`).catch(() => false);
        return ok ? true : undefined;
      }, what);
    },
    problems: () => [...problems],
    screenshot: async () => {
      const result = await send("Page.captureScreenshot", { format: "png" });
      return Uint8Array.from(atob(String(result.data)), (c) => c.charCodeAt(0));
    },
    close: async () => {
      if (socket.readyState !== WebSocket.CLOSED) {
        const closed = new Promise<void>((resolve) =>
          socket.addEventListener("close", () => resolve())
        );
        socket.close();
        await closed;
      }
      await cleanup();
    },
  };
}
