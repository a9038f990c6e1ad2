/**
 * What the fleet simulator's parent process and its worker processes say to
 * each other: the worker's configuration (one JSON argument) and the events
 * it prints, one JSON object per stdout line. The parent parses each line
 * with `parseEvent`, which admits only these shapes (a worker is our own
 * child, but a malformed line is still refused, not trusted).
 *
 * @module
 */

/** A worker's configuration: which devices it simulates and where the control plane is. */
export interface WorkerConfig {
  /** Index of its first device (testkit/fleet_sim/plan.ts). */
  readonly first: number;
  readonly count: number;
  readonly regions: number;
  readonly cpHost: string;
  readonly cpUdpPort: number;
  /** The control plane's HTTP API, `http://host:port`. */
  readonly cpUrl: string;
  /** An enrolment token good for every device. */
  readonly token: string;
  /** The fleet's root public key file (what agents pin with --trust-root). */
  readonly rootPub: string;
  readonly model: string;
  /** The digest every device runs at start (hex). */
  readonly activeDigest: string;
  readonly heartbeatMs: number;
  /** A directory of its own (verified blob files). */
  readonly workDir: string;
  /** Enrolments in flight at once. */
  readonly enrolSlots: number;
  /** Connections to the control plane's blob server at once (documents, leaders' blobs). */
  readonly cpSlots: number;
  /** Downloads from peers at once. */
  readonly peerSlots: number;
  /** Connections a device's blob server takes at once (more get BUSY). */
  readonly serverConnections: number;
  /** Bodies a device's blob server sends at once (`maxUploads`, `--upload-slots`). */
  readonly uploadSlots: number;
  /** Bytes per second a device's blob server sends, all bodies together (0: unlimited). */
  readonly uploadBytesPerSecond: number;
  /** Swarm downloads of the process at once (bounds its sockets). */
  readonly swarmSlots: number;
  /** No peer byte for this long: a swarm download turns to the control plane (null: agents' default). */
  readonly stallMs: number | null;
}

/** A device's update finished: it verified the blob and reports the target active. */
export interface DoneEvent {
  readonly t: "done";
  readonly id: string;
  /** When (ms since the epoch) it was done. */
  readonly at: number;
  /** When it first heard an Announce for the target, first bid, and started its download. */
  readonly announced: number;
  readonly bid: number;
  readonly started: number;
  /** The blob's digest (hex), as verified. */
  readonly blob: string;
  readonly target: string;
  readonly leader: boolean;
  /** Where the blob came from. */
  readonly from: "peer" | "controlPlane";
  readonly attempts: number;
  /** Pieces it fetched and verified (a swarm download), of `pieceCount` (0: no swarm download). */
  readonly pieces: number;
  readonly pieceCount: number;
}

/** What one device's blob server did over the run: [node id, region, bytes served, peak uploads]. */
export type DeviceServed = readonly [string, string, number, number];

/** Most devices in one `served` event (a worker's devices). */
export const MAX_SERVED_ENTRIES = 100_000;

/** Counters of a worker at its end. */
export interface WorkerStats {
  readonly devices: number;
  readonly datagramsSent: number;
  readonly datagramsReceived: number;
  /** Datagrams from the control plane dropped: malformed, stale (sent over 60 s ago by its clock), replayed, bad signature. */
  readonly droppedMalformed: number;
  readonly droppedStale: number;
  readonly droppedReplayed: number;
  readonly droppedBadSignature: number;
  readonly documentFetches: number;
  readonly bytesFromControlPlane: number;
  readonly bytesFromPeers: number;
  readonly bytesServed: number;
  /** Pieces fetched and verified by swarm downloads. */
  readonly piecesVerified: number;
  /** Bytes of piece lists fetched from the control plane. */
  readonly pieceListBytes: number;
  /** Device blob servers started (lazily, on joining an election). */
  readonly serversStarted: number;
  /** Answers of the devices' blob servers: NOT_YET, BUSY; connections that failed (timeouts, resets). */
  readonly serverNotYet: number;
  readonly serverBusy: number;
  readonly serverErrors: number;
}

/** Every event a worker prints. */
export type WorkerEvent =
  | { readonly t: "enrolled"; readonly n: number }
  | { readonly t: "ready"; readonly n: number }
  | DoneEvent
  | { readonly t: "failed"; readonly id: string; readonly reason: string }
  | { readonly t: "stats"; readonly stats: WorkerStats }
  | { readonly t: "served"; readonly devices: readonly DeviceServed[] }
  | { readonly t: "fatal"; readonly message: string };

/** One event from one line, or null when the line is not one. */
export function parseEvent(line: string): WorkerEvent | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  const str = (k: string) => typeof o[k] === "string";
  const num = (k: string) => typeof o[k] === "number" && Number.isFinite(o[k]);
  switch (o.t) {
    case "enrolled":
    case "ready":
      return num("n") ? (o as unknown as WorkerEvent) : null;
    case "done":
      return str("id") && num("at") && num("announced") && num("bid") && num("started") &&
          str("blob") && str("target") &&
          typeof o.leader === "boolean" && (o.from === "peer" || o.from === "controlPlane") &&
          num("attempts") && num("pieces") && num("pieceCount")
        ? (o as unknown as DoneEvent)
        : null;
    case "failed":
      return str("id") && str("reason") ? (o as unknown as WorkerEvent) : null;
    case "stats": {
      const s = o.stats as Record<string, unknown> | null;
      if (typeof s !== "object" || s === null) return null;
      return Object.values(s).every((x) => typeof x === "number")
        ? (o as unknown as WorkerEvent)
        : null;
    }
    case "served": {
      const d = o.devices;
      if (!Array.isArray(d) || d.length > MAX_SERVED_ENTRIES) return null;
      const ok = d.every((e) =>
        Array.isArray(e) && e.length === 4 && typeof e[0] === "string" &&
        typeof e[1] === "string" && Number.isFinite(e[2]) && Number.isFinite(e[3])
      );
      return ok ? (o as unknown as WorkerEvent) : null;
    }
    case "fatal":
      return str("message") ? (o as unknown as WorkerEvent) : null;
    default:
      return null;
  }
}
