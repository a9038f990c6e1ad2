/**
 * The release room as a specification (docs/spec/release-v1.md): canonical
 * JSON, base64url, key files, the two signed documents and their parsers, and
 * the device's trust decision — one test per refusal — plus the test vectors
 * of the specification, reproduced from a fixed key.
 */

import assert from "node:assert/strict";
import { canonicalBytes, canonicalJson } from "../release/canonical_json.ts";
import {
  type Delegation,
  DELEGATION_TYPE,
  formatTime,
  MalformedDocumentError,
  MAX_DOCUMENT_BYTES,
  parseDelegation,
  parseRelease,
  parseTime,
  type Release,
  RELEASE_TYPE,
  signDelegation,
  signRelease,
  SPEC_VERSION,
  verifiedSigners,
} from "../release/documents.ts";
import {
  fromBase64Url,
  generateKey,
  keyIdOf,
  privateKeyFileText,
  readPublicKey,
  readSigningKey,
  type SigningKey,
  toBase64Url,
  writeKeyPair,
} from "../release/keys.ts";
import {
  checkRelease,
  EMPTY_TRUST_MEMORY,
  remember,
  rememberDelegation,
  type TrustFacts,
  type TrustMemory,
} from "../release/trust_policy.ts";
import { InvalidArgumentError, IoError } from "../kernel/errors.ts";
import { withTempDir } from "./helpers.ts";

const enc = (text: string) => new TextEncoder().encode(text);
const NOW = Date.parse("2026-06-01T00:00:00Z");
const DAY = 86_400_000;
const TARGET = "ab".repeat(32);

/** Ed25519 PKCS8 of a 32-byte seed (RFC 8410 prefix). */
function pkcs8OfSeed(seed: Uint8Array): Uint8Array {
  const prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04];
  return Uint8Array.from([...prefix, 0x22, 0x04, 0x20, ...seed]);
}

/** A signing key from a fixed seed: the same key on every run (Ed25519 signatures are deterministic). */
async function fixedKey(role: "root" | "release", seedByte: number): Promise<SigningKey> {
  const seed = Uint8Array.from({ length: 32 }, (_, i) => (seedByte + i) & 0xff);
  const pkcs8 = pkcs8OfSeed(seed);
  const extractable = await crypto.subtle.importKey(
    "pkcs8",
    new Uint8Array(pkcs8),
    { name: "Ed25519" },
    true,
    ["sign"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", extractable);
  const publicKey = fromBase64Url(jwk.x!)!;
  return { role, keyId: keyIdOf(publicKey), publicKey, privateKey: extractable };
}

function delegationOf(keys: SigningKey[], root: SigningKey, over: Partial<Delegation> = {}) {
  return {
    type: DELEGATION_TYPE,
    spec: SPEC_VERSION,
    version: 1,
    expires: NOW + 365 * DAY,
    rootKeyId: root.keyId,
    releaseKeys: keys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
    ...over,
  } satisfies Delegation;
}

function releaseOf(over: Partial<Release> = {}): Release {
  return {
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model: "resnet",
    version: "v2",
    target: { blake3: TARGET, size: 1000 },
    counter: 5,
    expires: NOW + 90 * DAY,
    deviceClass: null,
    ...over,
  };
}

type Fields = Record<string, unknown>;

/** A document's JSON, loosely typed, for a test to change one field of it. */
interface Json {
  [field: string]: unknown;
  signed: Fields & { target: Fields; releaseKeys: Fields[] };
  signatures?: Fields[];
}

function reparse(text: string, edit: (doc: Json) => void): Uint8Array {
  const doc = JSON.parse(text) as Json;
  edit(doc);
  return enc(JSON.stringify(doc));
}

// --- canonical JSON ---

Deno.test("canonical JSON sorts object keys at every depth and writes no whitespace", () => {
  assert.equal(
    canonicalJson({ b: 1, a: [true, null, { z: "x", y: { d: 2, c: 1 } }] }),
    '{"a":[true,null,{"y":{"c":1,"d":2},"z":"x"}],"b":1}',
  );
  assert.equal(canonicalJson({ "é": 1, "Z": 2, "a": 3 }), '{"Z":2,"a":3,"é":1}');
  assert.deepEqual(canonicalBytes({ a: "é" }), enc('{"a":"é"}'));
});

Deno.test("canonical JSON refuses floats, -0, unsafe integers, undefined, functions and class instances", () => {
  for (
    const bad of [1.5, -0, 2 ** 53, NaN, Infinity, undefined, () => 1, new Date(0), new Map()]
  ) {
    assert.throws(() => canonicalJson({ a: bad }), InvalidArgumentError, String(bad));
  }
  assert.throws(() => canonicalJson([1, [2, 0.1]]), InvalidArgumentError);
  assert.equal(canonicalJson({ a: -(2 ** 53 - 1), b: 0 }), '{"a":-9007199254740991,"b":0}');
});

Deno.test("canonical JSON refuses nesting deeper than 16", () => {
  let deep: unknown = 1;
  for (let i = 0; i < 17; i++) deep = [deep];
  assert.throws(() => canonicalJson(deep), InvalidArgumentError);
  let ok: unknown = 1;
  for (let i = 0; i < 16; i++) ok = [ok];
  assert.equal(canonicalJson(ok), "[".repeat(16) + "1" + "]".repeat(16));
});

// --- base64url ---

Deno.test("base64url round-trips every length without padding", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
    const text = toBase64Url(bytes);
    assert.doesNotMatch(text, /[=+/]/);
    assert.deepEqual(fromBase64Url(text), bytes);
  }
  assert.equal(toBase64Url(Uint8Array.from([0xfb, 0xff])), "-_8");
});

