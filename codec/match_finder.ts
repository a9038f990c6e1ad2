/**
 * The v2 encoder's global match finder: where in the base do a few dozen or
 * more target bytes occur, wherever they moved to? (Whole-chunk matches and
 * the equal runs near the offset the last COPY implies miss pieces smaller
 * than a chunk that moved: tensors re-ordered or re-aligned by another
 * exporter, the same weights in another container.)
 *
 * Algorithm (content-defined anchors, like a chunker's cut points but far
 * denser, and never cutting anything):
 *
 * - A 32-bit gear hash rolls over the bytes (`h = (h << 1) + GEAR[byte]`, so
 *   `h` at position i depends on the 32 bytes ending at i; `GEAR` is 256
 *   SplitMix32 words seeded with "mtch", not the chunker's table). At level
 *   `L` (5 ≤ L ≤ 31), position i is an *anchor* when the top L bits of `h`
 *   are zero (one position in 2^L on random bytes), i ≥ 31 from the start of
 *   the stream, and the previous anchor is not 1..32 bytes before it with the
 *   same key (below; a run of one byte or of a short period makes one
 *   anchor, not one per period). The anchors of level L + 1 are a subset of those of
 *   level L. All of this depends only on the bytes of the window and the 32
 *   before it, so a piece of the base that moved anywhere in the target has
 *   the same anchors inside (but for its first 32 bytes).
 * - An anchor's *key* is 32 bits: the leading zero bits of `h` (the highest
 *   level it is an anchor of, 5 bits) and 27 bits of a fingerprint of its
 *   32-byte window (FNV-1a with a final avalanche).
 * - The base's anchors go into a fixed-size open-addressing table (linear
 *   probing) of key (`Int32Array`) → 1 + window offset (`Uint32Array`; a
 *   `Float64Array` for bases of 4 GiB and more): 8 bytes a slot (12). The
 *   table has `slotsFor(baseSize)` slots: a power of two, 1 per 16 bytes of
 *   base, at least `MIN_SLOTS` and at most `maxSlots` (default
 *   `DEFAULT_MAX_SLOTS`, 2^17). The starting level is the smallest ≥ 5 that
 *   expects at most `slots / 2` anchors (`levelFor`); whenever more than
 *   `MAX_LOAD` (3/4) of the slots would be full (bytes with more anchors than
 *   expected), the level goes up by one and the entries no longer anchors
 *   leave (about half), re-placed in place. At most `MAX_PER_KEY` (4) entries
 *   share a key and an insert probes at most `MAX_PROBE` slots (else it is
 *   dropped and counted). The table never grows: its memory is fixed when
 *   the base's size is known, and the anchor spacing grows with the base
 *   instead.
 * - Lookup (`find`): the same anchors, at the table's final level, over a
 *   block of target bytes; each is looked up (at most `MAX_PER_KEY`
 *   candidates, `MAX_PROBE` slots), and each candidate is VERIFIED against
 *   the base's bytes as read now (a key proves nothing: collisions, a base
 *   changed since it was indexed) and extended both ways as far as the bytes
 *   stay equal; the longest verified run wins and the anchors it covers are
 *   skipped. Runs shorter than `MIN_MATCH` are dropped. Reads of the base per
 *   `find` are bounded (`MAX_READS_PER_FIND`, each at most `EXTEND_WINDOW`).
 *
 * Memory with the default budget: the table is 1 MiB (1.05 MB) for every base
 * from 2 MiB to 4 GiB (smaller below: 0.5 MB per MB of base), 1.5 MiB from
 * 4 GiB on, plus one `EXTEND_WINDOW` (64 KiB) read buffer: 1.05 MB per GB of
 * base at 1 GiB, 0.26 MB per GB at 4 GiB, 0.08 MB per GB at 20 GB (measured:
 * encode peak RSS +2.5 MB on average over the 16 MiB corpus with a 2 MiB
 * table, of which ~1 MB is code and heap). The anchor spacing (2^level)
 * doubles with the base instead: 32 bytes up to 2 MiB, 256 at 16 MiB, 1 KiB
 * at 64 MiB, 16 KiB at 1 GiB, 64 KiB at 4 GiB. A moved piece of `len` bytes
 * is found when at least one anchor lies inside it: probability about
 * 1 − e^(−(len − 32) / spacing); once found it is extended to its full length
 * whatever the spacing. `maxSlots` trades memory for spacing (each doubling
 * halves the spacing of bases past the cap).
 *
 * Cost: the base pass rolls the hash over every byte, four bytes at a time
 * while none is an anchor (about 1.4 GB/s of CPU time here), plus one
 * fingerprint and one insert per anchor.
 *
 * @module
 */

