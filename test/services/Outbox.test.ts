import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { Protocol } from "../../src/domain/Protocol.ts"
import { Outbox, pack } from "../../src/services/Outbox.ts"
import type { Incoming } from "../../src/services/Transport.ts"
import { concatBytes } from "../support/Bytes.ts"

const view = (x: Uint8Array) => Buffer.from(x.buffer, x.byteOffset, x.length)
const sum = (xs: ReadonlyArray<Uint8Array>) => xs.reduce((n, x) => n + x.length, 0)

describe("Outbox.pack", () => {
  it("small frames of one turn become one buffer", () => {
    const batch = [new Uint8Array([1, 2]), new Uint8Array([3]), new Uint8Array(100).fill(4)]
    const out = pack(batch, sum(batch))
    expect(out.length).toBe(1)
    expect(new Uint8Array(out[0]!)).toEqual(concatBytes(batch))
  })

  it("an echo's header and large payload go out as they are: no copy", () => {
    const header = new Uint8Array([0x82, 0x7e, 0x40, 0x00])
    const payload = new Uint8Array(16384)
    const out = pack([header, payload], 4 + 16384)
    expect(out.length).toBe(2)
    expect(out[0]).toBe(header)
    expect(out[1]).toBe(payload)
  })

  it("property: same bytes in order; large buffers by reference; coalesced runs at most 64 KiB", () => {
    const chunk = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
      fc.integer({ min: 1, max: 4095 }).map((n) => new Uint8Array(n).fill(n & 0xff)),
      fc.integer({ min: 4096, max: 70000 }).map((n) => new Uint8Array(n).fill(n & 0xff))
    )
    fc.assert(
      fc.property(fc.array(chunk, { minLength: 1, maxLength: 120 }), (batch) => {
        const out = pack(batch, sum(batch))
        expect(view(concatBytes(out)).equals(view(concatBytes(batch)))).toBe(true)
        const inputs = new Set<Uint8Array>(batch)
        const outputs = new Set<Uint8Array>(out)
        for (const b of batch) if (b.length >= 4096) expect(outputs.has(b)).toBe(true)
        for (const o of out) if (!inputs.has(o)) expect(o.length).toBeLessThanOrEqual(64 * 1024)
        // Never two small buffers side by side: they would have been coalesced.
        for (let i = 1; i < out.length; i++) {
          const small = (b: Uint8Array) => b.length < 4096 && inputs.has(b)
          if (small(out[i - 1]!) && small(out[i]!)) {
            expect(out[i - 1]!.length + out[i]!.length).toBeGreaterThan(64 * 1024)
          }
        }
      }),
      { numRuns: 200 }
    )
  })
})

// A socket like Node's: write() says false from 16 KiB queued; nothing leaves until `send()`.
const fakeSocket = (reportsLength: boolean) => {
  let queued = 0
  let drains: Array<() => void> = []
  const incoming: Incoming = {
    remoteAddress: undefined,
    remotePort: undefined,
    listen: () => {},
    pause: () => {},
    resume: () => {},
    write: (chunks) => {
      queued += sum(chunks)
      return queued < 16 * 1024
    },
    onDrain: (callback) => {
      drains.push(callback)
    },
    end: () => {},
    destroy: () => {}
  }
  // A getter (a spread would copy its value once).
  if (reportsLength) Object.defineProperty(incoming, "writableLength", { get: () => queued })
  return {
    incoming,
    get queued() {
      return queued
    },
    drainAll: () => {
      queued = 0
      const waiting = drains
      drains = []
      for (const f of waiting) f()
    }
  }
}

describe("Outbox congestion", () => {
  const setup = (reportsLength: boolean) => {
    const socket = fakeSocket(reportsLength)
    const protocol = new Protocol({ role: "server", maxMessageSize: 1 << 24 })
    const changes: Array<boolean> = []
    const outbox = new Outbox(socket.incoming, protocol, 1 << 20, {}, {
      onCongestion: (congested) => changes.push(congested),
      onWriteDefect: (defect) => {
        throw defect
      }
    })
    const send = (bytes: number) => {
      protocol.sendBinary(new Uint8Array(bytes))
      outbox.flush()
    }
    return { socket, outbox, changes, send }
  }

  it("a large write under the mark does not congest (the transport's 16 KiB boolean is not the mark)", () => {
    const { changes, outbox, send, socket } = setup(true)
    send(256 * 1024)
    send(256 * 1024)
    expect(outbox.isCongested).toBe(false)
    expect(changes).toEqual([])
    expect(socket.queued).toBeGreaterThan(512 * 1024)
  })

  it("past the mark in the socket: congested, frames stay queued until drain; memory stays bounded", () => {
    const { changes, outbox, send, socket } = setup(true)
    for (let i = 0; i < 20; i++) send(256 * 1024)
    expect(outbox.isCongested).toBe(true)
    expect(changes).toEqual([true])
    // The socket holds at most the mark plus the batch that crossed it; the rest waits here.
    expect(socket.queued).toBeLessThanOrEqual((1 << 20) + 256 * 1024 + 16)
    expect(outbox.bufferedAmount).toBeGreaterThan(0)
    expect(outbox.overMark).toBe(true)
    // Drained: what waited here goes out in one write (over the mark again), then drains too.
    socket.drainAll()
    expect(outbox.bufferedAmount).toBe(0)
    expect(changes).toEqual([true, false, true])
    socket.drainAll()
    expect(changes).toEqual([true, false, true, false])
    expect(outbox.isCongested).toBe(false)
  })

  it("a transport that cannot tell its length: its boolean decides, as before", () => {
    const { changes, outbox, send } = setup(false)
    send(64 * 1024)
    expect(outbox.isCongested).toBe(true)
    expect(changes).toEqual([true])
  })
})
