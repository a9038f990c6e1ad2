/**
 * Download options for the blob client's tests: a blob (digest, size) into a
 * fresh BlobStore under `dir/local`, from the given sources.
 *
 * @module
 */

import type { BlobSource, DownloadOptions } from "../../transfer/blob_client.ts";
import { BlobStore } from "../../transfer/blob_store.ts";

/** Options that download `blob` into a fresh store in `dir/local`. */
export async function downloadInto(
  dir: string,
  blob: { readonly digest: Uint8Array; readonly size: number },
  sources: BlobSource[],
  extra: Partial<DownloadOptions> = {},
): Promise<DownloadOptions> {
  const local = await BlobStore.open(`${dir}/local`);
  return {
    sources,
    digest: blob.digest,
    size: blob.size,
    destination: local.pathOf(blob.digest),
    partialPath: local.partialPathOf(blob.digest),
    ...extra,
  };
}
