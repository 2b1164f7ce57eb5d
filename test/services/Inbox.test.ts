// The inbox on its own: bounds by count and bytes, batches, and inflation one message at a time
// against the byte budget (a client sending many small compressed messages that inflate to
// megabytes cannot make the server hold more than the budget plus one message).
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { protocolError, type ProtocolError } from "../../src/domain/ProtocolError.ts"
import type { Compressor } from "../../src/services/Compression.ts"
import { Compressed, Inbox, type InboxOwner } from "../../src/services/Inbox.ts"
import * as Message from "../../src/services/Message.ts"

const recorder = () => {
  const log: Array<string> = []
  const errors: Array<ProtocolError> = []
  const owner: InboxOwner = {
    onInboxFull: () => log.push("full"),
    onInboxRoom: () => log.push("room"),
    onCaughtUp: () => log.push("caught-up"),
    onInflateError: (error) => errors.push(error)
  }
  return { log, errors, owner }
}

/** A compressor whose "inflation" turns the first byte n into n MiB, counting the calls. */
const fakeCompressor = () => {
  let calls = 0
  const compressor: Compressor = {
    compress: (data) => Effect.succeed(data),
    decompress: (data, maxSize) =>
      Effect.suspend(() => {
        calls++
        const size = data[0]! * 1024 * 1024
        return size > maxSize
          ? Effect.fail(protocolError("MessageTooBig", "too big"))
          : Effect.succeed(new Uint8Array(size))
      })
  }
  return { compressor, calls: () => calls }
}

const bin = (n: number) => new Message.BinaryMessage(new Uint8Array(n))

describe("Inbox", () => {
  it.effect("a pull takes every waiting message in one batch", () =>
    Effect.gen(function*() {
      const { owner } = recorder()
      const inbox = new Inbox({ capacity: 64, highWaterMark: 1 << 20, maxMessageSize: 1 << 24 }, undefined, owner)
      inbox.push([bin(1), bin(2)])
      inbox.push([bin(3)])
      const batch = yield* inbox.pull
      expect(batch.map((m) => m.data.length)).toEqual([1, 2, 3])
    }))

  it.effect("over the count mark the owner is told to stop reading, and to read again once the handler took the batch", () =>
    Effect.gen(function*() {
      const { owner, log } = recorder()
      const inbox = new Inbox({ capacity: 3, highWaterMark: 1 << 20, maxMessageSize: 1 << 24 }, undefined, owner)
      inbox.push([bin(1), bin(1)])
      expect(log).toEqual([])
      inbox.push([bin(1)])
      expect(log).toEqual(["full"])
      yield* inbox.pull
      expect(log).toEqual(["full", "room"])
    }))

  it.effect("over the byte mark too", () =>
    Effect.gen(function*() {
      const { owner, log } = recorder()
      const inbox = new Inbox({ capacity: 100, highWaterMark: 1000, maxMessageSize: 1 << 24 }, undefined, owner)
      inbox.push([bin(600)])
      expect(log).toEqual([])
      inbox.push([bin(600)])
      expect(log).toEqual(["full"])
    }))

  it.effect("after the end: queued messages first, then Done, and the handler is caught up", () =>
    Effect.gen(function*() {
      const { owner, log } = recorder()
      const inbox = new Inbox({ capacity: 64, highWaterMark: 1 << 20, maxMessageSize: 1 << 24 }, undefined, owner)
      inbox.push([bin(1)])
      inbox.end()
      expect((yield* inbox.pull).length).toBe(1)
      const done = yield* Effect.exit(inbox.pull)
      expect(Exit.isFailure(done) && Cause.hasFails(done.cause)).toBe(true)
      expect(log).toContain("caught-up")
    }))

  it.effect("64 compressed messages that each inflate to 4 MiB: one pull inflates one of them, not all 64", () =>
    Effect.gen(function*() {
      const { owner } = recorder()
      const fake = fakeCompressor()
      const inbox = new Inbox({ capacity: 1000, highWaterMark: 1 << 20, maxMessageSize: 16 << 20 }, fake.compressor, owner)
      const queued = Array.from({ length: 64 }, () => new Compressed(true, new Uint8Array([4])))
      inbox.push(queued)
      const first = yield* inbox.pull
      expect(first).toHaveLength(1)
      expect(first[0]!.data.length).toBe(4 << 20)
      expect(fake.calls()).toBe(1) // before: 64 inflations (256 MiB held) before the handler saw one
      const second = yield* inbox.pull
      expect(second).toHaveLength(1)
      expect(fake.calls()).toBe(2)
    }))

  it.effect("small inflated messages fill a batch up to the budget", () =>
    Effect.gen(function*() {
      const { owner } = recorder()
      const fake = fakeCompressor()
      // Each inflates to 1 MiB; a budget of 3 MiB takes three per batch.
      const inbox = new Inbox({ capacity: 1000, highWaterMark: 3 << 20, maxMessageSize: 16 << 20 }, fake.compressor, owner)
      inbox.push(Array.from({ length: 10 }, () => new Compressed(false, new Uint8Array([1]))))
      // Text must be UTF-8: zeros are.
      expect((yield* inbox.pull).length).toBe(3)
      expect(fake.calls()).toBe(3)
    }))

  it.effect("an inflation error delivers the messages before it, then ends the stream and tells the owner", () =>
    Effect.gen(function*() {
      const { owner, errors } = recorder()
      const fake = fakeCompressor()
      const inbox = new Inbox({ capacity: 1000, highWaterMark: 64 << 20, maxMessageSize: 2 << 20 }, fake.compressor, owner)
      inbox.push([
        new Compressed(true, new Uint8Array([1])),
        new Compressed(true, new Uint8Array([3])), // 3 MiB > maxMessageSize: 1009
        new Compressed(true, new Uint8Array([1]))
      ])
      const batch = yield* inbox.pull
      expect(batch).toHaveLength(1)
      expect(errors.map((e) => e.closeCode)).toEqual([1009])
      const done = yield* Effect.exit(inbox.pull)
      expect(Exit.isFailure(done)).toBe(true)
    }))
})
