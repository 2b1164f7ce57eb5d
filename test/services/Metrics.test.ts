// The Prometheus metrics: close codes chosen by peers must not mint one series each.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Connection } from "../../src/services/Connection.ts"
import * as Metrics from "../../src/services/Metrics.ts"
import * as Router from "../../src/services/Router.ts"
import * as Testing from "../../src/testing.ts"

const echo = (conn: Connection) => conn.messages.pipe(Stream.runForEach((m) => conn.send(m)))

const closeSeries = (text: string) =>
  text.split("\n").filter((line) => line.startsWith(`${Metrics.names.closes}{`))

describe("wsreactor_closes_total", () => {
  it("labels known codes as themselves and buckets the rest", () => {
    expect(Metrics.closeCodeLabel(1000)).toBe("1000")
    expect(Metrics.closeCodeLabel(1006)).toBe("1006")
    expect(Metrics.closeCodeLabel(1015)).toBe("1015")
    expect(Metrics.closeCodeLabel(3000)).toBe("3xxx")
    expect(Metrics.closeCodeLabel(4999)).toBe("4xxx")
    expect(Metrics.closeCodeLabel(1004)).toBe("other")
    expect(Metrics.closeCodeLabel(65535)).toBe("other")
  })

  const metrics = Metrics.makeIsolated()
  it.effect("60 peers closing with 60 different codes make 3 series, not 60", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const codes = [
        ...Array.from({ length: 30 }, (_, i) => 4000 + i),
        ...Array.from({ length: 29 }, (_, i) => 3000 + i * 7),
        1000
      ]
      yield* Effect.forEach(codes, (code) =>
        Effect.scoped(Effect.gen(function*() {
          const client = yield* server.connect()
          yield* client.close(code)
          yield* client.expectClose(code)
          yield* client.expectDisconnected
        })), { concurrency: 10, discard: true })
      yield* Testing.settle
      const series = closeSeries(yield* metrics.render)
      expect(series).toHaveLength(3)
      expect(series).toEqual(expect.arrayContaining([
        `${Metrics.names.closes}{code="4xxx"} 30`,
        `${Metrics.names.closes}{code="3xxx"} 29`,
        `${Metrics.names.closes}{code="1000"} 1`
      ]))
    }).pipe(Effect.provide(Testing.layer(Router.make([Router.ws("/", echo)]), { hooks: metrics.hooks }))))
})
