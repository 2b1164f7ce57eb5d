import * as Data from "effect/Data"

/**
 * Why a peer's bytes were refused. Each reason maps to exactly one close code
 * (see {@link closeCodeOf}), so the reactor never has to guess.
 */
export type ProtocolErrorReason =
  | "ReservedBits" // RSV1-3 set without a negotiated extension (RFC 6455 §5.2)
  | "ReservedOpcode" // opcodes 3-7 and 11-15 (§5.2)
  | "ControlFrameTooLong" // control payload > 125 (§5.5)
  | "FragmentedControlFrame" // control frame with FIN = 0 (§5.5)
  | "UnexpectedContinuation" // continuation with no message in progress (§5.4)
  | "ExpectedContinuation" // new data frame inside a fragmented message (§5.4)
  | "UnmaskedFrame" // client frame without mask (§5.1)
  | "MaskedFrame" // server frame with mask (§5.1)
  | "InvalidLength" // 64-bit length with the most significant bit set (§5.2)
  | "InvalidClosePayload" // 1-byte close payload or a code not allowed on the wire (§5.5.1, §7.4)
  | "InvalidUtf8" // text message or close reason that is not UTF-8 (§8.1)
  | "MessageTooBig" // frame or message over the configured limit (§7.4.1, 1009)
  | "InvalidCompressedData" // permessage-deflate payload that does not inflate (RFC 7692 §7.2.2)

const codes: Record<ProtocolErrorReason, 1002 | 1007 | 1009> = {
  ReservedBits: 1002,
  ReservedOpcode: 1002,
  ControlFrameTooLong: 1002,
  FragmentedControlFrame: 1002,
  UnexpectedContinuation: 1002,
  ExpectedContinuation: 1002,
  UnmaskedFrame: 1002,
  MaskedFrame: 1002,
  InvalidLength: 1002,
  InvalidClosePayload: 1002,
  InvalidUtf8: 1007,
  MessageTooBig: 1009,
  InvalidCompressedData: 1007
}

/** The close code the RFC prescribes for a reason. */
export const closeCodeOf = (reason: ProtocolErrorReason): 1002 | 1007 | 1009 => codes[reason]

/**
 * A peer broke the WebSocket protocol. Carries the close code to fail the
 * connection with (RFC 6455 §7.1.7).
 *
 * @example
 * const error = protocolError("ReservedOpcode", "opcode 0x3")
 * error.closeCode // 1002
 */
export class ProtocolError extends Data.TaggedError("ProtocolError")<{
  readonly reason: ProtocolErrorReason
  readonly closeCode: 1002 | 1007 | 1009
  readonly detail: string
}> {
  override get message(): string {
    return `${this.reason} (close ${this.closeCode}): ${this.detail}`
  }
}

/** Build a {@link ProtocolError} with the close code its reason implies. */
export const protocolError = (reason: ProtocolErrorReason, detail: string): ProtocolError =>
  new ProtocolError({ reason, closeCode: closeCodeOf(reason), detail })
