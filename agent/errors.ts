/**
 * Errors of the agent that reach a person (in its log and in the failure
 * status it reports to the control plane). Members of the kernel's error
 * family (kernel/errors.ts): each carries its exit code and HTTP status.
 *
 * @module
 */

import { IoError } from "../kernel/errors.ts";

/**
 * The filesystem has no room for an update (checked before any byte is
 * downloaded). Not the version's fault: it does not count towards the
 * version's poison pill (agent/update_machine.ts decides by this type).
 */
export class DiskSpaceError extends IoError {}
