/**
 * The default ports of the fleet processes. Every process binds its own
 * (tailnet) address, so agents on different devices share the same numbers.
 *
 * @module
 */

/** Control plane: UDP control messages. */
export const DEFAULT_CP_UDP_PORT = 7400;
/** Control plane: blob server for leaders. */
export const DEFAULT_CP_P2P_PORT = 7401;
/** Control plane: operators' HTTP API. */
export const DEFAULT_CP_HTTP_PORT = 7402;
/** Agent: UDP control messages. */
export const DEFAULT_AGENT_UDP_PORT = 7410;
/** Agent: blob server for the peers of its region. */
export const DEFAULT_AGENT_P2P_PORT = 7411;
