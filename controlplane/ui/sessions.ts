/**
 * The web dashboard's sessions (`/ui`): what its HttpOnly cookie names. A
 * session id is 32 random bytes in base64url (256 bits), kept only in this
 * process's memory with its expiry, the token it was opened with and a
 * per-session CSRF value for the logout form. The store is bounded: past
 * `maxSessions` the oldest session is dropped (ids expire in the order they
 * were made, since every session lives `ttlMs`). A restart of the control
 * plane ends every session.
 *
 * The session keeps the operator's token itself, in memory only, so that
 * every request re-validates it (auth.ts) and the dashboard's reads go
 * through the JSON API with it: a revoked token's sessions stop working on
 * their next request (routes.ts deletes them then).
 *
 * @module
 */

import { toBase64Url } from "../../release/keys.ts";
import type { Role } from "../state_store.ts";

/** How long a session lives (12 hours). */
export const DEFAULT_SESSION_TTL_MS = 12 * 3600 * 1000;

/** How many sessions are kept at once; a new one past that drops the oldest. */
export const DEFAULT_MAX_SESSIONS = 1000;

/** A session id's exact shape: 32 bytes of unpadded base64url. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/** One open session. */
export interface Session {
  /** The cookie's value. */
  readonly id: string;
  /** The operator's token it was opened with (re-validated on every request). */
  readonly token: string;
  /** The token's name and role when the session was opened. */
  readonly tokenName: string;
  readonly role: Role;
  /** What the logout form must send back (a second id, never in a cookie). */
  readonly csrf: string;
  readonly created: number;
  /** When it stops working (ms since the epoch). */
  readonly expires: number;
}

/** The store's limits (defaults where absent). */
export interface SessionLimits {
  readonly ttlMs?: number;
  readonly maxSessions?: number;
}

/** 32 random bytes in base64url. */
function randomId(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The open sessions, by id, oldest first. */
export class SessionStore {
  readonly ttlMs: number;
  readonly maxSessions: number;
  readonly #sessions = new Map<string, Session>();

  constructor(limits: SessionLimits = {}) {
    this.ttlMs = limits.ttlMs ?? DEFAULT_SESSION_TTL_MS;
    this.maxSessions = Math.max(1, limits.maxSessions ?? DEFAULT_MAX_SESSIONS);
  }

  /** How many sessions are open (expired ones not yet swept included). */
  get size(): number {
    return this.#sessions.size;
  }

  /** Opens a session for `token` (already validated by the caller) at `now`. */
  open(token: string, tokenName: string, role: Role, now: number): Session {
    this.#sweep(now);
    while (this.#sessions.size >= this.maxSessions) {
      // Map order is creation order, and every session lives ttlMs: the first expires first.
      const oldest = this.#sessions.keys().next().value;
      if (oldest === undefined) break;
      this.#sessions.delete(oldest);
    }
    const session: Session = {
      id: randomId(),
      token,
      tokenName,
      role,
      csrf: randomId(),
      created: now,
      expires: now + this.ttlMs,
    };
    this.#sessions.set(session.id, session);
    return session;
  }

  /** The session named `id` if it exists and has not expired at `now` (an expired one is dropped). */
  get(id: string, now: number): Session | undefined {
    if (!SESSION_ID_PATTERN.test(id)) return undefined;
    const session = this.#sessions.get(id);
    if (session === undefined) return undefined;
    if (session.expires <= now) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session;
  }

  /** Ends a session; whether there was one. */
  close(id: string): boolean {
    return this.#sessions.delete(id);
  }

  /** Ends every session opened with `token`; how many. */
  closeAllOf(token: string): number {
    let n = 0;
    for (const [id, s] of this.#sessions) {
      if (s.token === token) {
        this.#sessions.delete(id);
        n++;
      }
    }
    return n;
  }

  /** Drops expired sessions from the front (creation order is expiry order). */
  #sweep(now: number): void {
    for (const [id, s] of this.#sessions) {
      if (s.expires > now) break;
      this.#sessions.delete(id);
    }
  }
}