/** Bytes in the window a gear hash and a fingerprint cover. */
export const WINDOW = 32;
/** Finest anchor level: one position in 2^5 = 32. */
export const MIN_LEVEL = 5;
/** Default most slots in the table (8 bytes each for bases under 4 GiB: 1 MiB). */
export const DEFAULT_MAX_SLOTS = 1 << 17;
/** Fewest slots (a table for a tiny base). */
export const MIN_SLOTS = 1 << 10;
/** Bytes of table per slot: an Int32 key and a Uint32 base offset (Float64 from 4 GiB: 12). */
export function bytesPerSlot(baseSize: number): number {
  return baseSize <= MAX_U32_BASE ? 8 : 12;
}
/** Largest base whose window offsets + 1 fit a Uint32. */
const MAX_U32_BASE = 0xffffffff;
/** Most entries with one fingerprint (repeated content stores only a few of its places). */
export const MAX_PER_KEY = 4;
/** Most slots one insert or lookup probes. */
export const MAX_PROBE = 64;
/** Shortest run `find` returns. */
export const MIN_MATCH = 24;
/** Bytes of the base read at once while verifying or extending a candidate. */
export const EXTEND_WINDOW = 64 * 1024;
/** Bytes read around a candidate first (most candidates end within them). */
const FIRST_READ = 512;
/** Most reads of the base one `find` makes; anchors after that are not looked up. */
export const MAX_READS_PER_FIND = 4096;

/** Target bytes from `start` to `end` (relative to the block) equal the base at `start + delta` on (absolute). */
export interface MatchRun {
  readonly start: number;
  readonly end: number;
  /** Base offset − target offset. */
  readonly delta: number;
}

/** Reads base bytes at `position` into `buf`; returns how many (fewer at the end of the base). */
export type BaseReader = (position: number, buf: Uint8Array) => number;

/** The table's state, for tests and the encoder's report. */
export interface MatchFinderStats {
  readonly slots: number;
  readonly entries: number;
  /** Anchor level: one anchor per 2^level bytes on random data. */
  readonly level: number;
  /** Bytes the table takes (`slots × bytesPerSlot`). */
  readonly tableBytes: number;
  /** Anchors not stored: a full probe sequence or `MAX_PER_KEY` already there. */
  readonly dropped: number;
  /** Base bytes fed. */
  readonly fed: number;
}

/** One anchor of a buffer: its window's start and table key. */
export interface Anchor {
  readonly offset: number;
  readonly key: number;
}

/** The gear table: 256 words of SplitMix32 seeded with "mtch" (not the chunker's). */
const GEAR: Int32Array = (() => {
  let state = 0x6d746368;
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    table[i] = z ^ (z >>> 16);
  }
  return table;
})();

