/**
 * A complete WebSocket data message as user code sees it.
 *
 * Text keeps its UTF-8 bytes (already validated): echoing or forwarding a
 * text message never decodes and re-encodes it; `text` decodes on first use.
 *
 * @example
 * const m = Message.text("hello")
 * m.text // "hello"
 * Message.binary(new Uint8Array([1, 2])).data.length // 2
 */
export type Message = TextMessage | BinaryMessage

const decoder = new TextDecoder()
const encoder = new TextEncoder()

export class TextMessage {
  readonly _tag = "Text" as const
  readonly data: Uint8Array
  #text: string | undefined
  constructor(data: Uint8Array, text?: string) {
    this.data = data
    this.#text = text
  }
  get text(): string {
    if (this.#text === undefined) this.#text = decoder.decode(this.data)
    return this.#text
  }
}

export class BinaryMessage {
  readonly _tag = "Binary" as const
  readonly data: Uint8Array
  constructor(data: Uint8Array) {
    this.data = data
  }
}

/** A text message from a string. */
export const text = (value: string): TextMessage => new TextMessage(encoder.encode(value), value)

/** A binary message (the bytes are not copied). */
export const binary = (data: Uint8Array): BinaryMessage => new BinaryMessage(data)

/** From already-validated UTF-8 bytes (the decoder's output). */
export const textFromUtf8 = (data: Uint8Array): TextMessage => new TextMessage(data)

/** What `send` accepts: a string is text, bytes are binary. */
export type Outgoing = string | Uint8Array | Message

/** Normalise an outgoing value to `[binary, payload]`. */
export const toPayload = (message: Outgoing): Message =>
  typeof message === "string" ? text(message) : message instanceof Uint8Array ? binary(message) : message