Deno.test("base64url refuses padding, the other alphabet, impossible lengths and non-canonical last characters", () => {
  assert.equal(fromBase64Url("AQ=="), undefined);
  assert.equal(fromBase64Url("+/8"), undefined);
  assert.equal(fromBase64Url("A"), undefined);
  assert.equal(fromBase64Url("AB"), undefined, "'B' leaves unused bits set: only 'AQ' spells 0x01");
  assert.deepEqual(fromBase64Url("AQ"), Uint8Array.from([1]));
  assert.equal(fromBase64Url("AQ "), undefined);
});

// --- key files ---

Deno.test("keygen writes a 0600 private key and a public key file, and never overwrites them", async () => {
  await withTempDir(async (dir) => {
    const { key, privatePath, publicPath } = await writeKeyPair(`${dir}/k`, "release");
    assert.equal((await Deno.stat(privatePath)).mode! & 0o777, 0o600);
    const pub = await readPublicKey(publicPath, "release");
    assert.equal(pub.keyId, key.keyId);
    assert.equal(pub.keyId, keyIdOf(pub.publicKey));
    const signing = await readSigningKey(privatePath, "release");
    assert.equal(signing.keyId, key.keyId);
    const before = await Deno.readTextFile(privatePath);
    await assert.rejects(writeKeyPair(`${dir}/k`, "release"), /never overwritten/);
    assert.equal(await Deno.readTextFile(privatePath), before);
    // The public half of the private key file is also a public key.
    assert.equal((await readPublicKey(privatePath)).keyId, key.keyId);
  });
});

Deno.test("a private key file group or others may read is refused with a message naming chmod 600", async () => {
  await withTempDir(async (dir) => {
    const { privatePath } = await writeKeyPair(dir, "root");
    for (const mode of [0o644, 0o640, 0o604]) {
      await Deno.chmod(privatePath, mode);
      await assert.rejects(readSigningKey(privatePath), (err: Error) => {
        assert.ok(err instanceof IoError);
        assert.match(err.message, new RegExp(`chmod 600 ${privatePath}`));
        assert.match(err.message, new RegExp(mode.toString(8)));
        return true;
      });
    }
    await Deno.chmod(privatePath, 0o600);
    assert.equal((await readSigningKey(privatePath)).role, "root");
  });
});

Deno.test("a key of the other role, or a private key whose public half differs, is refused", async () => {
  await withTempDir(async (dir) => {
    const { privatePath, publicPath } = await writeKeyPair(dir, "root");
    await assert.rejects(readSigningKey(privatePath, "release"), /is a root key/);
    await Deno.chmod(publicPath, 0o600);
    await assert.rejects(readSigningKey(publicPath), /not a private key/);
    const other = await generateKey("root");
    const mine = await generateKey("root");
    const mixed = `${dir}/mixed.key`;
    // other's public key with mine's private key
    await Deno.writeTextFile(mixed, privateKeyFileText(other.key, mine.pkcs8), { mode: 0o600 });
    await assert.rejects(readSigningKey(mixed), /does not match its public key/);
  });
});

