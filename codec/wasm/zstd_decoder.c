/*
 * zstd frame decoding for `poolboy apply`, compiled to WebAssembly together
 * with the decoder of the zstd library itself (lib/common and lib/decompress
 * of zstd 1.5.7; scripts/build_wasm.ts fetches them, checks their digest and
 * builds codec/zstd_wasm.ts; codec/zstd_decoder.ts loads it).
 *
 * Why: `node:zlib` is the only other zstd decoder at hand, and importing it
 * costs apply about 5 MB of resident memory (Node's stream and Buffer layers)
 * of its 64 MB budget. This module is ~70 KB and decodes with no allocation:
 * the decompression context lives in a fixed workspace (ZSTD_initStaticDCtx)
 * and frames are decoded one-shot, straight into an output region, so no
 * window buffer is ever needed.
 *
 * No libc: the few functions zstd's decoder uses are defined here (memcpy,
 * memmove and memset as the bulk-memory instructions; malloc and friends
 * always fail, so nothing can allocate behind the workspace's back).
 * Pointers are offsets into the module's fixed linear memory, which the
 * caller lays out after `__heap_base` (codec/zstd_decoder.ts).
 */

#define ZSTD_STATIC_LINKING_ONLY
#include "zstd.h"
#include "zstd_errors.h"

#define EXPORT(name) __attribute__((export_name(#name)))

typedef unsigned char u8;

void *memcpy(void *d, const void *s, size_t n) { return __builtin_memcpy(d, s, n); }
void *memmove(void *d, const void *s, size_t n) { return __builtin_memmove(d, s, n); }
void *memset(void *d, int c, size_t n) { return __builtin_memset(d, c, n); }
int memcmp(const void *a, const void *b, size_t n) {
  const u8 *x = a, *y = b;
  for (size_t i = 0; i < n; i++) {
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return 0;
}
void *malloc(size_t n) { (void)n; return 0; }
void *calloc(size_t n, size_t s) { (void)n; (void)s; return 0; }
void free(void *p) { (void)p; }

/* The decompression context's workspace: ZSTD_estimateDCtxSize() is ~94 KiB in 1.5.7. */
#define WORKSPACE_BYTES (192 * 1024)
static _Alignas(16) u8 workspace[WORKSPACE_BYTES];
static ZSTD_DCtx *dctx;

/* Makes the context in the workspace: 1 on success, 0 if it does not fit. */
EXPORT(zd_init) int zd_init(void) {
  if (ZSTD_estimateDCtxSize() > WORKSPACE_BYTES) return 0;
  dctx = ZSTD_initStaticDCtx(workspace, WORKSPACE_BYTES);
  return dctx != 0;
}

/*
 * Decodes the zstd frames in src[0 .. len) into dst[0 .. cap): returns the
 * bytes produced, or an error code (zd_is_error). zstd refuses output that
 * would not fit in cap and a window above its default limit (128 MiB).
 */
EXPORT(zd_decompress) size_t zd_decompress(u8 *dst, size_t cap, const u8 *src, size_t len) {
  if (dctx == 0) return (size_t)-1;
  return ZSTD_decompressDCtx(dctx, dst, cap, src, len);
}

/* 1 if `code` (a zd_decompress result) is an error. */
EXPORT(zd_is_error) unsigned zd_is_error(size_t code) { return ZSTD_isError(code); }

/* The error's zstd code (ZSTD_ErrorCode: e.g. 70 = dstSize_tooSmall). */
EXPORT(zd_error_code) int zd_error_code(size_t code) { return ZSTD_getErrorCode(code); }

/* The error's description, a NUL-terminated string in linear memory. */
EXPORT(zd_error_name) const char *zd_error_name(size_t code) { return ZSTD_getErrorName(code); }
