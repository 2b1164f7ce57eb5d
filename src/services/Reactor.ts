/**
 * The reactor: the Effect lifecycle of one accepted connection, in the spirit
 * of the original epoll design (a state per socket: handshake → open →
 * closing → closed). It runs in the connection's own fiber: read the request
 * head under the handshake deadline, answer it (plain HTTP, a refusal, or the
 * 101 of an accepted upgrade), then run the handler in this same fiber while
 * the `Session` drives the socket. It never fails, never lets one
 * connection's failure reach another, and always releases the socket.
 *
 * The rules live elsewhere: the handshake in `Handshake`, the WebSocket rules
 * in `Protocol`, the I/O driving in `Session` (with `Inbox`, `Outbox`,
 * `Liveness`), the app contract in `App`.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Handshake from "../domain/Handshake.ts"
import * as PerMessageDeflate from "../domain/PerMessageDeflate.ts"
import type { Admission } from "./Admission.ts"
import type { Accept, App } from "./App.ts"
import { CompressingSlots, CompressionLimiter, makeCompressor } from "./Compression.ts"
import { Session, type ServerContext } from "./Session.ts"
import type { Incoming } from "./Transport.ts"

export type { Accept, App, ConnectionHandle, Hooks, HttpResponse, Peer, Reject, UpgradeDecision } from "./App.ts"
export type { ServerContext } from "./Session.ts"

/** permessage-deflate for a server: the options, the process-wide zlib limiter and the compressing-connection cap. */
export interface DeflateSupport {
  readonly options: PerMessageDeflate.DeflateOptions
  readonly limiter: CompressionLimiter["Service"]
  readonly slots: CompressingSlots
}

/**
 * The function a transport runs for each accepted connection. Each connection
 * gets its own `Scope`, closed when the connection ends: the app may need
 * `Scope` (a handler that `yield* broker.subscribe(...)`), and the result does not.
 *
 * @example
 * const run = Reactor.make(app, serverContext)
 * yield* transport.run(run)
 */
export const make = <R>(
  app: App<R>,
  server: ServerContext,
  deflate?: DeflateSupport,
  admission?: Admission
): (incoming: Incoming) => Effect.Effect<void, never, Exclude<R, Scope.Scope>> =>
(incoming) =>
  Effect.suspend(() => {
    // Over the server's connection cap: a 503 before a byte of the request is read.
    if (admission !== undefined && !admission.enter()) return admission.refuse(incoming, server.hooks)
    const session = new Session(incoming, server)
    session.listen()
    // Suspended, so the handshake's effects are built when run and dropped once done: an idle
    // connection's fiber keeps only what the open phase needs.
    return Effect.onExit(Effect.scoped(Effect.suspend(() => runSession(session, app, server, deflate))), (exit) => {
      admission?.leave()
      session.dispose()
      incoming.destroy()
      return exit._tag === "Failure" && !Cause.hasInterruptsOnly(exit.cause)
        ? Effect.logError("connection failed", exit.cause)
        : Effect.void
    })
  })

// A chain of steps, each in tail position: once the connection is open, nothing of the
// handshake stays on the fiber's stack while it idles.
const runSession = <R>(
  session: Session,
  app: App<R>,
  server: ServerContext,
  deflate: DeflateSupport | undefined
): Effect.Effect<void, never, R | Scope.Scope> =>
  Effect.flatMap(session.readHead(), (head): Effect.Effect<void, never, R | Scope.Scope> => {
    switch (head._tag) {
      case "Timeout":
      case "Gone":
        return Effect.void
      case "Invalid":
        return session.answer(Handshake.rejectResponse(head.error), head.error.status)
      case "Request":
        break
    }
    const request = head.request
    // The transport is the peer: its address getters cost a syscall only when asked.
    const peer = session.incoming
    if (!Handshake.isUpgradeAttempt(request)) {
      return Effect.flatMap(app.http(request, peer), (response) => {
        const bytes = Handshake.httpResponse(response)
        // RFC 9110 §9.3.2: HEAD gets the GET response's header fields, without content.
        return session.answer(request.method === "HEAD" ? headOnly(bytes) : bytes, response.status)
      })
    }
    const validated = Handshake.validateUpgrade(request)
    if (validated._tag === "Error") {
      return session.answer(Handshake.rejectResponse(validated.error), validated.error.status)
    }
    const upgrade = validated.upgrade
    return Effect.flatMap(app.upgrade(upgrade, peer), (decision) => {
      if (decision._tag === "Reject") {
        return session.answer(Handshake.httpResponse(decision.response), decision.response.status)
      }
      // RFC 7692 §5: accept the first acceptable permessage-deflate offer, unless the app answered extensions itself.
      const offered = deflate !== undefined && decision.extensions === undefined
        ? PerMessageDeflate.negotiate(upgrade.extensions, deflate.options)
        : undefined
      const open = (negotiated: PerMessageDeflate.Negotiated | undefined): Effect.Effect<void, never, R | Scope.Scope> => {
        const accepted: Accept<R> = negotiated === undefined ? decision : { ...decision, extensions: negotiated.response }
        server.hooks.onHandshake?.(101)
        session.incoming.write([
          Handshake.acceptResponse({
            key: upgrade.key,
            protocol: accepted.protocol,
            extensions: accepted.extensions,
            headers: accepted.headers
          })
        ])
        if (negotiated === undefined || deflate === undefined) return session.open(request, peer, accepted, undefined)
        // The zlib streams live as long as the connection (in its scope).
        return Effect.flatMap(
          makeCompressor(negotiated.params, deflate.options).pipe(Effect.provideService(CompressionLimiter, deflate.limiter)),
          (compressor) => session.open(request, peer, accepted, { compressor, threshold: deflate.options.threshold })
        )
      }
      if (offered === undefined || deflate === undefined) return open(undefined)
      // Over maxCompressingConnections: decline the offer (§5 allows it); the connection runs uncompressed.
      return Effect.flatMap(deflate.slots.reserve, (slot) => open(slot ? offered : undefined))
    })
  })

const headOnly = (response: Uint8Array): Uint8Array => {
  for (let i = 3; i < response.length; i++) {
    if (response[i] === 10 && response[i - 1] === 13 && response[i - 2] === 10 && response[i - 3] === 13) {
      return response.subarray(0, i + 1)
    }
  }
  return response
}
