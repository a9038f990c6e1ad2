/*
 * The hot loops of poolboy's v2 codec, compiled to WebAssembly
 * (codec/filter_kernels.ts loads it; scripts/build_wasm.ts builds it into
 * codec/filters_wasm.ts): the residue filters of docs/spec/patch-v2.md
 * ("The filters, exactly": byte and bit planes, SUB and XOR), the equal-run
 * scan of codec/equal_runs.ts and the FastCDC gear loop of codec/fastcdc.ts.
 * The TypeScript versions are the reference; tests check that both agree.
 *
 * No libc, no allocation: every pointer is an offset into the module's fixed
 * linear memory, which the caller lays out (filter_kernels.ts). Lengths are
 * byte counts; nothing here reads or writes outside [ptr, ptr + len).
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;

#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))

/* ---- combine / uncombine ------------------------------------------------ */

static void xor_bytes(const u8 *t, const u8 *b, u8 *out, u32 from, u32 len) {
  for (u32 j = from; j < len; j++) out[j] = t[j] ^ b[j];
}

/* Unaligned little-endian loads and stores (wasm is little-endian). */
static inline u16 ld16(const u8 *p) { u16 v; __builtin_memcpy(&v, p, 2); return v; }
static inline u32 ld32(const u8 *p) { u32 v; __builtin_memcpy(&v, p, 4); return v; }
static inline void st16(u8 *p, u16 v) { __builtin_memcpy(p, &v, 2); }
static inline void st32(u8 *p, u32 v) { __builtin_memcpy(p, &v, 4); }

/* zigzag(d) = (2d) XOR (d >> (8w - 1)), per lane. */
static inline v128_t zigzag8(v128_t d) { return wasm_v128_xor(wasm_i8x16_shl(d, 1), wasm_i8x16_shr(d, 7)); }
static inline v128_t zigzag16(v128_t d) { return wasm_v128_xor(wasm_i16x8_shl(d, 1), wasm_i16x8_shr(d, 15)); }
static inline v128_t zigzag32(v128_t d) { return wasm_v128_xor(wasm_i32x4_shl(d, 1), wasm_i32x4_shr(d, 31)); }
/* unzigzag(z) = (z >>> 1) XOR -(z AND 1), per lane. */
static inline v128_t unzigzag8(v128_t z) {
  return wasm_v128_xor(wasm_u8x16_shr(z, 1), wasm_i8x16_neg(wasm_v128_and(z, wasm_i8x16_splat(1))));
}
static inline v128_t unzigzag16(v128_t z) {
  return wasm_v128_xor(wasm_u16x8_shr(z, 1), wasm_i16x8_neg(wasm_v128_and(z, wasm_i16x8_splat(1))));
}
static inline v128_t unzigzag32(v128_t z) {
  return wasm_v128_xor(wasm_u32x4_shr(z, 1), wasm_i32x4_neg(wasm_v128_and(z, wasm_i32x4_splat(1))));
}

/*
 * R = combine(T, B): sub != 0 is SUB (zigzag of the difference), else XOR.
 * out may be t (every 16 bytes are read before they are written).
 */
EXPORT(combine)
void combine(const u8 *t, const u8 *b, u8 *out, u32 len, u32 width, u32 sub) {
  u32 j = 0;
  for (; j + 16 <= len; j += 16) {
    v128_t x = wasm_v128_load(t + j), y = wasm_v128_load(b + j), r;
    if (!sub) r = wasm_v128_xor(x, y);
    else if (width == 1) r = zigzag8(wasm_i8x16_sub(x, y));
    else if (width == 2) r = zigzag16(wasm_i16x8_sub(x, y));
    else r = zigzag32(wasm_i32x4_sub(x, y));
    wasm_v128_store(out + j, r);
  }
  /* The last < 16 bytes: whole elements, then XORed tail bytes. */
  u32 n = sub ? len / width * width : j;
  if (width == 1) {
    for (; j < n; j++) {
      signed char d = (signed char)(u8)(t[j] - b[j]);
      out[j] = (u8)(((u32)(int)d << 1) ^ (u32)((int)d >> 31));
    }
  } else if (width == 2) {
    for (; j < n; j += 2) {
      short d = (short)(u16)(ld16(t + j) - ld16(b + j));
      st16(out + j, (u16)(((u32)(int)d << 1) ^ (u32)((int)d >> 31)));
    }
  } else {
    for (; j < n; j += 4) {
      i32 d = (i32)(ld32(t + j) - ld32(b + j));
      st32(out + j, ((u32)d << 1) ^ (u32)(d >> 31));
    }
  }
  xor_bytes(t, b, out, j, len);
}

