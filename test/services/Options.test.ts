/**
 * Options are decoded before anything is forked: `Options.decode` fails with a typed
 * `InvalidOptionsError` naming every bad field, and `Server.serve`, `Server.layer` and
 * `Testing.layer` fail with it at once instead of running (or hanging) with bad options.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, References, Stream } from "effect"
import fc from "fast-check"
import { readFileSync } from "node:fs"
import * as Schema from "effect/Schema"
import WebSocket from "ws"
import * as NodeTcp from "../../src/layers/NodeTcp.ts"
import * as Options from "../../src/services/Options.ts"
import * as OptionsSchema from "../../src/services/OptionsSchema.ts"
import * as Router from "../../src/services/Router.ts"
import * as Server from "../../src/services/Server.ts"
import { Transport } from "../../src/services/Transport.ts"
import * as Testing from "../../src/testing.ts"
import { withTimeout } from "../support/Timeout.ts"

const echo = Router.make([Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send)))])

describe("Options.decode", () => {
  it.effect("fills in the defaults; undefined means the default", () =>
    Effect.gen(function*() {
      expect(yield* Options.decode()).toEqual(Options.defaultOptions)
      const options = yield* Options.decode({ maxMessageSize: 1024, idleTimeoutMs: undefined, hooks: {} } as Options.DecodeInput)
      expect(options).toEqual({ ...Options.defaultOptions, maxMessageSize: 1024 })
    }))

  it.effect("fails with InvalidOptionsError naming every bad field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Options.decode({
        maxMessageSize: 0,
        backpressure: "later" as never,
        shutdownTimeoutMs: -1,
        perMessageDeflate: { level: 42 }
      }))
      expect(error._tag).toBe("InvalidOptionsError")
      expect(error.detail).toContain("maxMessageSize: Expected a value between 1 and 2147483647")
      expect(error.detail).toContain("backpressure: Expected \"suspend\" | \"drop\" | \"close\"")
      expect(error.detail).toContain("shutdownTimeoutMs: Expected an integer between 0 and 3600000, got -1")
      expect(error.detail).toContain("perMessageDeflate: level 42 not in 0..9")
      expect(error.message).toMatch(/^invalid server options: maxMessageSize/)
    }))

  it.effect("Testing.layer with a bad option fails the test at once with the typed error", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Effect.gen(function*() {
          const server = yield* Testing.TestServer
          return yield* server.connect({ path: "/echo" })
        }).pipe(Effect.provide(Testing.layer(echo, { maxMessageSize: 0 })))
      )
      expect(Exit.isFailure(exit)).toBe(true)
      const error = yield* Effect.flip(exit)
      expect(error).toBeInstanceOf(Options.InvalidOptionsError)
      expect((error as Options.InvalidOptionsError).detail).toContain("maxMessageSize")
    }))

  it.effect("Server.serve fails with the typed error before it listens or forks", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Server.serve(echo, { heartbeatTimeoutMs: 0 }).pipe(
        // A transport that must never be used: serve fails while decoding, before it asks for it.
        Effect.provideService(Transport, Transport.of({
          address: { host: "127.0.0.1", port: 0 },
          run: () => Effect.die(new Error("the transport ran with bad options"))
        }))
      ))
      expect(error._tag).toBe("InvalidOptionsError")
      expect(error.detail).toContain("heartbeatTimeoutMs")
    }))
})

describe("Server.layer", () => {
  it.effect("fails to build with a bad option", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Layer.build(
        Server.layer(echo, { inboundQueueSize: 0 }).pipe(Layer.provide(NodeTcp.layer({ port: 0, host: "127.0.0.1" })))
      ))
      expect(error._tag).toBe("InvalidOptionsError")
    }).pipe(Effect.scoped))

  it.live("serves over real TCP while its scope is open; closing the scope closes peers with 1001", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(
        Server.layer(echo).pipe(Layer.provideMerge(NodeTcp.layer({ port: 0, host: "127.0.0.1" })))
      )
      const { port } = Context.get(context, Transport).address
      const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`)
      const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)))
      yield* Effect.promise(() => withTimeout("open", new Promise((resolve) => ws.once("open", resolve)), 5_000))
      ws.send("through the layer")
      const reply = yield* Effect.promise(() =>
        withTimeout("echo", new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data)))), 5_000)
      )
      expect(reply).toBe("through the layer")
      return { closed }
    }).pipe(
      Effect.scoped,
      Effect.flatMap(({ closed }) => Effect.promise(() => withTimeout("close", closed, 5_000))),
      Effect.map((code) => expect(code).toBe(1001)),
      Effect.provideService(References.MinimumLogLevel, "Warn")
    ))
})

describe("durations as Duration.Input", () => {
  it.effect("each duration field becomes its …Ms field", () =>
    Effect.gen(function*() {
      const options = yield* Options.decode({
        handshakeTimeout: "5 seconds",
        closeTimeout: Duration.millis(1500),
        heartbeatInterval: "20 seconds",
        heartbeatTimeout: 10_000,
        idleTimeout: "2 minutes"
      })
      expect(options).toMatchObject({
        handshakeTimeoutMs: 5_000,
        closeTimeoutMs: 1_500,
        heartbeatIntervalMs: 20_000,
        heartbeatTimeoutMs: 10_000,
        idleTimeoutMs: 120_000
      })
      expect(Options.withMillis({ shutdownTimeout: "1 second" }).input).toEqual({ shutdownTimeoutMs: 1_000 })
      // Typed as Effect's input: a string that is not a duration does not compile.
      // @ts-expect-error "soon" is not a Duration.Input
      expect(Options.withMillis({ idleTimeout: "soon" }).problems.length).toBe(1)
    }))

  it.effect("both forms of one field, a non-duration, or one out of range: InvalidOptionsError naming each", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Options.decode({
        heartbeatInterval: "20 seconds",
        heartbeatIntervalMs: 20_000,
        idleTimeout: "Infinity",
        shutdownTimeout: "2 hours",
        closeTimeout: "1500 micros"
      }))
      expect(error.detail).toContain("heartbeatInterval: give heartbeatInterval or heartbeatIntervalMs, not both")
      expect(error.detail).toContain("idleTimeout: Expected a finite duration")
      expect(error.detail).toContain("shutdownTimeoutMs: Expected an integer between 0 and 3600000, got 7200000")
      expect(error.detail).toContain("closeTimeoutMs")
    }))

  it.effect("Testing.layer and Server.serve take them too", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/echo" })
      yield* client.sendText("hi")
      yield* client.expectText("hi")
    }).pipe(Effect.provide(Testing.layer(echo, { heartbeatInterval: "1 minute", shutdownTimeout: "1 second" }))))
})

describe("Options without Schema", () => {
  // The server checks options by hand (Schema would cost every full GC ~4 MB of live heap);
  // OptionsSchema.ServerOptions states the same rules as a Schema, and both must agree.
  const value = fc.oneof(
    fc.integer({ min: -10, max: 10 }),
    fc.integer(),
    fc.constantFrom(255, 256, 1024 * 1024, 1024 * 1024 + 1, 2 ** 31 - 1, 2 ** 31, 3_600_000, 3_600_001, 86_400_001),
    fc.double(),
    fc.constantFrom(Number.NaN, Infinity, -0, 2 ** 53 + 2, "64", null, undefined, true, "suspend", "drop", "close", "later")
  )
  const fields = [...Object.keys(Options.defaultOptions)] as Array<keyof Options.ServerOptions>

  it("accepts and rejects exactly what OptionsSchema.ServerOptions does, naming the same fields", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...fields), value, { maxKeys: 4 }), (given) => {
        const merged = { ...Options.defaultOptions, ...given }
        const bySchema = Schema.decodeUnknownExit(OptionsSchema.ServerOptions)(merged, { errors: "all" })
        let byHand: Options.ServerOptions | Options.InvalidOptionsError
        try {
          byHand = Options.decodeOptions(given as Partial<Options.ServerOptions>)
        } catch (error) {
          byHand = error as Options.InvalidOptionsError
        }
        if (Exit.isSuccess(bySchema)) {
          expect(byHand).toEqual(bySchema.value)
        } else {
          expect(byHand).toBeInstanceOf(Options.InvalidOptionsError)
          const named = (text: string) => fields.filter((f) => new RegExp(`\\b${f}\\b`).test(text)).sort()
          expect(named((byHand as Options.InvalidOptionsError).detail)).toEqual(named(String(bySchema.cause)))
        }
      }),
      { numRuns: 2000 }
    )
  })

  it("the server's modules do not load effect/Schema", () => {
    const server = ["Server", "Options", "Admission", "Broker", "Router", "Session", "Outbox"]
    for (const name of server) {
      const source = readFileSync(new URL(`../../src/services/${name}.ts`, import.meta.url), "utf8")
      expect(source, name).not.toMatch(/^import \* as \w+ from "effect\/Schema"/m)
    }
  })
})
