import { Effect, Schema, Stream } from "effect"
import { Broker, Middleware, Router, Typed } from "wsreactor"

const Say = Schema.Struct({ text: Schema.String.check(Schema.isMaxLength(500)) })
const Said = Schema.Struct({ room: Schema.String, text: Schema.String })

// Echo on /echo, a typed chat room per path on /room/:name, a health check.
export const app = Effect.gen(function*() {
  const broker = yield* Broker.Broker
  return Router.make([
    Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send))),
    // `params.name` is typed from the path; the subscription lasts as long as the connection (its Scope).
    Router.ws("/room/:name", Typed.handler({ incoming: Say, outgoing: Said }, (conn) =>
      Effect.gen(function*() {
        const topic = conn.raw.params.name
        yield* broker.subscribe(topic, conn.raw)
        yield* conn.messages.pipe(
          Stream.runForEach((say) =>
            conn.encode({ room: topic, text: say.text }).pipe(
              Effect.flatMap((message) => broker.publish(topic, message))
            )
          )
        )
      })), { connection: [Middleware.rateLimit({ capacity: 10, refillPerSecond: 5 })] }),
    Router.get("/healthz", () => Effect.succeed(Router.json({ ok: true })))
  ])
})
