/**
 * zstd decoding for apply and inspect: whole frames, through zstd's own
 * decoder compiled to WebAssembly into the codec's kernel module
 * (codec/wasm/zstd_decoder.c; `filter_kernels.ts` `zstdDecode`).
 *
 * Not `node:zlib`: importing it costs apply ~2.5 MB of resident memory
 * (Node's stream and Buffer layers) of its 64 MB budget, and its decoder
 * writes into JavaScript buffers, while this one decodes a payload read into
 * one kernel region straight into the other, where the filters undo the
 * shuffle: no buffer and no copy of its own. The decompression context lives
 * in a fixed workspace and a frame is decoded in one shot, so no window
 * buffer is ever needed whatever window the frame declares (zstd, built for
 * 32 bits, still refuses windows above 2^30 bytes); frames that need a
 * dictionary are refused (none is ever loaded). The encoder, with 100 MB,
 * compresses through `node:zlib` (`zstd_context.ts`).
 *
 * @module
 */

import {
  type FilterKernels,
  KERNEL_REGION,
  newFilterKernels,
  REGION_1_SLACK,
} from "./filter_kernels.ts";

/**
 * Bytes of a frame `ZstdDecompressor` takes at once (kernel region 1 and its
 * slack): a patch's frames are below 1 MiB; a frame of an incompressible MiB
 * is 1 MiB + ~40 bytes.
 */
export const DECODER_INPUT_BYTES = KERNEL_REGION + REGION_1_SLACK;
/** Bytes a frame may produce at most (kernel region 0). */
export const DECODER_OUTPUT_BYTES = KERNEL_REGION;

/** zstd's `ZSTD_error_dstSize_tooSmall`: the frame holds more than the room given. */
const ZSTD_ERROR_DST_SIZE_TOO_SMALL = 70;

/** Why a zstd payload was refused. */
export class ZstdDataError extends Error {}

/**
 * Decodes the whole frames of the `payloadLength` bytes at the start of
 * `kernels`' region 1 into its region 0, at most `length` bytes (at most
 * `KERNEL_REGION`), frame after frame, each found by `zstdFrameLength` first;
 * returns the bytes produced (the caller checks they are `length`). Throws
 * `ZstdDataError` for bytes that are not whole frames, that do not decode, or
 * that decode to more than `length` bytes.
 */
export function decodeFramesInKernels(
  kernels: FilterKernels,
  payloadLength: number,
  length: number,
): number {
  const payload = kernels.region(1, REGION_1_SLACK).subarray(0, payloadLength);
  let produced = 0;
  for (let at = 0; at < payload.length;) {
    const frame = zstdFrameLength(payload.subarray(at));
    if (frame === undefined) {
      throw new ZstdDataError(
        `its ${payload.length} bytes are not whole zstd frames (from byte ${at})`,
      );
    }
    const result = kernels.zstdDecode(1, at, frame, 0, produced, length - produced);
    if (!result.ok) throw zstdError(result, length - produced);
    produced += result.produced;
    at += frame;
  }
  return produced;
}

function zstdError(result: { code: number; message: string }, room: number): ZstdDataError {
  return result.code === ZSTD_ERROR_DST_SIZE_TOO_SMALL
    ? new ZstdDataError(`it holds more than ${room} bytes`)
    : new ZstdDataError(`zstd: ${result.message}`);
}

/**
 * Decompresses whole frames into a caller's buffer, through its own instance
 * of the kernel module (made on first use; 2.5 MiB of linear memory, resident
 * as far as touched): the frame is copied into region 1, decoded into region
 * 0 and copied out. Apply decodes in the shared instance's regions instead
 * (`decodeFramesInKernels`), with no copy.
 */
export class ZstdDecompressor {
  #kernels: FilterKernels | undefined;

  /** A decompressor (its WebAssembly instance is made on first use). */
  static create(): Promise<ZstdDecompressor> {
    return Promise.resolve(new ZstdDecompressor());
  }

  private constructor() {}

  /**
   * Decompresses `frame` (one whole zstd frame, at most `DECODER_INPUT_BYTES`)
   * into the start of `dest` and returns the number of bytes it produced.
   * Throws `ZstdDataError` if `frame` is not exactly one whole frame
   * (`zstdFrameLength`: zstd itself takes a cut frame for a short one), is
   * longer than `DECODER_INPUT_BYTES`, is corrupt, or would produce more than
   * `max` bytes. `dest` must have room for `max + 1` bytes, and `max` is at
   * most `DECODER_OUTPUT_BYTES` (else a RangeError).
   */
  decompressFrame(frame: Uint8Array, dest: Uint8Array, max: number): number {
    if (dest.length <= max) throw new RangeError(`dest needs ${max + 1} bytes of room`);
    if (zstdFrameLength(frame) !== frame.length) {
      throw new ZstdDataError(`its ${frame.length} bytes are not one whole zstd frame`);
    }
    return this.decompressFrames(frame, dest, max);
  }

  /**
   * Decompresses `payload` (whole zstd frames, at most `DECODER_INPUT_BYTES`,
   * each found by `zstdFrameLength` first: `decodeFramesInKernels`) into the
   * start of `dest` (at least `max` bytes, `max` at most
   * `DECODER_OUTPUT_BYTES`, else a RangeError) and returns the number of
   * bytes they produced. Throws `ZstdDataError` for a payload that is too
   * long, not whole frames, corrupt, or more than `max` bytes decoded.
   */
  decompressFrames(payload: Uint8Array, dest: Uint8Array, max: number): number {
    if (dest.length < max) throw new RangeError(`dest needs ${max} bytes of room`);
    if (max > DECODER_OUTPUT_BYTES) {
      throw new RangeError(`max ${max} is above the decoder's ${DECODER_OUTPUT_BYTES} bytes`);
    }
    if (payload.length > DECODER_INPUT_BYTES) {
      throw new ZstdDataError(
        `its ${payload.length} bytes are more than a frame may have here (${DECODER_INPUT_BYTES})`,
      );
    }
    const kernels = this.#kernels ??= newFilterKernels();
    kernels.region(1, REGION_1_SLACK).set(payload);
    const produced = decodeFramesInKernels(kernels, payload.length, max);
    dest.set(kernels.region(0).subarray(0, produced));
    return produced;
  }

  /** Bytes of linear memory its instance holds (made on first use). */
  get memoryBytes(): number {
    return (this.#kernels ??= newFilterKernels()).memoryBytes;
  }

  /** Lets the instance go (a later call makes a new one). */
  close(): void {
    this.#kernels = undefined;
  }
}

/**
 * The length of the zstd frame at the start of `bytes` (RFC 8878, section 3.1.1:
 * magic, frame header, blocks up to the last one, optional checksum), or
 * undefined if `bytes` does not hold a whole frame. Lets apply require that a
 * compressed op's length is exactly its frame.
 */
export function zstdFrameLength(bytes: Uint8Array): number | undefined {
  if (
    bytes.length < 6 || bytes[0] !== 0x28 || bytes[1] !== 0xb5 || bytes[2] !== 0x2f ||
    bytes[3] !== 0xfd
  ) return undefined;
  const descriptor = bytes[4];
  const contentSizeFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const checksum = (descriptor >> 2) & 1;
  const dictionaryIdFlag = descriptor & 3;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictionaryIdFlag] +
    [singleSegment ? 1 : 0, 2, 4, 8][contentSizeFlag];
  while (true) {
    if (at + 3 > bytes.length) return undefined;
    const header = bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) return undefined; // reserved
    at += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  at += checksum ? 4 : 0;
  return at <= bytes.length ? at : undefined;
}