// --- documents ---

Deno.test("a signed delegation and a signed release parse back to what was signed, and their signatures verify", async () => {
  const root = await fixedKey("root", 1);
  const rel = await fixedKey("release", 2);
  const d = delegationOf([rel], root);
  const dDoc = parseDelegation(enc(await signDelegation(d, root)));
  assert.deepEqual(dDoc.signed, d);
  assert.deepEqual([...await verifiedSigners(dDoc, [root])], [root.keyId]);
  const r = releaseOf({ deviceClass: "jetson" });
  const rDoc = parseRelease(enc(await signRelease(r, rel)));
  assert.deepEqual(rDoc.signed, r);
  assert.deepEqual([...await verifiedSigners(rDoc, d.releaseKeys)], [rel.keyId]);
  // Another key's list: nobody verified.
  assert.equal((await verifiedSigners(rDoc, [root])).size, 0);
});

Deno.test("a changed signed field or a changed signature no longer verifies", async () => {
  const rel = await fixedKey("release", 2);
  const text = await signRelease(releaseOf(), rel);
  const keys = [{ keyId: rel.keyId, publicKey: rel.publicKey }];
  const bumped = parseRelease(
    reparse(text, (j) => j.signed.counter = (j.signed.counter as number) + 1),
  );
  assert.equal((await verifiedSigners(bumped, keys)).size, 0);
  const flipped = parseRelease(reparse(text, (j) => {
    const sig = fromBase64Url(j.signatures![0].signature as string)!;
    sig[10] ^= 1;
    j.signatures![0].signature = toBase64Url(sig);
  }));
  assert.equal((await verifiedSigners(flipped, keys)).size, 0);
  // Reformatting the envelope changes nothing: the signature covers the canonical bytes.
  const reformatted = parseRelease(enc(JSON.stringify(JSON.parse(text))));
  assert.equal((await verifiedSigners(reformatted, keys)).size, 1);
});

Deno.test("a release manifest with any field out of the specification is refused as malformed", async () => {
  const rel = await fixedKey("release", 2);
  const text = await signRelease(releaseOf(), rel);
  const cases: [string, (j: Json) => void][] = [
    ["unknown field", (j) => j.signed.extra = 1],
    ["unknown envelope field", (j) => j.extra = 1],
    ["missing field", (j) => delete j.signed.deviceClass],
    ["missing signatures", (j) => delete j.signatures],
    ["bad hex", (j) => j.signed.target.blake3 = "AB".repeat(32)],
    ["short hex", (j) => j.signed.target.blake3 = "ab"],
    ["bad time", (j) => j.signed.expires = "2026-06-01T00:00:00.000Z"],
    ["impossible time", (j) => j.signed.expires = "2026-02-30T00:00:00Z"],
    ["time as a number", (j) => j.signed.expires = NOW],
    ["counter 0", (j) => j.signed.counter = 0],
    ["counter float", (j) => j.signed.counter = 1.5],
    ["counter above 2^53", (j) => j.signed.counter = 2 ** 53],
    ["counter as text", (j) => j.signed.counter = "5"],
    ["size -1", (j) => j.signed.target.size = -1],
    ["spec 2", (j) => j.signed.spec = 2],
    ["another type", (j) => j.signed.type = DELEGATION_TYPE],
    ["model not a name", (j) => j.signed.model = "../x"],
    ["device class not a name", (j) => j.signed.deviceClass = "-rf"],
    ["short signature", (j) => j.signatures![0].signature = "AAAA"],
    ["signature keyId not hex", (j) => j.signatures![0].keyId = "z".repeat(64)],
    ["nine signatures", (j) => j.signatures = Array(9).fill(j.signatures![0])],
  ];
  for (const [what, edit] of cases) {
    assert.throws(() => parseRelease(reparse(text, edit)), MalformedDocumentError, what);
  }
  assert.throws(() => parseRelease(enc("{")), MalformedDocumentError, "not JSON");
  assert.throws(() => parseRelease(Uint8Array.of(0xff)), MalformedDocumentError, "not UTF-8");
  // -0 is a number JSON can spell; a malformed document, not a crash.
  assert.throws(
    () => parseRelease(enc(text.replace('"size": 1000', '"size": -0'))),
    MalformedDocumentError,
  );
  // Eight signatures are allowed.
  assert.equal(
    parseRelease(reparse(text, (j) => j.signatures = Array(8).fill(j.signatures![0])))
      .signatures.length,
    8,
  );
});

