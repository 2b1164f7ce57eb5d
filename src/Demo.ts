/**
 * The application `npm start` serves: a WebSocket echo on every path (what
 * conformance suites drive) and a short page for plain HTTP GETs.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Connection } from "./services/Connection.ts"
import type { App } from "./services/Reactor.ts"

/** Echo every message back as the same type (text stays text, binary stays binary). */
export const echo = (connection: Connection) =>
  connection.messages.pipe(Stream.runForEachArray((messages) => connection.sendAll(messages)))

const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsreactor</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>wsreactor</h1>
<p>A WebSocket server (RFC 6455) built on Effect. Connect a WebSocket client to any path on this port:
every text and binary message is echoed back.</p>
</body></html>
`

/** Echo on every path; plain GETs get the page, other methods 405. */
export const echoApp: App<never> = {
  http: (request) =>
    Effect.succeed(
      request.method === "GET" || request.method === "HEAD"
        ? { status: 200, headers: [["Content-Type", "text/html; charset=utf-8"]], body: page }
        : { status: 405, headers: [["Allow", "GET"]], body: "method not allowed\n" }
    ),
  upgrade: () => Effect.succeed({ _tag: "Accept", handler: echo })
}
