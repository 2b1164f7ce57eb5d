/**
 * Typed messages: a route declares a `Schema` for what it receives and what
 * it sends; user code sees decoded values only. A message that fails to
 * decode never reaches the handler: the route's policy closes the connection
 * (1007 by default, RFC 6455 §7.4.1) or answers with an error message.
 *
 * @example
 * const Incoming = Schema.Struct({ text: Schema.String })
 * const Outgoing = Schema.Struct({ from: Schema.String, text: Schema.String })
 * Router.ws("/chat", Typed.handler({ incoming: Incoming, outgoing: Outgoing }, (conn) =>
 *   conn.messages.pipe(Stream.runForEach((m) => conn.send({ from: "echo", text: m.text })))))
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as CloseCode from "../domain/CloseCode.ts"
import type { Connection, ConnectionClosedError, MessageDroppedError, Params } from "./Connection.ts"
import * as Message from "./Message.ts"
import type { Handler } from "./Router.ts"

/** A message that did not decode (or a value that did not encode). */
export class CodecError extends Data.TaggedError("CodecError")<{
  readonly direction: "decode" | "encode"
  readonly detail: string
}> {
  override get message(): string {
    return `${this.direction} failed: ${this.detail}`
  }
}

/** How messages map to values. {@link json} is the default. */
export interface Codec<I, O> {
  readonly decode: (message: Message.Message) => Effect.Effect<I, CodecError>
  readonly encode: (value: O) => Effect.Effect<Message.Outgoing, CodecError>
}

/** JSON in text messages, checked by the Schemas. Binary messages are refused (close 1003 by default). */
export const json = <I, O>(incoming: Schema.Codec<I, any>, outgoing: Schema.Codec<O, any>): Codec<I, O> => {
  const decode = Schema.decodeEffect(Schema.fromJsonString(incoming))
  const encode = Schema.encodeEffect(Schema.fromJsonString(outgoing))
  return {
    decode: (message) =>
      message._tag === "Binary"
        ? Effect.fail(new CodecError({ direction: "decode", detail: "binary message where JSON text was expected" }))
        : Effect.mapError(
          decode(message.text) as Effect.Effect<I, Schema.SchemaError>,
          (error) => new CodecError({ direction: "decode", detail: error.message })
        ),
    encode: (value) =>
      Effect.mapError(
        encode(value) as Effect.Effect<string, Schema.SchemaError>,
        (error) => new CodecError({ direction: "encode", detail: error.message })
      )
  }
}

/** What to do with a message that does not decode. */
export type DecodeErrorPolicy<O> =
  /** Close with this code: 1007 (invalid data, default), 1003 (unsupported data) or 1008 (policy). */
  | { readonly _tag: "Close"; readonly code: number }
  /** Answer with an error value and keep the connection. */
  | { readonly _tag: "Reply"; readonly reply: (error: CodecError) => O }

export const closeOnDecodeError = (code: number = CloseCode.InvalidPayload): DecodeErrorPolicy<never> => ({
  _tag: "Close",
  code
})
export const replyOnDecodeError = <O>(reply: (error: CodecError) => O): DecodeErrorPolicy<O> => ({
  _tag: "Reply",
  reply
})

/** A connection whose messages are decoded values. `raw` is the underlying connection (`P`: its route parameters). */
export interface TypedConnection<I, O, P extends Params = Params> {
  readonly raw: Connection<P>
  readonly messages: Stream.Stream<I>
  readonly send: (value: O) => Effect.Effect<void, ConnectionClosedError | MessageDroppedError | CodecError>
  /** The encoded form of a value, for `Broker.publish`. */
  readonly encode: (value: O) => Effect.Effect<Message.Outgoing, CodecError>
}

export interface TypedOptions<I, O> {
  readonly incoming: Schema.Codec<I, any>
  readonly outgoing: Schema.Codec<O, any>
  readonly codec?: Codec<I, O> | undefined
  readonly onDecodeError?: DecodeErrorPolicy<O> | undefined
}

/**
 * Turn a handler of typed values into a route handler. Given to `Router.ws`, its
 * `conn.raw.params` are typed from the route's path.
 */
export const handler = <I, O, R, P extends Params = Params>(
  options: TypedOptions<I, O>,
  typedHandler: (connection: TypedConnection<I, O, P>) => Effect.Effect<void, unknown, R>
): Handler<R, P> => {
  const codec = options.codec ?? json(options.incoming, options.outgoing)
  const policy = options.onDecodeError ?? closeOnDecodeError()
  return (connection) => {
    const send = (value: O) => Effect.flatMap(codec.encode(value), connection.send)
    const messages = connection.messages.pipe(
      Stream.mapEffect((message) =>
        codec.decode(message).pipe(
          Effect.map((value) => ({ ok: true as const, value })),
          Effect.catchTag("CodecError", (error) => {
            if (policy._tag === "Reply") {
              return Effect.as(Effect.ignore(send(policy.reply(error))), { ok: false as const, stop: false })
            }
            const code = message._tag === "Binary" && policy.code === CloseCode.InvalidPayload
              ? CloseCode.UnsupportedData // RFC 6455 §7.4.1: a type the endpoint cannot accept
              : policy.code
            return Effect.as(
              Effect.andThen(
                Effect.logInfo(`closing connection ${connection.id}: ${error.message}`),
                connection.close(code, "message did not decode")
              ),
              { ok: false as const, stop: true }
            )
          })
        )
      ),
      Stream.takeWhile((r) => r.ok || !r.stop),
      Stream.filter((r): r is { ok: true; value: I } => r.ok),
      Stream.map((r) => r.value)
    )
    return typedHandler({ raw: connection, messages, send, encode: codec.encode })
  }
}