Deno.test("a document over 64 KiB is refused before it is parsed", async () => {
  const rel = await fixedKey("release", 2);
  const text = await signRelease(releaseOf(), rel);
  const padded = text.replace("{", "{" + " ".repeat(MAX_DOCUMENT_BYTES));
  assert.throws(() => parseRelease(enc(padded)), /over 65536 bytes/);
});

Deno.test("a delegation naming over 32 keys, a key of the wrong length or a keyId not its key's is malformed", async () => {
  const root = await fixedKey("root", 1);
  const rel = await fixedKey("release", 2);
  const text = await signDelegation(delegationOf([rel], root), root);
  const cases: [string, (j: Json) => void][] = [
    ["33 keys", (j) => j.signed.releaseKeys = Array(33).fill(j.signed.releaseKeys[0])],
    ["31-byte key", (j) => j.signed.releaseKeys[0].publicKey = toBase64Url(new Uint8Array(31))],
    ["keyId of another key", (j) => j.signed.releaseKeys[0].keyId = root.keyId],
    ["version 0", (j) => j.signed.version = 0],
    ["rootKeyId not hex", (j) => j.signed.rootKeyId = "x"],
    ["unknown key field", (j) => j.signed.releaseKeys[0].role = "release"],
  ];
  for (const [what, edit] of cases) {
    assert.throws(() => parseDelegation(reparse(text, edit)), MalformedDocumentError, what);
  }
  assert.equal(
    parseDelegation(
      reparse(text, (j) => j.signed.releaseKeys = Array(32).fill(j.signed.releaseKeys[0])),
    )
      .signed.releaseKeys.length,
    32,
  );
});

Deno.test("times are written YYYY-MM-DDTHH:MM:SSZ in whole seconds and read back only in that form", () => {
  assert.equal(formatTime(Date.parse("2026-01-02T03:04:05.999Z")), "2026-01-02T03:04:05Z");
  assert.equal(parseTime("2026-01-02T03:04:05Z"), Date.parse("2026-01-02T03:04:05Z"));
  for (const bad of ["2026-01-02T03:04:05+00:00", "2026-01-02 03:04:05Z", "2026-13-01T00:00:00Z"]) {
    assert.equal(parseTime(bad), undefined, bad);
  }
});

// --- the trust decision ---

interface World {
  root: SigningKey;
  rel: SigningKey;
  delegation: Uint8Array;
  facts: (release: Release | Uint8Array | null, over?: Partial<TrustFacts>) => Promise<TrustFacts>;
}

async function world(): Promise<World> {
  const root = await fixedKey("root", 1);
  const rel = await fixedKey("release", 2);
  const delegation = enc(await signDelegation(delegationOf([rel], root), root));
  return {
    root,
    rel,
    delegation,
    facts: async (release, over = {}) => ({
      root: { role: "root", keyId: root.keyId, publicKey: root.publicKey },
      delegation,
      release: release === null
        ? null
        : release instanceof Uint8Array
        ? release
        : enc(await signRelease(release, rel)),
      announced: { model: "resnet", version: "v2", target: TARGET, targetSize: 1000 },
      deviceClass: null,
      memory: EMPTY_TRUST_MEMORY,
      now: NOW,
      ...over,
    }),
  };
}

async function refusal(facts: TrustFacts): Promise<string> {
  const decision = await checkRelease(facts);
  assert.equal(decision.ok, false, "expected a refusal");
  if (decision.ok) return "";
  assert.match(decision.reason, /^refused: /);
  return decision.kind;
}

Deno.test("a release signed by a delegated key, for the announced target, not expired and not older, is accepted", async () => {
  const w = await world();
  const decision = await checkRelease(await w.facts(releaseOf()));
  assert.ok(decision.ok);
  assert.equal(decision.release.counter, 5);
  assert.equal(decision.delegation.version, 1);
});

Deno.test("refused as unsigned: no documents, or a manifest without signatures", async () => {
  const w = await world();
  assert.equal(await refusal(await w.facts(null)), "unsigned");
  assert.equal(await refusal({ ...(await w.facts(releaseOf())), delegation: null }), "unsigned");
  const text = await signRelease(releaseOf(), w.rel);
  assert.equal(
    await refusal(await w.facts(reparse(text, (j) => j.signatures = []))),
    "unsigned",
  );
});

