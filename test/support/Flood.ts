/**
 * Inbound backpressure, as the client tests check it: a server handler sends
 * `total` 64 KiB messages (32 MiB for 512) to a client that reads nothing at
 * first. The sends must stall (the kernel's and TLS's buffers and the client's
 * bounded inbox hold far less) and stay stalled, then all arrive once it reads.
 *
 * @example
 * const flood = makeFlood(512)
 * // serve Router.ws("/*", flood.handler), connect `conn` with a small inbox, then:
 * yield* flood.expectStallThenDrain(conn)
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { expect } from "vitest"
import type { Connection } from "../../src/services/Connection.ts"

export const makeFlood = (total: number) => {
  let sent = 0
  const handler = (c: Connection) =>
    Effect.forEach(
      Array.from({ length: total }),
      () => Effect.andThen(c.send(new Uint8Array(64 * 1024)), Effect.sync(() => sent++)),
      { discard: true }
    ).pipe(Effect.andThen(Stream.runDrain(c.messages)))
  const expectStallThenDrain = (conn: Pick<Connection, "messages">) =>
    Effect.gen(function*() {
      yield* Effect.sleep("300 millis")
      const stalledAt = sent
      expect(stalledAt).toBeLessThan(total)
      yield* Effect.sleep("100 millis")
      expect(sent).toBe(stalledAt)
      const received = yield* Effect.timeout(conn.messages.pipe(Stream.take(total), Stream.runCount), "5 seconds")
      expect(received).toBe(total)
      expect(sent).toBe(total)
    })
  return { handler, expectStallThenDrain }
}
