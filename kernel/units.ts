/**
 * Byte sizes for people: parsing `256KiB`-style arguments and formatting counts.
 *
 * @module
 */

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/**
 * Parses a byte size such as `4096`, `256KiB`, `1MiB`, `1.5GiB` or `10MB`
 * (KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000, a bare K/M/G
 * means the binary unit). Returns `undefined` when the text is not a size.
 */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!match) return undefined;
  const unit = UNITS[match[2].toLowerCase()];
  if (unit === undefined) return undefined;
  const value = Number(match[1]) * unit;
  const rounded = Math.round(value);
  if (!Number.isSafeInteger(rounded)) return undefined;
  // Only whole bytes: "1.5KiB" is 1536, "1.0000001" and "0.1KiB" are not sizes.
  return Math.abs(rounded - value) <= 1e-9 * Math.max(1, value) ? rounded : undefined;
}

/** Formats a byte count with a binary unit, e.g. `1.50 MiB`; exact bytes below 1 KiB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  // Units are chosen on the rounded value, so 1048575 is "1.00 MiB", not "1024.00 KiB".
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes / 1024;
  let i = 0;
  while (value >= 1024 - 0.005 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${value.toFixed(2)} ${units[i]}`;
}

/** Throughput in decimal megabytes per second (MB/s, as disks and peers report it). */
export function megabytesPerSecond(bytes: number, milliseconds: number): number {
  return milliseconds <= 0 ? 0 : bytes / 1e6 / (milliseconds / 1000);
}

/** `1 op`, `3 ops`: a count with its noun in the right number. */
export function countOf(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