Deno.test("refused as malformed: a document that does not parse", async () => {
  const w = await world();
  assert.equal(await refusal(await w.facts(enc("{}"))), "malformed");
  assert.equal(
    await refusal({ ...(await w.facts(releaseOf())), delegation: enc("[]") }),
    "malformed",
  );
});

Deno.test("refused as untrustedDelegation: a delegation signed by another root than the pinned one", async () => {
  const w = await world();
  const rogue = await fixedKey("root", 9);
  const forged = enc(await signDelegation(delegationOf([w.rel], rogue), rogue));
  assert.equal(
    await refusal({ ...(await w.facts(releaseOf())), delegation: forged }),
    "untrustedDelegation",
  );
  // The pinned root's id with the rogue's signature.
  const claimed = enc(
    await signDelegation(delegationOf([w.rel], rogue, { rootKeyId: w.root.keyId }), rogue),
  );
  assert.equal(
    await refusal({ ...(await w.facts(releaseOf())), delegation: claimed }),
    "untrustedDelegation",
  );
});

Deno.test("refused as staleDelegation: a delegation older than one the device has seen", async () => {
  const w = await world();
  const memory: TrustMemory = { delegationVersion: 2, counters: {} };
  assert.equal(await refusal(await w.facts(releaseOf(), { memory })), "staleDelegation");
});

Deno.test("refused as expiredDelegation: a delegation past its expiry", async () => {
  const w = await world();
  const expired = enc(
    await signDelegation(delegationOf([w.rel], w.root, { expires: NOW - 1000 }), w.root),
  );
  assert.equal(
    await refusal({ ...(await w.facts(releaseOf())), delegation: expired }),
    "expiredDelegation",
  );
});

Deno.test("refused as unknownKey: a manifest signed by a key the delegation does not name, including one a newer delegation dropped", async () => {
  const w = await world();
  const outsider = await fixedKey("release", 7);
  const byOutsider = enc(await signRelease(releaseOf(), outsider));
  assert.equal(await refusal(await w.facts(byOutsider)), "unknownKey");
  // Rotation: delegation version 2 names only the new key; the old key's manifests are refused.
  const newKey = await fixedKey("release", 3);
  const v2 = enc(
    await signDelegation(delegationOf([newKey], w.root, { version: 2 }), w.root),
  );
  const memory: TrustMemory = { delegationVersion: 2, counters: {} };
  assert.equal(
    await refusal({ ...(await w.facts(releaseOf(), { memory })), delegation: v2 }),
    "unknownKey",
  );
  const byNewKey = enc(await signRelease(releaseOf(), newKey));
  const accepted = await checkRelease({
    ...(await w.facts(byNewKey, { memory })),
    delegation: v2,
  });
  assert.ok(accepted.ok);
});

Deno.test("refused as expired: a manifest past its expiry (a freeze)", async () => {
  const w = await world();
  assert.equal(await refusal(await w.facts(releaseOf({ expires: NOW }))), "expired");
});

Deno.test("refused as wrongModel: a genuine manifest of another model (mix-and-match)", async () => {
  const w = await world();
  assert.equal(await refusal(await w.facts(releaseOf({ model: "bert" }))), "wrongModel");
});

Deno.test("refused as wrongTarget: an announced digest, size or version that is not the signed one", async () => {
  const w = await world();
  for (
    const announced of [
      { model: "resnet", version: "v2", target: "cd".repeat(32), targetSize: 1000 },
      { model: "resnet", version: "v2", target: TARGET, targetSize: 999 },
      { model: "resnet", version: "v3", target: TARGET, targetSize: 1000 },
    ]
  ) {
    assert.equal(await refusal(await w.facts(releaseOf(), { announced })), "wrongTarget");
  }
});

