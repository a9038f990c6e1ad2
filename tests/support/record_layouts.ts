/**
 * Record layouts shaped like GGUF's Q8_0 blocks, small enough for byte-exact
 * tests of the record ops (tests/record_ops_test.ts, tests/patch_v4_test.ts):
 * a 2-byte f16-like field and a 2-byte quant field per 4-byte record.
 */

import { type Filter, NO_FILTER } from "../../codec/patch_format.ts";
import type { RecordLayout } from "../../codec/record_filter.ts";

/** SUB of 2-byte elements, in byte planes: the filter of a scale field. */
export const SUB_BYTES_2: Filter = { width: 2, shuffle: "bytes", combine: "sub" };

/** A DRECORDS layout: the scale field SUB in byte planes, the quant field XOR bytes. */
export const Q8_LIKE: RecordLayout = {
  recordLength: 4,
  fields: [{ length: 2, filter: SUB_BYTES_2 }, { length: 2, filter: NO_FILTER }],
};

/** The same for a ZRECORDS (whose filters combine nothing: XOR). */
export const Q8_LIKE_Z: RecordLayout = {
  recordLength: 4,
  fields: [{ length: 2, filter: { ...SUB_BYTES_2, combine: "xor" } }, {
    length: 2,
    filter: NO_FILTER,
  }],
};
