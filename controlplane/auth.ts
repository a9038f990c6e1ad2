/**
 * Who may call the control plane's API: operators' tokens and roles, and the
 * audit log's entries. Pure but for `authenticate`, which looks the token's
 * hash up in the state store.
 *
 * A token is `pbt_` and 43 characters of base64url (32 random bytes); the
 * store keeps only its BLAKE3 (hex), so a stolen database holds no usable
 * token. A request sends it as `Authorization: Bearer pbt_...`. No token, a
 * malformed, unknown or revoked one is refused with 401; a valid token whose
 * role is below what the route needs with 403. Roles are ordered: viewer
 * (reads) < deployer (publishes, rolls out and back) < admin (everything,
 * the audit log included).
 *
 * @module
 */

import { blake3, toHex } from "../kernel/blake3.ts";
import { ForbiddenError, UnauthorizedError } from "../kernel/errors.ts";
import { toBase64Url } from "../release/keys.ts";
import {
  type AuditRecord,
  type Role,
  ROLES,
  type StateStore,
  type TokenRecord,
} from "./state_store.ts";

/** What every token starts with (so a leaked one is recognisable). */
export const TOKEN_PREFIX = "pbt_";

/** A token's exact shape: the prefix and 32 bytes of unpadded base64url. */
export const TOKEN_PATTERN = /^pbt_[A-Za-z0-9_-]{43}$/;

/** The longest string the audit log keeps of any one field; the rest is cut off. */
export const MAX_AUDIT_FIELD = 256;

/** How to get a token, for every 401. */
const HOW_TO_GET_ONE =
  "an admin makes one on the control plane's host: poolboy token create --data DIR --role viewer|deployer|admin --name NAME";

/** A new token: the prefix and 32 random bytes in base64url. */
export function newToken(): string {
  return TOKEN_PREFIX + toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The token's BLAKE3 (lowercase hex): all the store keeps of it. */
export function tokenHash(token: string): string {
  return toHex(blake3(new TextEncoder().encode(token)));
}

/**
 * Makes a token of `role` named `name` and stores its hash in `store` (a `ConflictError` if the
 * name is taken); returns the token, which nothing keeps, and its record.
 */
export async function createToken(
  store: { addToken(token: TokenRecord): Promise<void> },
  role: Role,
  name: string,
  created = Date.now(),
): Promise<{ token: string; record: TokenRecord }> {
  const token = newToken();
  const record: TokenRecord = { name, role, hash: tokenHash(token), created, revoked: null };
  await store.addToken(record);
  return { token, record };
}

/** Whether `value` names a role. */
export function isRole(value: unknown): value is Role {
  return typeof value === "string" && (ROLES as readonly string[]).includes(value);
}

/** Whether a token of role `have` may do what needs `need`. */
export function allows(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

/** What a request's Authorization header carries. */
export type Credentials =
  | { readonly kind: "none" }
  | { readonly kind: "malformed" }
  | { readonly kind: "token"; readonly token: string };

/** Reads an Authorization header: `Bearer pbt_...` (the scheme in any case). */
export function parseAuthorization(header: string | null): Credentials {
  if (header === null || header.trim() === "") return { kind: "none" };
  // Hostile input: nothing longer than a token and its scheme is looked at.
  if (header.length > 200) return { kind: "malformed" };
  const m = /^\s*bearer\s+(\S+)\s*$/i.exec(header);
  if (!m || !TOKEN_PATTERN.test(m[1])) return { kind: "malformed" };
  return { kind: "token", token: m[1] };
}

/** Whether a call may go on, and who made it (null when no known token). */
export type AuthDecision =
  | { readonly ok: true; readonly caller: TokenRecord }
  | {
    readonly ok: false;
    readonly caller: TokenRecord | null;
    readonly error: UnauthorizedError | ForbiddenError;
    /** A few words for the audit log, e.g. "unknown token". */
    readonly reason: string;
  };

/**
 * The decision on a call that needs `need`, given its credentials and the
 * token found under their hash (undefined: none). `action` (e.g.
 * "POST /v1/rollouts") goes into a 403's message.
 */
export function decide(
  credentials: Credentials,
  found: TokenRecord | undefined,
  need: Role,
  action: string,
): AuthDecision {
  if (credentials.kind === "none") {
    return refuse(
      null,
      "no token",
      new UnauthorizedError(`no token: send "Authorization: Bearer TOKEN" (${HOW_TO_GET_ONE})`),
    );
  }
  if (credentials.kind === "malformed") {
    return refuse(
      null,
      "malformed token",
      new UnauthorizedError(
        `malformed Authorization header: send "Authorization: Bearer pbt_..." with a whole token (${HOW_TO_GET_ONE})`,
      ),
    );
  }
  if (found === undefined) {
    return refuse(
      null,
      "unknown token",
      new UnauthorizedError(`unknown token: ask an admin for a valid one (${HOW_TO_GET_ONE})`),
    );
  }
  if (found.revoked !== null) {
    return refuse(
      found,
      "revoked token",
      new UnauthorizedError(
        `token "${found.name}" was revoked: ask an admin for a new one (${HOW_TO_GET_ONE})`,
      ),
    );
  }
  if (!allows(found.role, need)) {
    return refuse(
      found,
      `role ${found.role}, needs ${need}`,
      new ForbiddenError(
        `token "${found.name}" has role ${found.role}; ${
          cap(action)
        } needs ${need} or above: ask an admin for a token with that role`,
      ),
    );
  }
  return { ok: true, caller: found };
}

function refuse(
  caller: TokenRecord | null,
  reason: string,
  error: UnauthorizedError | ForbiddenError,
): AuthDecision {
  return { ok: false, caller, error, reason };
}

/** Reads the request's credentials, looks the token up, and decides (`decide`). */
export async function authenticate(
  store: StateStore,
  authorization: string | null,
  need: Role,
  action: string,
): Promise<AuthDecision> {
  const credentials = parseAuthorization(authorization);
  const found = credentials.kind === "token"
    ? await store.tokenByHash(tokenHash(credentials.token))
    : undefined;
  return decide(credentials, found, need, action);
}

/** An audit log entry, every text field cut to `MAX_AUDIT_FIELD` characters. */
export function auditEntry(
  at: number,
  caller: TokenRecord | null,
  action: string,
  target: string | null,
  status: number,
  reason: string,
): AuditRecord {
  return {
    at,
    token: caller?.name ?? null,
    role: caller?.role ?? null,
    action: cap(action),
    target: target === null ? null : cap(target),
    status,
    reason: cap(reason),
  };
}

/** `text` cut to `MAX_AUDIT_FIELD` characters (with "…" when cut). */
export function cap(text: string): string {
  return text.length <= MAX_AUDIT_FIELD ? text : `${text.slice(0, MAX_AUDIT_FIELD - 1)}…`;
}
