/**
 * Progress of long work: the callback type through which the codec and the
 * transfers report bytes done out of a total. Rendering it is the CLI's
 * business (cli/progress_line.ts).
 *
 * @module
 */

/** Reports bytes processed out of a total. */
export type ProgressCallback = (done: number, total: number) => void;
