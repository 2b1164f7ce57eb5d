/**
 * WebSocket close status codes (RFC 6455 §7.4) and the rules for which of
 * them may appear on the wire.
 *
 * @example
 * import * as CloseCode from "wsreactor/domain/CloseCode"
 * CloseCode.isValidOnWire(1000) // true
 * CloseCode.isValidOnWire(1005) // false: reserved for "no status received"
 */

/** RFC 6455 §7.4.1 */
export const Normal = 1000
export const GoingAway = 1001
export const ProtocolError = 1002
export const UnsupportedData = 1003
/** Reserved: never sent, stands for "the close frame had no status code". */
export const NoStatus = 1005
/** Reserved: never sent, stands for "the connection dropped without a close frame". */
export const Abnormal = 1006
export const InvalidPayload = 1007
export const PolicyViolation = 1008
export const MessageTooBig = 1009
export const MandatoryExtension = 1010
export const InternalError = 1011
/** IANA registry (RFC 6455 §11.7): 1012-1014. */
export const ServiceRestart = 1012
export const TryAgainLater = 1013
export const BadGateway = 1014

/**
 * May this code appear in a close frame (sent or received)?
 * RFC 6455 §7.4.1/§7.4.2: 1000-1003 and 1007-1011 are defined, 1012-1014 are
 * registered with IANA, 3000-3999 are for libraries and frameworks, 4000-4999
 * are private. 1004, 1005, 1006 and 1015 must never be on the wire; every
 * other code below 3000 is reserved.
 */
export const isValidOnWire = (code: number): boolean =>
  (code >= 1000 && code <= 1003) ||
  (code >= 1007 && code <= 1014) ||
  (code >= 3000 && code <= 4999)