Deno.test("refused as rollback: a lower counter than installed, or the same counter for another target", async () => {
  const w = await world();
  const lower: TrustMemory = {
    delegationVersion: 1,
    counters: { resnet: { counter: 6, target: "ef".repeat(32) } },
  };
  assert.equal(await refusal(await w.facts(releaseOf(), { memory: lower })), "rollback");
  const same: TrustMemory = {
    delegationVersion: 1,
    counters: { resnet: { counter: 5, target: "ef".repeat(32) } },
  };
  assert.equal(await refusal(await w.facts(releaseOf(), { memory: same })), "rollback");
  // The same counter for the same target (installed again) and another model's counters are fine.
  const again: TrustMemory = {
    delegationVersion: 1,
    counters: { resnet: { counter: 5, target: TARGET }, bert: { counter: 99, target: TARGET } },
  };
  assert.ok((await checkRelease(await w.facts(releaseOf(), { memory: again }))).ok);
});

Deno.test("refused as wrongDeviceClass: a manifest for another device class, or a classed one on a device of none", async () => {
  const w = await world();
  const classed = releaseOf({ deviceClass: "jetson" });
  assert.equal(
    await refusal(await w.facts(classed, { deviceClass: "pi" })),
    "wrongDeviceClass",
  );
  assert.equal(await refusal(await w.facts(classed)), "wrongDeviceClass");
  assert.ok((await checkRelease(await w.facts(classed, { deviceClass: "jetson" }))).ok);
  assert.ok((await checkRelease(await w.facts(releaseOf(), { deviceClass: "pi" }))).ok);
});

Deno.test("a refusal of the release carries its delegation only when the delegation itself passed", async () => {
  const w = await world();
  const outsider = await fixedKey("release", 7);
  const newKey = await fixedKey("release", 3);
  const v2 = enc(await signDelegation(delegationOf([newKey], w.root, { version: 2 }), w.root));
  // The release is refused (its key was dropped), but delegation version 2 passed: the device
  // remembers it, so delegation version 1 (which still names the old key) is stale from now on.
  const byOldKey = await checkRelease({ ...(await w.facts(releaseOf())), delegation: v2 });
  assert.ok(!byOldKey.ok);
  assert.equal(byOldKey.kind, "unknownKey");
  assert.equal(byOldKey.delegation?.version, 2);
  const memory = rememberDelegation(EMPTY_TRUST_MEMORY, byOldKey.delegation!);
  assert.equal(memory.delegationVersion, 2);
  assert.equal(await refusal(await w.facts(releaseOf(), { memory })), "staleDelegation");
  // A delegation that did not pass is never carried.
  const stale = await checkRelease(await w.facts(releaseOf(), { memory }));
  assert.ok(!stale.ok && stale.delegation === undefined);
  const rogue = await fixedKey("root", 9);
  const forged = enc(await signDelegation(delegationOf([outsider], rogue), rogue));
  const untrusted = await checkRelease({ ...(await w.facts(releaseOf())), delegation: forged });
  assert.ok(!untrusted.ok && untrusted.delegation === undefined);
  // rememberDelegation never lowers the version.
  assert.equal(rememberDelegation(memory, delegationOfValue(1)).delegationVersion, 2);
});

Deno.test("remember only grows: the counter of a model and the delegation version never go down", () => {
  const d1 = delegationOfValue(1);
  const d3 = delegationOfValue(3);
  let memory = remember(EMPTY_TRUST_MEMORY, releaseOf({ counter: 5 }), d3);
  assert.deepEqual(memory, {
    delegationVersion: 3,
    counters: { resnet: { counter: 5, target: TARGET } },
  });
  memory = remember(
    memory,
    releaseOf({ counter: 2, target: { blake3: "cd".repeat(32), size: 1 } }),
    d1,
  );
  assert.deepEqual(memory, {
    delegationVersion: 3,
    counters: { resnet: { counter: 5, target: TARGET } },
  });
  memory = remember(memory, releaseOf({ model: "bert", counter: 1 }), d1);
  assert.equal(memory.counters.resnet.counter, 5);
  assert.equal(memory.counters.bert.counter, 1);
  memory = remember(memory, releaseOf({ counter: 7 }), d1);
  assert.equal(memory.counters.resnet.counter, 7);
  assert.equal(memory.delegationVersion, 3);
});

function delegationOfValue(version: number): Delegation {
  return {
    type: DELEGATION_TYPE,
    spec: SPEC_VERSION,
    version,
    expires: NOW + DAY,
    rootKeyId: "00".repeat(32),
    releaseKeys: [],
  };
}

// --- test vectors of docs/spec/release-v1.md ---