/* T = uncombine(R, B); out may be r. */
EXPORT(uncombine)
void uncombine(const u8 *r, const u8 *b, u8 *out, u32 len, u32 width, u32 sub) {
  u32 j = 0;
  for (; j + 16 <= len; j += 16) {
    v128_t z = wasm_v128_load(r + j), y = wasm_v128_load(b + j), t;
    if (!sub) t = wasm_v128_xor(z, y);
    else if (width == 1) t = wasm_i8x16_add(y, unzigzag8(z));
    else if (width == 2) t = wasm_i16x8_add(y, unzigzag16(z));
    else t = wasm_i32x4_add(y, unzigzag32(z));
    wasm_v128_store(out + j, t);
  }
  u32 n = sub ? len / width * width : j;
  if (width == 1) {
    for (; j < n; j++) {
      u32 z = r[j];
      out[j] = (u8)(b[j] + ((z >> 1) ^ (0u - (z & 1))));
    }
  } else if (width == 2) {
    for (; j < n; j += 2) {
      u32 z = ld16(r + j);
      st16(out + j, (u16)(ld16(b + j) + ((z >> 1) ^ (0u - (z & 1)))));
    }
  } else {
    for (; j < n; j += 4) {
      u32 z = ld32(r + j);
      st32(out + j, ld32(b + j) + ((z >> 1) ^ (0u - (z & 1))));
    }
  }
  xor_bytes(r, b, out, j, len);
}

/* ---- byte and bit planes ------------------------------------------------ */

/*
 * Byte k of 16 consecutive elements of width w (1, 2 or 4) at `src`, one
 * vector per k (p[0..w)); `scatter16` is the inverse.
 */
