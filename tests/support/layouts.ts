/**
 * A layout reader (`codec/tensor_layout.ts`) run on a file, or on bytes
 * written to a temporary file, for tests.
 */

import type { TensorRange } from "../../codec/tensor_layout.ts";
import { withTempDir } from "../helpers.ts";

/** One of tensor_layout's readers: `safeTensorsLayout`, `onnxLayout`, `modelLayout`, ... */
export type Layout = (file: Deno.FsFile, fileSize: number) => TensorRange[] | null;

/** `layout` of the file at `path`. */
export async function layoutOfFile(path: string, layout: Layout): Promise<TensorRange[] | null> {
  const file = await Deno.open(path);
  try {
    return layout(file, (await file.stat()).size);
  } finally {
    file.close();
  }
}

/** `layout` of a file holding `bytes`. */
export async function layoutOfBytes(
  bytes: Uint8Array,
  layout: Layout,
): Promise<TensorRange[] | null> {
  return await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/model`, bytes);
    return await layoutOfFile(`${dir}/model`, layout);
  });
}
