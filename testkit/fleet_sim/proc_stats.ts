/**
 * What the fleet simulator measures of a process and a directory from the
 * outside: peak resident memory (VmHWM of /proc/PID/status), CPU time
 * (utime + stime of /proc/PID/stat, in clock ticks of 1/100 s, Linux's
 * USER_HZ), and the bytes of a directory tree. Deno lets only `--allow-all`
 * read /proc directly, so the two files are read through `cat` (the task and
 * the test grant `--allow-run`).
 *
 * @module
 */

/** Linux's USER_HZ: /proc/PID/stat times are in these ticks. */
const TICKS_PER_SECOND = 100;

/** The text of a /proc file, through `cat`; null when unreadable. */
async function procFile(path: string): Promise<string | null> {
  try {
    const out = await new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" })
      .output();
    return out.code === 0 ? new TextDecoder().decode(out.stdout) : null;
  } catch {
    return null;
  }
}

/** Peak resident set of `pid` in bytes, or null when unreadable. */
export async function peakRssBytes(pid: number): Promise<number | null> {
  const text = await procFile(`/proc/${pid}/status`);
  const m = text === null ? null : /^VmHWM:\s+(\d+)\s+kB$/m.exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/** CPU seconds (user + system) `pid` used so far, or null when unreadable. */
export async function cpuSeconds(pid: number): Promise<number | null> {
  const text = await procFile(`/proc/${pid}/stat`);
  if (text === null) return null;
  // The command name (field 2) is in parentheses and may hold spaces: split after it.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state): utime is field 14, stime field 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return Number.isFinite(utime + stime) ? (utime + stime) / TICKS_PER_SECOND : null;
}

/**
 * Datagrams the kernel dropped at the UDP socket bound to `host:port` (IPv4;
 * the `drops` column of /proc/net/udp in this network namespace), or null.
 */
export async function udpSocketDrops(host: string, port: number): Promise<number | null> {
  const text = await procFile("/proc/net/udp");
  if (text === null) return null;
  const octets = host.split(".").map(Number);
  // /proc/net/udp writes the address as the hex of the 32-bit word in host (little-endian) order.
  const hex = (n: number, width: number) => n.toString(16).toUpperCase().padStart(width, "0");
  const local = `${octets.reverse().map((o) => hex(o, 2)).join("")}:${hex(port, 4)}`;
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === local) return Number(fields[fields.length - 1]);
  }
  return null;
}

/** The machine's 1-minute load average (/proc/loadavg), or null: other users' load shows here. */
export async function loadAverage(): Promise<number | null> {
  const text = await procFile("/proc/loadavg");
  const one = text === null ? NaN : Number(text.split(" ")[0]);
  return Number.isFinite(one) ? one : null;
}

/** Bytes of the regular files under `dir` (bounded depth). */
export async function treeBytes(dir: string, depth = 8): Promise<number> {
  let total = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory && depth > 0) total += await treeBytes(path, depth - 1);
      else if (entry.isFile) total += (await Deno.lstat(path)).size;
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return total;
}