static inline void gather16(const u8 *src, u32 w, v128_t *p) {
  if (w == 1) {
    p[0] = wasm_v128_load(src);
  } else if (w == 2) {
    v128_t v0 = wasm_v128_load(src), v1 = wasm_v128_load(src + 16);
    p[0] = wasm_i8x16_shuffle(v0, v1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    p[1] = wasm_i8x16_shuffle(v0, v1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  } else {
    v128_t v0 = wasm_v128_load(src), v1 = wasm_v128_load(src + 16);
    v128_t v2 = wasm_v128_load(src + 32), v3 = wasm_v128_load(src + 48);
    /* a: k0, k1 of elements 0-7; b: k2, k3 of 0-7; c, d: the same of 8-15. */
    v128_t a = wasm_i8x16_shuffle(v0, v1, 0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    v128_t b = wasm_i8x16_shuffle(v0, v1, 2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    v128_t c = wasm_i8x16_shuffle(v2, v3, 0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    v128_t d = wasm_i8x16_shuffle(v2, v3, 2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    p[0] = wasm_i8x16_shuffle(a, c, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    p[1] = wasm_i8x16_shuffle(a, c, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    p[2] = wasm_i8x16_shuffle(b, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    p[3] = wasm_i8x16_shuffle(b, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
}

static inline void scatter16(u8 *out, u32 w, const v128_t *p) {
  if (w == 1) {
    wasm_v128_store(out, p[0]);
  } else if (w == 2) {
    wasm_v128_store(out, wasm_i8x16_shuffle(p[0], p[1], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21,
                                            6, 22, 7, 23));
    wasm_v128_store(out + 16, wasm_i8x16_shuffle(p[0], p[1], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28,
                                                 13, 29, 14, 30, 15, 31));
  } else {
    v128_t a = wasm_i8x16_shuffle(p[0], p[1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    v128_t c = wasm_i8x16_shuffle(p[0], p[1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    v128_t b = wasm_i8x16_shuffle(p[2], p[3], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    v128_t d = wasm_i8x16_shuffle(p[2], p[3], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    wasm_v128_store(out, wasm_i8x16_shuffle(a, b, 0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27));
    wasm_v128_store(out + 16, wasm_i8x16_shuffle(a, b, 4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31));
    wasm_v128_store(out + 32, wasm_i8x16_shuffle(c, d, 0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27));
    wasm_v128_store(out + 48, wasm_i8x16_shuffle(c, d, 4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31));
  }
}

/* Byte planes: forward S[p*n + i] = R[i*w + p]; backward the inverse. src != out. */
static inline __attribute__((always_inline)) void byte_planes_w(const u8 *src, u8 *out,
                                                                u32 len, u32 w, u32 forward) {
  u32 n = len / w;
  u32 i = 0;
  if (w == 1 || w == 2 || w == 4) {
    v128_t p[4];
    for (; i + 16 <= n; i += 16) {
      if (forward) {
        gather16(src + i * w, w, p);
        for (u32 k = 0; k < w; k++) wasm_v128_store(out + k * n + i, p[k]);
      } else {
        for (u32 k = 0; k < w; k++) p[k] = wasm_v128_load(src + k * n + i);
        scatter16(out + i * w, w, p);
      }
    }
  }
  for (u32 k = 0; k < w; k++) {
    for (u32 e = i; e < n; e++) {
      if (forward) out[k * n + e] = src[e * w + k];
      else out[e * w + k] = src[k * n + e];
    }
  }
  for (u32 j = n * w; j < len; j++) out[j] = src[j];
}

/* Transposes an 8x8 bit matrix held as 8 bytes (byte j = row j, bit b = column b). */
static inline u64 transpose8(u64 x) {
  u64 t;
  t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull; x = x ^ t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull; x = x ^ t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull; x = x ^ t ^ (t << 28);
  return x;
}

/* Bytes per plane of a tile of bit_planes (a multiple of 2). */
#define TILE 512
static u8 tile[32][TILE];

/* One group of 8 elements (index g) between elements and planes, scalar. */
static inline void bit_group(const u8 *src, u8 *out, u32 w, u32 groups, u32 g, u32 forward) {
  for (u32 k = 0; k < w; k++) {
    u32 e = 8 * g * w + k;
    u32 p = 8 * k * groups + g;
    u64 x = 0;
    if (forward) {
      for (u32 j = 0; j < 8; j++) x |= (u64)src[e + j * w] << (8 * j);
    } else {
      for (u32 j = 0; j < 8; j++) x |= (u64)src[p + j * groups] << (8 * j);
    }
    x = transpose8(x);
    if (forward) {
      for (u32 j = 0; j < 8; j++) out[p + j * groups] = (u8)(x >> (8 * j));
    } else {
      for (u32 j = 0; j < 8; j++) out[e + j * w] = (u8)(x >> (8 * j));
    }
  }
}

/*
 * Bit planes: m = 8*floor(n/8); plane q = 8k + b holds, in its byte g, bit b of
 * byte k of elements 8g..8g+7 (element 8g + j in bit j). Forward builds the
 * planes, backward the elements; bytes from m*w on are copied. src != out.
 * Two groups (16 elements) at a time: i8x16.bitmask takes one bit of each.
 */
static inline __attribute__((always_inline)) void bit_planes_w(const u8 *src, u8 *out,
                                                               u32 len, u32 w, u32 forward) {
  u32 n = len / w;
  u32 groups = n >> 3;
  u32 m = groups * 8;
  u32 g = 0;
  if (w == 1 || w == 2 || w == 4) {
    const v128_t lane_bit = wasm_i8x16_make(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    v128_t p[4];
    /*
     * Planes lie `groups` bytes apart (64 KiB for 1 MiB of 2-byte elements):
     * reading or writing 8w of them in turn thrashes the cache's sets, so
     * each tile of TILE bytes per plane goes through `tile` and is copied
     * in or out row by row.
     */
    while (g + 2 <= groups) {
      u32 count = groups - g < TILE ? (groups - g) & ~1u : TILE;
      if (!forward) {
        for (u32 q = 0; q < 8 * w; q++) __builtin_memcpy(tile[q], src + q * groups + g, count);
      }
      for (u32 t = 0; t < count; t += 2) {
        if (forward) {
          gather16(src + 8 * (g + t) * w, w, p);
          for (u32 k = 0; k < w; k++) {
            v128_t v = p[k];
            for (int b = 7; b >= 0; b--) {
              st16(tile[8 * k + (u32)b] + t, (u16)wasm_i8x16_bitmask(v));
              v = wasm_i8x16_shl(v, 1);
            }
          }
        } else {
          for (u32 k = 0; k < w; k++) {
            v128_t acc = wasm_i8x16_splat(0);
            for (u32 b = 0; b < 8; b++) {
              v128_t word = wasm_i16x8_splat((short)ld16(tile[8 * k + b] + t));
              v128_t bytes = wasm_i8x16_shuffle(word, word, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
              v128_t set = wasm_i8x16_ne(wasm_v128_and(bytes, lane_bit), wasm_i8x16_splat(0));
              acc = wasm_v128_or(acc, wasm_v128_and(set, wasm_i8x16_splat((char)(1 << b))));
            }
            p[k] = acc;
          }
          scatter16(out + 8 * (g + t) * w, w, p);
        }
      }
      if (forward) {
        for (u32 q = 0; q < 8 * w; q++) __builtin_memcpy(out + q * groups + g, tile[q], count);
      }
      g += count;
    }
  }
  for (; g < groups; g++) bit_group(src, out, w, groups, g, forward);
  for (u32 j = m * w; j < len; j++) out[j] = src[j];
}

/*
 * The plane loops, one export per width so that their inner loops unroll, and
 * so that the engine optimises (tiers up) only the widths a file uses: each
 * optimised function costs compile memory once.
 */
EXPORT(byte_planes_1)
void byte_planes_1(const u8 *src, u8 *out, u32 len, u32 forward) { byte_planes_w(src, out, len, 1, forward); }
EXPORT(byte_planes_2)
void byte_planes_2(const u8 *src, u8 *out, u32 len, u32 forward) { byte_planes_w(src, out, len, 2, forward); }
EXPORT(byte_planes_4)
void byte_planes_4(const u8 *src, u8 *out, u32 len, u32 forward) { byte_planes_w(src, out, len, 4, forward); }
EXPORT(bit_planes_1)
void bit_planes_1(const u8 *src, u8 *out, u32 len, u32 forward) { bit_planes_w(src, out, len, 1, forward); }
EXPORT(bit_planes_2)
void bit_planes_2(const u8 *src, u8 *out, u32 len, u32 forward) { bit_planes_w(src, out, len, 2, forward); }
EXPORT(bit_planes_4)
void bit_planes_4(const u8 *src, u8 *out, u32 len, u32 forward) { bit_planes_w(src, out, len, 4, forward); }

/* ---- equal runs ---------------------------------------------------------- */

/* The first j in [from, n) with a[j] != b[j], or n. */
EXPORT(equal_end)
u32 equal_end(const u8 *a, const u8 *b, u32 from, u32 n) {
  u32 j = from;
  while (j + 8 <= n) {
    u64 x, y;
    __builtin_memcpy(&x, a + j, 8);
    __builtin_memcpy(&y, b + j, 8);
    u64 d = x ^ y;
    if (d) return j + (u32)(__builtin_ctzll(d) >> 3);
    j += 8;
  }
  while (j < n && a[j] == b[j]) j++;
  return j;
}

/*
 * The start of the first run of equal bytes in [from, n) that is at least
 * min_run long or reaches n (it may go on past n), or n if there is none.
 *
 * With min_run >= 15 every such run that does not reach n holds a whole
 * 8-byte word at an offset that is a multiple of 8 (a and b are equally
 * aligned): only those words are compared until one is equal, then the run
 * around it is measured; a short run reaching n is looked for last.
 */
EXPORT(run_start)
u32 run_start(const u8 *a, const u8 *b, u32 from, u32 n, u32 min_run) {
  if (min_run < 15) {
    u32 j = from;
    while (j < n) {
      if (a[j] != b[j]) { j++; continue; }
      u32 e = equal_end(a, b, j, n);
      if (e == n || e - j >= min_run) return j;
      j = e + 1;
    }
    return n;
  }
  u32 w = (from + 7) & ~7u;
  while (w + 8 <= n) {
    u64 x, y;
    __builtin_memcpy(&x, a + w, 8);
    __builtin_memcpy(&y, b + w, 8);
    if (x != y) { w += 8; continue; }
    u32 s = w;
    while (s > from && a[s - 1] == b[s - 1]) s--;
    u32 e = equal_end(a, b, w + 8, n);
    if (e == n || e - s >= min_run) return s;
    w = (e + 8) & ~7u;
  }
  /* A run reaching n too short to hold a whole word: the last bytes. */
  u32 s = n;
  while (s > from && a[s - 1] == b[s - 1]) s--;
  return s;
}

/* ---- FastCDC gear loop --------------------------------------------------- */

static u32 gear_fp;

/*
 * Rolls the gear hash over data[from..to) from state `fp` (the table at
 * `gear`, 256 u32): the index just after the first byte where
 * (fp & mask) == 0, or 0 if none; the state is left for `gear_state`.
 */
EXPORT(gear_scan)
u32 gear_scan(const u8 *data, u32 from, u32 to, const u32 *gear, u32 mask, u32 fp) {
  for (u32 i = from; i < to; i++) {
    fp = (fp << 1) + gear[data[i]];
    if ((fp & mask) == 0) { gear_fp = fp; return i + 1; }
  }
  gear_fp = fp;
  return 0;
}

EXPORT(gear_state)
u32 gear_state(void) { return gear_fp; }

/* ---- chunk fingerprint --------------------------------------------------- */

/*
 * A fast, non-cryptographic 128-bit fingerprint of a chunk (the encoder's
 * chunk identity when it reads the base itself; every match is checked byte
 * for byte before it becomes a COPY, so a collision costs a comparison, never
 * a wrong patch). Never stored or sent: it only has to agree with itself
 * within one process. Four 64-bit lanes of xxHash64's round over 32-byte
 * stripes; the tail is zero-padded into one more stripe and the length is
 * mixed into both halves of the result.
 *
 * fp_init; fp_update on any number of whole stripes (returns the bytes it
 * took: len rounded down to 32); fp_final with the last < 32 bytes and the
 * total length (a chunk is under 4 GiB); the 16 bytes are then at fp_result().
 */

#define FP_P1 0x9E3779B185EBCA87ULL
#define FP_P2 0xC2B2AE3D27D4EB4FULL
#define FP_P3 0x165667B19E3779F9ULL
#define FP_P5 0x27D4EB2F165667C5ULL

static u64 fp_acc[4];
static u64 fp_res[2];

static inline u64 rotl64(u64 x, u32 r) { return (x << r) | (x >> (64 - r)); }
static inline u64 ld64(const u8 *p) { u64 v; __builtin_memcpy(&v, p, 8); return v; }
static inline u64 fp_round(u64 acc, u64 in) { return rotl64(acc + in * FP_P2, 31) * FP_P1; }
static inline u64 fp_avalanche(u64 h) {
  h ^= h >> 33; h *= FP_P2; h ^= h >> 29; h *= FP_P3; h ^= h >> 32;
  return h;
}

EXPORT(fp_init)
void fp_init(void) {
  fp_acc[0] = FP_P1 + FP_P2;
  fp_acc[1] = FP_P2;
  fp_acc[2] = 0;
  fp_acc[3] = 0 - FP_P1;
}

EXPORT(fp_update)
u32 fp_update(const u8 *p, u32 len) {
  u64 a0 = fp_acc[0], a1 = fp_acc[1], a2 = fp_acc[2], a3 = fp_acc[3];
  u32 i = 0;
  for (; i + 32 <= len; i += 32) {
    a0 = fp_round(a0, ld64(p + i));
    a1 = fp_round(a1, ld64(p + i + 8));
    a2 = fp_round(a2, ld64(p + i + 16));
    a3 = fp_round(a3, ld64(p + i + 24));
  }
  fp_acc[0] = a0; fp_acc[1] = a1; fp_acc[2] = a2; fp_acc[3] = a3;
  return i;
}

EXPORT(fp_final)
void fp_final(const u8 *tail, u32 n, u32 total) {
  if (n > 0) {
    u8 stripe[32];
    for (u32 k = 0; k < 32; k++) stripe[k] = k < n ? tail[k] : 0;
    fp_update(stripe, 32);
  }
  u64 a0 = fp_acc[0], a1 = fp_acc[1], a2 = fp_acc[2], a3 = fp_acc[3];
  u64 h1 = rotl64(a0, 1) + rotl64(a1, 7) + rotl64(a2, 12) + rotl64(a3, 18) + (u64)total * FP_P5;
  u64 h2 = (a0 ^ rotl64(a1, 17)) + (a2 ^ rotl64(a3, 41)) + fp_round((u64)total, FP_P3);
  fp_res[0] = fp_avalanche(h1);
  fp_res[1] = fp_avalanche(h2 ^ fp_res[0]);
}

EXPORT(fp_result)
const u8 *fp_result(void) { return (const u8 *)fp_res; }
