/** Specification of byte-size parsing and formatting (kernel/units.ts). */

import assert from "node:assert/strict";
import { countOf, formatBytes, megabytesPerSecond, parseSize } from "../kernel/units.ts";

Deno.test("parseSize reads binary units as powers of 1024", () => {
  assert.equal(parseSize("256KiB"), 256 * 1024);
  assert.equal(parseSize("1MiB"), 1024 ** 2);
  assert.equal(parseSize("1.5GiB"), 1.5 * 1024 ** 3);
  assert.equal(parseSize("2TiB"), 2 * 1024 ** 4);
});

Deno.test("parseSize reads decimal units as powers of 1000", () => {
  assert.equal(parseSize("10MB"), 10_000_000);
  assert.equal(parseSize("1KB"), 1000);
  assert.equal(parseSize("3GB"), 3_000_000_000);
  assert.equal(parseSize("1TB"), 1e12);
});

Deno.test("parseSize reads a bare number, B, and a bare K/M/G/T as binary", () => {
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("0"), 0);
  assert.equal(parseSize("64B"), 64);
  assert.equal(parseSize("4K"), 4096);
  assert.equal(parseSize("4M"), 4 * 1024 ** 2);
  assert.equal(parseSize("1G"), 1024 ** 3);
  assert.equal(parseSize("1T"), 1024 ** 4);
});

Deno.test("parseSize ignores case and surrounding or separating spaces", () => {
  assert.equal(parseSize("1mib"), 1024 ** 2);
  assert.equal(parseSize("1MIB"), 1024 ** 2);
  assert.equal(parseSize("256 KiB"), 256 * 1024);
  assert.equal(parseSize(" 16k "), 16 * 1024);
});

Deno.test("parseSize returns undefined for text that is not a size", () => {
  for (
    const bad of [
      "",
      " ",
      "abc",
      "KiB",
      "-1",
      "-1MiB",
      "+5",
      "1.5", // not a whole number of bytes
      "0.3KiB", // 307.2 bytes
      "1XB",
      "1 MiB extra",
      "1.2.3",
      "1e3",
      "0x100",
      ".5MiB",
      "1,024",
      "99999999999999999999", // beyond 2^53
      "9PiB", // no such unit
    ]
  ) {
    assert.equal(parseSize(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("formatBytes gives exact bytes below 1 KiB and two decimals of a binary unit above", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1), "1 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.00 KiB");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(256 * 1024), "256.00 KiB");
  assert.equal(formatBytes(1024 ** 2), "1.00 MiB");
  assert.equal(formatBytes(1.5 * 1024 ** 3), "1.50 GiB");
  assert.equal(formatBytes(200 * 1024 ** 4), "200.00 TiB");
  assert.equal(formatBytes(3 * 1024 ** 5), "3.00 PiB");
});

Deno.test("formatBytes of a parsed binary size reads back the same size", () => {
  for (const text of ["1.50 KiB", "256.00 KiB", "4.00 MiB", "1.50 GiB"]) {
    const bytes = parseSize(text.replace(" ", ""));
    assert.ok(bytes !== undefined);
    assert.equal(formatBytes(bytes), text);
  }
});

Deno.test("megabytesPerSecond is decimal MB per second, and 0 for no elapsed time", () => {
  assert.equal(megabytesPerSecond(100e6, 1000), 100);
  assert.equal(megabytesPerSecond(50e6, 500), 100);
  assert.equal(megabytesPerSecond(1e6, 0), 0);
});

Deno.test("parseSize accepts only whole byte counts", () => {
  assert.equal(parseSize("1.0000001"), undefined);
  assert.equal(parseSize("0.0000001"), undefined);
  assert.equal(parseSize("0.1KiB"), undefined);
  assert.equal(parseSize("0.5KiB"), 512);
});

Deno.test("formatBytes chooses the unit after rounding: 1048575 is 1.00 MiB", () => {
  assert.equal(formatBytes(1048575), "1.00 MiB");
  assert.equal(formatBytes(1024 ** 3 - 1), "1.00 GiB");
  assert.equal(formatBytes(1048000), "1023.44 KiB");
});

Deno.test("countOf puts the noun in the singular only for exactly one", () => {
  assert.equal(countOf(0, "op"), "0 ops");
  assert.equal(countOf(1, "op"), "1 op");
  assert.equal(countOf(2, "op"), "2 ops");
});
