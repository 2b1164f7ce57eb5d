/**
 * A burst of binary messages of the given sizes through echoing connections,
 * each payload a pattern of its connection and index: what comes back must be
 * the same sizes, in order, byte for byte. The client tests use it to catch a
 * decoder that keeps views of a read buffer that is reused.
 *
 * @example
 * yield* expectBurstEchoed([conn], [70_000, 3, 0])
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { expect } from "vitest"
import type { Connection } from "../../src/services/Connection.ts"

const pattern = (size: number, conn: number, index: number): Uint8Array =>
  new Uint8Array(size).map((_, k) => (k * 31 + index * 7 + conn * 13) & 0xff)

export const expectBurstEchoed = (
  conns: ReadonlyArray<Pick<Connection, "sendAll" | "messages">>,
  sizes: ReadonlyArray<number>
) =>
  Effect.gen(function*() {
    yield* Effect.forEach(conns, (conn, c) => conn.sendAll(sizes.map((size, i) => pattern(size, c, i))))
    const got = yield* Effect.forEach(
      conns,
      (conn) => Effect.timeout(conn.messages.pipe(Stream.take(sizes.length), Stream.runCollect), "5 seconds"),
      { concurrency: "unbounded" }
    )
    got.forEach((messages, c) => {
      expect(messages.map((m) => m.data.length)).toEqual(sizes)
      messages.forEach((m, i) => expect(Buffer.from(m.data).equals(Buffer.from(pattern(sizes[i]!, c, i)))).toBe(true))
    })
  })
