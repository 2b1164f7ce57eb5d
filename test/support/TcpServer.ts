/**
 * Starts wsreactor's real server in-process on a real TCP port, for tests
 * that drive it with real clients (the `ws` package, fetch).
 *
 * @example
 * const server = await startServer(echoApp, { maxMessageSize: 1 << 20 })
 * const ws = new WebSocket(`ws://127.0.0.1:${server.port}/`)
 * // ...
 * await server.close()
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as NodeTcp from "../../src/layers/NodeTcp.ts"
import type { App } from "../../src/services/Reactor.ts"
import * as Server from "../../src/services/Server.ts"
import { Transport } from "../../src/services/Transport.ts"

export interface RunningServer {
  /** The port the kernel picked (the server listens on 127.0.0.1). */
  readonly port: number
  /** Graceful shutdown (close 1001 to open peers), then release the listening socket. */
  readonly close: () => Promise<void>
}

/**
 * Listen on 127.0.0.1 port 0 and serve `app` with `Server.serve(app, options)`.
 * Info logs (one per connection) are silenced; warnings and errors still print.
 */
export const startServer = async (
  app: App<never>,
  options: Server.ServeOptions = {}
): Promise<RunningServer> => {
  const scope = await Effect.runPromise(Scope.make())
  try {
    const context = await Effect.runPromise(
      Layer.buildWithScope(NodeTcp.layer({ port: 0, host: "127.0.0.1" }), scope)
    )
    const port = Context.get(context, Transport).address.port
    const fiber = Effect.runFork(
      Server.serve(app, options).pipe(
        Effect.provideContext(context),
        Effect.provideService(References.MinimumLogLevel, "Warn")
      )
    )
    let closing: Promise<void> | undefined
    const close = (): Promise<void> =>
      (closing ??= Effect.runPromise(
        Effect.andThen(Fiber.interrupt(fiber), Scope.close(scope, Exit.void))
      ))
    return { port, close }
  } catch (error) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  }
}
