/**
 * The metric names, apart from `Metrics.ts`: the Node transport counts accept
 * errors under one of them, and importing `Metrics.ts` for it would load the
 * Prometheus renderer (~1.6 MB of live heap) into every server, also those
 * that never serve `/metrics`.
 *
 * @example
 * import { names } from "./MetricNames.ts"
 * names.acceptErrors // "wsreactor_accept_errors_total"
 */
export const names = {
  connectionsOpen: "wsreactor_connections_open",
  connectionsOpened: "wsreactor_connections_opened_total",
  handshakes: "wsreactor_handshakes_total",
  messagesIn: "wsreactor_messages_in_total",
  messagesOut: "wsreactor_messages_out_total",
  bytesIn: "wsreactor_message_bytes_in_total",
  bytesOut: "wsreactor_bytes_out_total",
  closes: "wsreactor_closes_total",
  backpressure: "wsreactor_backpressure_total",
  heartbeatTimeouts: "wsreactor_heartbeat_timeouts_total",
  protocolErrors: "wsreactor_protocol_errors_total",
  zlibConnections: "wsreactor_zlib_connections",
  compressionDeclined: "wsreactor_compression_declined_total",
  /** Recorded by the Node transport (`NodeTcp`), in the same registry. */
  acceptErrors: "wsreactor_accept_errors_total"
} as const
