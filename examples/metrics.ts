import { Effect, Stream } from "effect"
import { Metrics, Router } from "wsreactor"

// Prometheus metrics: `Metrics.make` gives the hooks that count (connections, handshakes, messages,
// bytes, close codes, backpressure, heartbeat timeouts, protocol errors) and `render` for GET /metrics.
export const withMetrics = Effect.gen(function*() {
  const metrics = yield* Metrics.make
  const app = Router.make([
    Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send))),
    Router.get("/metrics", () => Effect.map(metrics.render, Metrics.response))
  ])
  return { app, hooks: metrics.hooks }
})

// Serve it with the hooks: Server.serve(app, { hooks }) (or Testing.layer(app, { hooks }) in tests).