/** Fingerprint of the `WINDOW` bytes of `bytes` from `at`. */
function fingerprintAt(bytes: Uint8Array, at: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = at; i < at + WINDOW; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** The table slot a fingerprint starts probing at. */
function homeSlot(fingerprint: number, mask: number): number {
  return (Math.imul(fingerprint, 0x9e3779b1) >>> 7) & mask;
}

/** Highest level (the key keeps the gear hash's leading zeros in 5 bits). */
export const MAX_LEVEL = 31;

/**
 * The table key of an anchor: the gear hash's leading zero bits (capped at
 * `MAX_LEVEL`: the highest level the anchor is one of) in the top 5 bits, the
 * window's fingerprint in the other 27.
 */
function keyOf(h: number, fingerprint: number): number {
  return (Math.min(MAX_LEVEL, Math.clz32(h)) << 27) | (fingerprint >>> 5);
}

/** Whether an anchor's key is an anchor at `level` too. */
function keyAtLevel(key: number, level: number): boolean {
  return key >>> 27 >= level;
}

/** Slots of the table for a base of `baseSize` bytes (a power of two). */
export function slotsFor(baseSize: number, maxSlots = DEFAULT_MAX_SLOTS): number {
  const wanted = Math.max(MIN_SLOTS, Math.ceil((baseSize / 2 ** MIN_LEVEL) * 2));
  const cap = 2 ** Math.floor(Math.log2(Math.max(MIN_SLOTS, maxSlots)));
  return Math.min(cap, 2 ** Math.ceil(Math.log2(wanted)));
}

/** The table goes one level up when more than this share of its slots is full. */
export const MAX_LOAD = 3 / 4;

/** Starting level for a base of `baseSize` bytes in a table of `slots`: at most slots / 2 anchors expected. */
export function levelFor(baseSize: number, slots: number): number {
  const spacing = Math.max(1, (baseSize * 2) / slots);
  return Math.max(MIN_LEVEL, Math.ceil(Math.log2(spacing)));
}

/**
 * The anchors of `bytes` taken as a stream of its own at `level` (window
 * offsets relative to `bytes`). The same rule `feed` and `find` use.
 */
export function anchorsOf(bytes: Uint8Array, level: number): Anchor[] {
  const out: Anchor[] = [];
  const scan = new GearScan(level);
  scan.run(bytes, (end, h) => {
    const at = end + 1 - WINDOW;
    const key = keyOf(h, fingerprintAt(bytes, at));
    if (!scan.repeats(end, key)) out.push({ offset: at, key });
    return end + 1;
  });
  return out;
}

/**
 * The rolling part: the gear hash over a stream fed in pieces, calling back
 * at every anchor of `level` (with the index in the current piece of the
 * window's last byte, and the gear hash there). The callback returns the
 * index to go on from (to skip bytes).
 */
class GearScan {
  /** Anchor level (the owner raises it). */
  level: number;
  #h = 0;
  /** Bytes of the stream seen (to know when the first window is full). */
  #seen = 0;
  /** Stream position of the last anchor, and its key. */
  #lastPoint = -Infinity;
  #lastKey = 0;

  constructor(level: number) {
    this.level = level;
  }

  /**
   * Whether the anchor at stream `position` with `key` repeats the previous
   * anchor (1..32 bytes before it, same key: a run of one byte or a short
   * period); either way it becomes the previous anchor.
   */
  repeats(position: number, key: number): boolean {
    const repeated = position - this.#lastPoint <= WINDOW && key === this.#lastKey;
    this.#lastPoint = position;
    this.#lastKey = key;
    return repeated;
  }

  run(bytes: Uint8Array, onAnchor: (end: number, h: number) => number): void {
    const gear = GEAR;
    const n = bytes.length;
    const seen = this.#seen;
    let h = this.#h;
    let levelShift = 32 - this.level;
    let below = 2 ** levelShift; // an anchor's hash, as an unsigned number, is below this
    let i = 0;
    // No anchors before the first full window.
    for (const firstFull = Math.min(n, WINDOW - 1 - seen); i < firstFull; i++) {
      h = ((h << 1) + gear[bytes[i]]) | 0;
    }
    while (i < n) {
      // Fast: four bytes at a time while none of them is an anchor.
      for (; i + 4 <= n; i += 4) {
        const a = ((h << 1) + gear[bytes[i]]) | 0;
        const b = ((a << 1) + gear[bytes[i + 1]]) | 0;
        const c = ((b << 1) + gear[bytes[i + 2]]) | 0;
        const d = ((c << 1) + gear[bytes[i + 3]]) | 0;
        if (Math.min(a >>> 0, b >>> 0, c >>> 0, d >>> 0) < below) break;
        h = d;
      }
      // Slow: up to four bytes one at a time, with every check.
      for (const stop = Math.min(i + 4, n); i < stop; i++) {
        h = ((h << 1) + gear[bytes[i]]) | 0;
        if (h >>> levelShift !== 0) continue;
        const next = onAnchor(i, h);
        levelShift = 32 - this.level;
        below = 2 ** levelShift;
        if (next > i + 1) {
          // Skipped bytes still roll through the hash (its window is 32 bytes).
          const to = Math.min(next, n);
          for (let j = Math.max(i + 1, to - WINDOW); j < to; j++) {
            h = ((h << 1) + gear[bytes[j]]) | 0;
          }
          // Positions in between are not anchors to anyone: a fresh window.
          this.#lastPoint = -Infinity;
          i = to;
          break;
        }
      }
    }
    this.#h = h;
    this.#seen = seen + n;
  }
}

/** The base's anchors in a bounded table; finds verified runs of target bytes in the base. */
export class MatchFinder {
  readonly #slots: number;
  readonly #mask: number;
  readonly #keys: Int32Array;
  /** 1 + window offset in the base of each slot's anchor; 0 if the slot is empty. */
  readonly #offsets: Uint32Array | Float64Array;
  readonly #baseSize: number;
  #level: number;
  #entries = 0;
  #dropped = 0;
  #fed = 0;
  readonly #scan: GearScan;
  /** The last `WINDOW − 1` bytes fed (a window may start in the previous piece). */
  readonly #tail = new Uint8Array(2 * WINDOW);
  #window: Uint8Array | undefined;

  /** A table for a base of `baseSize` bytes, at most `maxSlots` slots. */
  constructor(baseSize: number, options: { maxSlots?: number } = {}) {
    this.#baseSize = baseSize;
    this.#slots = slotsFor(baseSize, options.maxSlots);
    this.#mask = this.#slots - 1;
    this.#keys = new Int32Array(this.#slots);
    this.#offsets = baseSize <= MAX_U32_BASE
      ? new Uint32Array(this.#slots)
      : new Float64Array(this.#slots);
    this.#level = levelFor(baseSize, this.#slots);
    this.#scan = new GearScan(this.#level);
  }

  /** The table's size, fill and level. */
  get stats(): MatchFinderStats {
    return {
      slots: this.#slots,
      entries: this.#entries,
      level: this.#level,
      tableBytes: this.#slots * bytesPerSlot(this.#baseSize),
      dropped: this.#dropped,
      fed: this.#fed,
    };
  }

  /** The next bytes of the base, in order from its start (`offset` must be the bytes fed so far). */
  feed(offset: number, data: Uint8Array): void {
    if (offset !== this.#fed) {
      throw new RangeError(`match finder fed at ${offset}, expected ${this.#fed}`);
    }
    const start = this.#fed;
    const tail = this.#tail;
    const window = new Uint8Array(WINDOW);
    this.#scan.run(data, (end, h) => {
      const at = end + 1 - WINDOW;
      let fingerprint: number;
      if (at >= 0) fingerprint = fingerprintAt(data, at);
      else {
        // The window starts in the previous piece: its bytes are in the tail.
        window.set(tail.subarray(tail.length + at), 0);
        window.set(data.subarray(0, end + 1), -at);
        fingerprint = fingerprintAt(window, 0);
      }
      const key = keyOf(h, fingerprint);
      if (!this.#scan.repeats(start + end, key)) this.#insert(key, start + at);
      return end + 1;
    });
    if (data.length >= tail.length) tail.set(data.subarray(data.length - tail.length));
    else {
      tail.copyWithin(0, data.length);
      tail.set(data, tail.length - data.length);
    }
    this.#fed += data.length;
  }

  /**
   * Runs of `data` (target bytes at `targetOffset`) found in the base, each
   * verified byte for byte through `read`, at least `MIN_MATCH` long, in
   * order and not overlapping.
   */
  find(read: BaseReader, targetOffset: number, data: Uint8Array): MatchRun[] {
    const runs: MatchRun[] = [];
    if (this.#entries === 0 || data.length < WINDOW) return runs;
    const keys = this.#keys;
    const offsets = this.#offsets;
    const mask = this.#mask;
    const level = this.#level;
    let reads = 0;
    let covered = 0; // data before this is in a run already
    const buffer = this.#window ??= new Uint8Array(EXTEND_WINDOW);
    const readAt = (position: number, length: number): Uint8Array => {
      reads++;
      return buffer.subarray(0, read(position, buffer.subarray(0, length)));
    };
    const scan = new GearScan(level);
    scan.run(data, (end, h) => {
      if (reads >= MAX_READS_PER_FIND) return data.length;
      const at = end + 1 - WINDOW;
      const key = keyOf(h, fingerprintAt(data, at));
      if (scan.repeats(end, key) || at < covered) return end + 1;
      let best: MatchRun | undefined;
      let seen = 0;
      for (
        let slot = homeSlot(key, mask), probes = 0;
        offsets[slot] !== 0 && probes < MAX_PROBE && seen < MAX_PER_KEY &&
        reads < MAX_READS_PER_FIND;
        slot = (slot + 1) & mask, probes++
      ) {
        if (keys[slot] !== key) continue;
        seen++;
        const delta = offsets[slot] - 1 - at;
        if (best && best.delta === delta) continue;
        const run = this.#extend(readAt, data, at, delta, covered, () => reads);
        if (run && (!best || run.end - run.start > best.end - best.start)) best = run;
      }
      if (!best || best.end - best.start < MIN_MATCH) return end + 1;
      // `best.delta` is base offset − block position: the run's is base − target offset.
      runs.push({ start: best.start, end: best.end, delta: best.delta - targetOffset });
      covered = best.end;
      return Math.max(end + 1, best.end);
    });
    return runs;
  }

  /**
   * The run of `data` around the window at `at` equal to the base at
   * `at + delta`, not before `from`; undefined if the window itself differs.
   */
  #extend(
    readAt: (position: number, length: number) => Uint8Array,
    data: Uint8Array,
    at: number,
    delta: number,
    from: number,
    reads: () => number,
  ): MatchRun | undefined {
    const baseAt = at + delta;
    if (baseAt < 0 || baseAt + WINDOW > this.#baseSize) return undefined;
    // First read: the window and up to FIRST_READ / 2 either side.
    const back = Math.min(at - from, baseAt, FIRST_READ / 2);
    const ahead = Math.min(data.length - at, this.#baseSize - baseAt, FIRST_READ / 2 + WINDOW);
    const first = readAt(baseAt - back, back + ahead);
    if (first.length < back + WINDOW) return undefined;
    for (let i = 0; i < WINDOW; i++) if (first[back + i] !== data[at + i]) return undefined;
    // Within the first read (the buffer is reused by the reads below).
    let start = at;
    while (start > at - back && first[start - at + back - 1] === data[start - 1]) start--;
    let end = at + WINDOW;
    while (end - at + back < first.length && first[end - at + back] === data[end]) end++;
    const moreBack = start === at - back;
    let moreAhead = end - at + back === first.length;
    // Backwards, a window at a time.
    while (moreBack && start > from && start + delta > 0 && reads() < MAX_READS_PER_FIND) {
      const n = Math.min(start - from, start + delta, EXTEND_WINDOW);
      const chunk = readAt(start + delta - n, n);
      if (chunk.length < n) break;
      let k = n;
      while (k > 0 && chunk[k - 1] === data[start - n + k - 1]) k--;
      start -= n - k;
      if (k > 0) break;
    }
    // Forwards, a window at a time.
    while (moreAhead && end < data.length && reads() < MAX_READS_PER_FIND) {
      const n = Math.min(data.length - end, EXTEND_WINDOW);
      const chunk = readAt(end + delta, n);
      let k = 0;
      while (k < chunk.length && chunk[k] === data[end + k]) k++;
      end += k;
      moreAhead = k === n;
    }
    return { start, end, delta };
  }

  #insert(key: number, offset: number): void {
    const keys = this.#keys;
    const offsets = this.#offsets;
    const mask = this.#mask;
    let slot = homeSlot(key, mask);
    let same = 0;
    for (let probes = 0;; probes++) {
      if (offsets[slot] === 0) break;
      if (keys[slot] === key && ++same >= MAX_PER_KEY) {
        this.#dropped++;
        return;
      }
      if (probes >= MAX_PROBE) {
        this.#dropped++;
        return;
      }
      slot = (slot + 1) & mask;
    }
    keys[slot] = key;
    offsets[slot] = offset + 1;
    this.#entries++;
    if (this.#entries > this.#slots * MAX_LOAD) this.#raise();
  }

  /** One level up: entries no longer anchors leave; the rest are re-placed in place. */
  #raise(): void {
    this.#level++;
    this.#scan.level = this.#level;
    const keys = this.#keys;
    const offsets = this.#offsets;
    const mask = this.#mask;
    for (let s = 0; s < this.#slots; s++) {
      if (offsets[s] !== 0 && !keyAtLevel(keys[s], this.#level)) {
        offsets[s] = 0;
        this.#entries--;
      }
    }
    // Re-place every entry, starting after an empty slot so no probe run wraps past the start.
    let empty = 0;
    while (offsets[empty] !== 0) empty++;
    for (let k = 1; k <= this.#slots; k++) {
      const s = (empty + k) & mask;
      if (offsets[s] === 0) continue;
      const key = keys[s];
      const offset = offsets[s];
      offsets[s] = 0;
      let slot = homeSlot(key, mask);
      while (offsets[slot] !== 0) slot = (slot + 1) & mask;
      keys[slot] = key;
      offsets[slot] = offset;
    }
  }
}
