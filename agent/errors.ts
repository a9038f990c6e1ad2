/**
 * Errors of the agent that reach a person (in its log and in the failure
 * status it reports to the control plane). Members of the kernel's error
 * family (kernel/errors.ts): each carries its exit code and HTTP status.
 *
 * @module
 */

import { IoError, VerificationError } from "../kernel/errors.ts";
import type { RefusalKind } from "../release/trust_policy.ts";

/**
 * The filesystem has no room for an update (checked before any byte is
 * downloaded). Not the version's fault: it does not count towards the
 * version's poison pill (agent/update_machine.ts decides by this type).
 */
export class DiskSpaceError extends IoError {}

/**
 * A signed release this device refuses to install (agent --trust-root):
 * `kind` is release/trust_policy.ts's, the message starts "refused: ". Before
 * the switch it fails the update, which counts towards the poison pill.
 */
export class ReleaseRefusedError extends VerificationError {
  readonly kind: RefusalKind;
  constructor(kind: RefusalKind, reason: string) {
    super(reason);
    this.kind = kind;
  }
}