Deno.test("the specification's test vectors: fixed keys give these key ids, canonical bytes and signatures", async () => {
  const root = await fixedKey("root", 1);
  const rel = await fixedKey("release", 2);
  const seed = (first: number) => Uint8Array.from({ length: 32 }, (_, i) => first + i);
  assert.equal(toBase64Url(pkcs8OfSeed(seed(1))), VECTORS.rootPkcs8);
  assert.equal(toBase64Url(pkcs8OfSeed(seed(2))), VECTORS.releasePkcs8);
  assert.equal(toBase64Url(root.publicKey), VECTORS.rootPublicKey);
  assert.equal(root.keyId, VECTORS.rootKeyId);
  assert.equal(toBase64Url(rel.publicKey), VECTORS.releasePublicKey);
  assert.equal(rel.keyId, VECTORS.releaseKeyId);
  const delegation = parseDelegation(enc(
    await signDelegation(
      delegationOf([rel], root, { expires: Date.parse("2027-01-01T00:00:00Z") }),
      root,
    ),
  ));
  assert.equal(new TextDecoder().decode(delegation.signedBytes), VECTORS.delegationCanonical);
  assert.equal(toBase64Url(delegation.signatures[0].signature), VECTORS.delegationSignature);
  const release = parseRelease(enc(
    await signRelease(
      releaseOf({ expires: Date.parse("2026-09-01T00:00:00Z"), deviceClass: "jetson" }),
      rel,
    ),
  ));
  assert.equal(new TextDecoder().decode(release.signedBytes), VECTORS.releaseCanonical);
  assert.equal(toBase64Url(release.signatures[0].signature), VECTORS.releaseSignature);
  // And the vectors decide as the specification says.
  const decision = await checkRelease({
    root,
    delegation: enc(
      JSON.stringify({
        signed: JSON.parse(VECTORS.delegationCanonical),
        signatures: [{ keyId: VECTORS.rootKeyId, signature: VECTORS.delegationSignature }],
      }),
    ),
    release: enc(
      JSON.stringify({
        signed: JSON.parse(VECTORS.releaseCanonical),
        signatures: [{ keyId: VECTORS.releaseKeyId, signature: VECTORS.releaseSignature }],
      }),
    ),
    announced: { model: "resnet", version: "v2", target: TARGET, targetSize: 1000 },
    deviceClass: "jetson",
    memory: EMPTY_TRUST_MEMORY,
    now: NOW,
  });
  assert.ok(decision.ok);
});

/** The values printed in docs/spec/release-v1.md, "Test vectors". */
const VECTORS = {
  rootPkcs8: "MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",
  releasePkcs8: "MC4CAQAwBQYDK2VwBCIEIAIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh",
  rootPublicKey: "ebVWLo_mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ",
  rootKeyId: "4718b4ce16a67de3058dc11ffee75090e5cdc96e57de6d6386d228e4b30f4441",
  releasePublicKey: "Q83AI9ItX54QfRoGk0V9NdHRDrfSHHIRkvVvXeQGZdM",
  releaseKeyId: "96cbab261313e2dfe3d1540f55cae317755b64e60e058c5c9c91b705b923d24d",
  delegationCanonical:
    '{"expires":"2027-01-01T00:00:00Z","releaseKeys":[{"keyId":"96cbab261313e2dfe3d1540f55cae317755b64e60e058c5c9c91b705b923d24d","publicKey":"Q83AI9ItX54QfRoGk0V9NdHRDrfSHHIRkvVvXeQGZdM"}],"rootKeyId":"4718b4ce16a67de3058dc11ffee75090e5cdc96e57de6d6386d228e4b30f4441","spec":1,"type":"poolboy.delegation","version":1}',
  delegationSignature:
    "eEjqN9vvaibt8kA4c_1xCbsWgiw6-CFUH6v09vsDsebNExlqBQlcTkXNliU-rV6zwrylyFsQOwGDuArqk2TcAA",
  releaseCanonical:
    '{"counter":5,"deviceClass":"jetson","expires":"2026-09-01T00:00:00Z","model":"resnet","spec":1,"target":{"blake3":"abababababababababababababababababababababababababababababababab","size":1000},"type":"poolboy.release","version":"v2"}',
  releaseSignature:
    "DPEPsWSLM6zHSTkT6XrgCp3H9-xtRSkCFk7Z07u2S0OAVaoa-V6T8P-zImRvCny_qkky8zZx5DPNrxm7O2NMAA",
};
