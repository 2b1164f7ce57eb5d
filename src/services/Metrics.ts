/**
 * Prometheus metrics for a server, kept with Effect's own `Metric` module and
 * rendered by `effect/observability/PrometheusMetrics`. The reactor's `Hooks`
 * update them synchronously (`updateUnsafe` with a captured `Context`): no
 * Effect runs per message, one counter increment per read or write batch.
 *
 * @example
 * const program = Effect.gen(function*() {
 *   const metrics = yield* Metrics.make
 *   const app = Router.make([
 *     Router.get("/metrics", () => Effect.map(metrics.render, Metrics.response))
 *   ])
 *   return yield* Server.serve(app, { hooks: metrics.hooks })
 * })
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import type { Hooks, HttpResponse } from "./App.ts"

/** A server's metrics: the hooks that record them and the exposition text. */
export interface ServerMetrics {
  /** Pass to `Server.serve(app, { hooks })`. */
  readonly hooks: Hooks
  /** Every metric of the registry in Prometheus text exposition format 0.0.4. */
  readonly render: Effect.Effect<string>
}

/** The names used, for dashboards and tests. */
export { names } from "./MetricNames.ts"
import { names } from "./MetricNames.ts"

const counter = (name: string, description: string, attributes?: Record<string, string>) =>
  Metric.counter(name, { description, attributes, incremental: true })

// One metric value per label value, created on first use: an update is then a map lookup and an add.
const labelled = (name: string, description: string, label: string) => {
  const byValue = new Map<string | number, Metric.Counter<number>>()
  return (value: string | number): Metric.Counter<number> => {
    let metric = byValue.get(value)
    if (metric === undefined) byValue.set(value, metric = counter(name, description, { [label]: String(value) }))
    return metric
  }
}

// Codes with a meaning of their own (RFC 6455 §7.4.1, IANA registry §11.7; 1015 = TLS failure).
const knownCloseCodes = new Set([1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015])

/**
 * The `code` label of a close: a known code as itself, the rest bucketed
 * (`3xxx` registered, `4xxx` private, `other`). The peer chooses the code, so
 * a label per value would let it mint one series per connection.
 *
 * @example
 * closeCodeLabel(1000) // "1000"
 * closeCodeLabel(4321) // "4xxx"
 */
export const closeCodeLabel = (code: number): string =>
  knownCloseCodes.has(code)
    ? String(code)
    : code >= 3000 && code <= 3999
    ? "3xxx"
    : code >= 4000 && code <= 4999
    ? "4xxx"
    : "other"

/**
 * Metrics recorded in the registry of `context` (`Metric.MetricRegistry`;
 * Effect's process-wide default unless the context provides another).
 *
 * @example
 * const metrics = Metrics.makeWith(Context.make(Metric.MetricRegistry, new Map()))
 */
export const makeWith = (context: Context.Context<never>): ServerMetrics => {
  const open = Metric.gauge(names.connectionsOpen, { description: "WebSocket connections open now" })
  const opened = counter(names.connectionsOpened, "WebSocket connections accepted (101) since start")
  const handshakes = labelled(
    names.handshakes,
    "HTTP requests answered, by status: 101 = upgrade accepted, 4xx = upgrade refused or plain request",
    "status"
  )
  const messagesIn = counter(names.messagesIn, "Data messages received from peers")
  const messagesOut = counter(names.messagesOut, "Data messages queued for peers (a broadcast counts once per subscriber)")
  const bytesIn = counter(names.bytesIn, "Payload bytes of the data messages received")
  const bytesOut = counter(names.bytesOut, "Bytes written to sockets (frames with headers, control frames included)")
  const closes = labelled(
    names.closes,
    "Connections closed, by close code (1006 = no close frame exchanged; 3xxx, 4xxx and other are buckets)",
    "code"
  )
  const backpressure = labelled(
    names.backpressure,
    "Backpressure actions on a full outbound buffer: drop (message not sent) or close (1008)",
    "action"
  )
  const heartbeatTimeouts = counter(names.heartbeatTimeouts, "Connections dropped because a heartbeat ping went unanswered")
  const protocolErrors = labelled(names.protocolErrors, "Connections failed for a protocol error, by reason", "reason")
  const zlibConnections = Metric.gauge(names.zlibConnections, {
    description: "Connections holding zlib state now (a deflater, an inflater or both; idle ones give it back)"
  })
  const compressionDeclined = counter(
    names.compressionDeclined,
    "permessage-deflate offers declined because maxCompressingConnections connections compressed already"
  )

  // Register the unlabelled series at 0 so a scrape shows them before any traffic.
  open.modifyUnsafe(0, context)
  zlibConnections.modifyUnsafe(0, context)
  for (const metric of [opened, messagesIn, messagesOut, bytesIn, bytesOut, heartbeatTimeouts, compressionDeclined]) {
    metric.updateUnsafe(0, context)
  }

  const hooks: Hooks = {
    onHandshake: (status) => handshakes(status).updateUnsafe(1, context),
    onOpen: () => {
      open.modifyUnsafe(1, context)
      opened.updateUnsafe(1, context)
    },
    onClose: (_handle, info) => {
      open.modifyUnsafe(-1, context)
      closes(closeCodeLabel(info.code)).updateUnsafe(1, context)
    },
    onMessagesIn: (count, bytes) => {
      messagesIn.updateUnsafe(count, context)
      bytesIn.updateUnsafe(bytes, context)
    },
    onMessagesOut: (count) => messagesOut.updateUnsafe(count, context),
    onBytesOut: (bytes) => bytesOut.updateUnsafe(bytes, context),
    onBackpressure: (action) => backpressure(action).updateUnsafe(1, context),
    onHeartbeatTimeout: () => heartbeatTimeouts.updateUnsafe(1, context),
    onProtocolError: (_handle, error) => protocolErrors(error.reason).updateUnsafe(1, context),
    onZlibState: (held) => zlibConnections.modifyUnsafe(held ? 1 : -1, context),
    onCompressionDeclined: () => compressionDeclined.updateUnsafe(1, context)
  }
  const registry = Context.get(context, Metric.MetricRegistry)
  return {
    hooks,
    render: Effect.provideService(PrometheusMetrics.format(), Metric.MetricRegistry, registry)
  }
}

/**
 * Metrics in the registry of the current context.
 *
 * @example
 * const metrics = yield* Metrics.make
 * yield* Server.serve(app, { hooks: metrics.hooks })
 */
export const make: Effect.Effect<ServerMetrics> = Effect.map(Effect.context<never>(), makeWith)

/**
 * Metrics in a registry of their own (tests, several servers in one process).
 *
 * @example
 * const metrics = Metrics.makeIsolated()
 * Effect.runSync(metrics.render) // "# HELP wsreactor_connections_open ..."
 */
export const makeIsolated = (): ServerMetrics => makeWith(Context.make(Metric.MetricRegistry, new Map()))

/** The Prometheus content type for the text format. */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/**
 * An HTTP response carrying exposition text.
 *
 * @example
 * Router.get("/metrics", () => Effect.map(metrics.render, Metrics.response))
 */
export const response = (body: string): HttpResponse => ({
  status: 200,
  headers: [["Content-Type", contentType]],
  body
})

