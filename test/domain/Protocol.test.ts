// Protocol: every rule as twin tests, one `describe` per rule with a `server`
// and a `client` case (in the manner of python websockets' test_protocol.py).
// The peer's frames are masked towards a server and not towards a client
// (RFC 6455 §5.1); what the protocol sends is decoded as its peer would, so
// the masking rule is checked on every output.
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import { Opcode } from "../../src/domain/Opcode.ts"
import { Protocol, type ProtocolOptions, type Role } from "../../src/domain/Protocol.ts"
import { protocolError } from "../../src/domain/ProtocolError.ts"
import { concatBytes, splitAt } from "../support/Bytes.ts"

const roles: ReadonlyArray<Role> = ["server", "client"]
const enc = (s: string) => new TextEncoder().encode(s)
const bytesOf = (payload: Uint8Array | string) => (typeof payload === "string" ? enc(payload) : payload)
const PEER_MASK = new Uint8Array([0x11, 0x22, 0x33, 0x44])

/** Key n is [4n, 4n+1, 4n+2, 4n+3]: each frame's key is known, and each is fresh. */
const countingKeys = () => {
  let n = 0
  return () => {
    const key = new Uint8Array([n & 0xff, (n + 1) & 0xff, (n + 2) & 0xff, (n + 3) & 0xff])
    n += 4
    return key
  }
}

/** A protocol for `role`; the client gets a counting key source. */
const open = (role: Role, options: Partial<ProtocolOptions> = {}) =>
  new Protocol({ maskKey: role === "client" ? countingKeys() : undefined, ...options, role })

interface FrameMore {
  readonly fin?: boolean
  readonly rsv1?: boolean
  /** Default: what §5.1 requires of the peer (masked towards a server only). */
  readonly masked?: boolean
}

/** A frame from the peer of `role`. */
const fromPeer = (role: Role, opcode: number, payload: Uint8Array | string = "", more: FrameMore = {}) =>
  FrameEncoder.encodeFrameConcat(
    { opcode, fin: more.fin, rsv1: more.rsv1, mask: (more.masked ?? role === "server") ? PEER_MASK : undefined },
    bytesOf(payload)
  )
const text = (role: Role, payload: string) => fromPeer(role, Opcode.Text, payload)
const closeFrom = (role: Role, code?: number, reason?: string) =>
  fromPeer(role, Opcode.Close, FrameEncoder.closePayload(code, reason))

// Plain-data view of an event, so views and copies compare by content.
const plain = (e: FrameDecoder.DecoderEvent) => ("data" in e ? { ...e, data: Array.from(e.data) } : e)
const msg = (data: string) => ({ _tag: "Message", binary: false, data: Array.from(enc(data)), compressed: false })
const bin = (data: Uint8Array) => ({ _tag: "Message", binary: true, data: Array.from(data), compressed: false })
const ping = (data: string) => ({ _tag: "Ping", data: Array.from(enc(data)) })
const pong = (data: string) => ({ _tag: "Pong", data: Array.from(enc(data)) })
const close = (code: number | undefined, reason = "") => ({ _tag: "Close", code, reason })

/** Feed bytes (a copy: the protocol unmasks in place) and return the events as plain data. */
const receive = (p: Protocol, ...frames: Array<Uint8Array>) => p.receiveData(concatBytes(frames)).map(plain)

/**
 * What `p` queued, decoded as its peer decodes it: a server-role decoder for a
 * client's frames (they must be masked), a client-role one for a server's.
 */
const sent = (p: Protocol) => {
  const decoder = FrameDecoder.make({ role: p.role === "server" ? "client" : "server", maxMessageSize: 1 << 30 })
  const result = decoder.feed(concatBytes(p.dataToSend()))
  expect(result.error).toBeUndefined()
  return result.events.map(plain)
}

/** One rule, run for both roles: `describe(rule)` with a `server` and a `client` case. */
const twins = (rule: string, body: (role: Role) => void) =>
  describe(rule, () => {
    for (const role of roles) it(role, () => body(role))
  })

twins("data messages from the peer are returned in order; nothing is sent", (role) => {
  const p = open(role)
  const fragmented = [
    fromPeer(role, Opcode.Text, "hel", { fin: false }),
    fromPeer(role, Opcode.Continuation, "lo")
  ]
  expect(receive(p, text(role, "one"), fromPeer(role, Opcode.Binary, new Uint8Array([1, 2])), ...fragmented)).toEqual([
    msg("one"),
    bin(new Uint8Array([1, 2])),
    msg("hello")
  ])
  expect(p.dataToSend()).toEqual([])
  expect(p.state).toBe("Open")
  expect(p.bytesReceived).toBeGreaterThan(0)
})

describe("auto pong (RFC 6455 §5.5.2, §5.5.3)", () => {
  twins("a ping is returned and answered with a pong of the same payload", (role) => {
    const p = open(role)
    expect(receive(p, fromPeer(role, Opcode.Ping, "are you there"))).toEqual([ping("are you there")])
    expect(sent(p)).toEqual([pong("are you there")])
  })
  twins("no pong once our close frame is out", (role) => {
    const p = open(role)
    p.sendClose(1000)
    p.dataToSend()
    expect(receive(p, fromPeer(role, Opcode.Ping, "late"))).toEqual([ping("late")])
    expect(p.dataToSend()).toEqual([])
  })
  twins("autoPong: false returns the ping and leaves the answer to the caller", (role) => {
    const p = open(role, { autoPong: false })
    expect(receive(p, fromPeer(role, Opcode.Ping, "x"))).toEqual([ping("x")])
    expect(p.dataToSend()).toEqual([])
  })
})

twins("an unsolicited pong is returned and not answered (§5.5.3)", (role) => {
  const p = open(role)
  expect(receive(p, fromPeer(role, Opcode.Pong, "beat"))).toEqual([pong("beat")])
  expect(p.dataToSend()).toEqual([])
  expect(p.state).toBe("Open")
})

describe("the peer starts the close (§5.5.1, §7.1.2)", () => {
  twins("its code is echoed (not its reason); Closed, clean, initiated by the peer", (role) => {
    const p = open(role)
    expect(receive(p, closeFrom(role, 1001, "going"))).toEqual([close(1001, "going")])
    expect(sent(p)).toEqual([close(1001)])
    expect(p.state).toBe("Closed")
    expect(p.closeInitiator).toBe("peer")
    expect(p.closeExpected).toBe(true)
    expect(p.canSend).toBe(false)
    expect(p.closeInfo()).toEqual({ code: 1001, reason: "going", wasClean: true, initiatedBy: "peer" })
  })
  twins("an empty close is echoed empty; the code is 1005 (§7.1.5)", (role) => {
    const p = open(role)
    expect(receive(p, closeFrom(role))).toEqual([close(undefined)])
    expect(sent(p)).toEqual([close(undefined)])
    expect(p.closeInfo()).toEqual({ code: 1005, reason: "", wasClean: true, initiatedBy: "peer" })
  })
  twins("nothing after the close frame is read, in the same chunk or later", (role) => {
    const p = open(role)
    expect(receive(p, closeFrom(role, 1000), text(role, "after"))).toEqual([close(1000)])
    const received = p.bytesReceived
    expect(receive(p, text(role, "later"), fromPeer(role, Opcode.Ping))).toEqual([])
    expect(p.bytesReceived).toBe(received)
    expect(sent(p)).toEqual([close(1000)])
  })
  twins("nothing can be sent afterwards", (role) => {
    const p = open(role)
    receive(p, closeFrom(role, 1000))
    p.dataToSend()
    expect(p.sendText(enc("late"))).toBe(false)
    expect(p.sendPing()).toBe(false)
    expect(p.sendPong()).toBe(false)
    expect(p.sendClose(1000)).toBe(false)
    expect(p.dataToSend()).toEqual([])
  })
})

describe("we start the close (§7.1.2)", () => {
  twins("sendClose queues our frame; the peer's answer completes it with our code and reason", (role) => {
    const p = open(role)
    expect(p.sendClose(4000, "done")).toBe(true)
    expect(sent(p)).toEqual([close(4000, "done")])
    expect(p.state).toBe("Closing")
    expect(p.closeInitiator).toBe("local")
    expect(p.closeExpected).toBe(true)
    expect(p.canSend).toBe(false)
    expect(receive(p, closeFrom(role, 1000, "ok"))).toEqual([close(1000, "ok")])
    expect(p.dataToSend()).toEqual([]) // no second close frame
    expect(p.state).toBe("Closed")
    expect(p.closeInfo()).toEqual({ code: 4000, reason: "done", wasClean: true, initiatedBy: "local" })
  })
  twins("a second sendClose is refused", (role) => {
    const p = open(role)
    p.sendClose(1000)
    p.dataToSend()
    expect(p.sendClose(1001)).toBe(false)
    expect(p.dataToSend()).toEqual([])
  })
  twins("the default code is 1000", (role) => {
    const p = open(role)
    p.sendClose()
    expect(sent(p)).toEqual([close(1000)])
  })
  twins("sendClose(1005) sends an empty close frame: 1005 must not be on the wire (§7.4.1)", (role) => {
    const p = open(role)
    p.sendClose(1005)
    expect(sent(p)).toEqual([close(undefined)])
    receive(p, closeFrom(role))
    expect(p.closeInfo()).toEqual({ code: 1005, reason: "", wasClean: true, initiatedBy: "local" })
  })
})

twins("data that arrives after our close frame is dropped; control frames still read (§1.4)", (role) => {
  const p = open(role)
  p.sendClose(1000)
  p.dataToSend()
  expect(receive(p, text(role, "in flight"), fromPeer(role, Opcode.Binary, "too"), fromPeer(role, Opcode.Pong, "p")))
    .toEqual([pong("p")])
  expect(receive(p, closeFrom(role, 1000))).toEqual([close(1000)])
  expect(p.state).toBe("Closed")
})

describe("holdClose: our close frame waits for releaseClose", () => {
  twins("the echo is held; data can still be sent; releaseClose sends it and closes", (role) => {
    const p = open(role, { holdClose: true })
    expect(receive(p, text(role, "question"), closeFrom(role, 1000, "bye"))).toEqual([msg("question"), close(1000, "bye")])
    expect(p.dataToSend()).toEqual([])
    expect(p.state).toBe("Closing")
    expect(p.closeHeld).toBe(true)
    expect(p.closeExpected).toBe(false)
    expect(p.canSend).toBe(true)
    expect(p.sendText(enc("answer"))).toBe(true)
    expect(sent(p)).toEqual([msg("answer")])
    p.releaseClose()
    expect(sent(p)).toEqual([close(1000)])
    expect(p.state).toBe("Closed")
    expect(p.closeHeld).toBe(false)
    expect(p.closeExpected).toBe(true)
    expect(p.canSend).toBe(false)
    expect(p.sendText(enc("late"))).toBe(false)
    expect(p.closeInfo()).toEqual({ code: 1000, reason: "bye", wasClean: true, initiatedBy: "peer" })
  })
  twins("a failure's close is held too", (role) => {
    const p = open(role, { holdClose: true })
    receive(p, fromPeer(role, 0x3))
    expect(p.dataToSend()).toEqual([])
    expect(p.closeExpected).toBe(false)
    p.releaseClose()
    expect(sent(p)).toMatchObject([{ _tag: "Close", code: 1002 }])
    expect(p.closeExpected).toBe(true)
  })
  twins("a failure while the echo is held replaces it (a message before the close did not inflate)", (role) => {
    const p = open(role, { holdClose: true, compression: true })
    receive(p, closeFrom(role, 1000))
    p.fail(protocolError("InvalidCompressedData", "bad deflate data"))
    p.releaseClose()
    expect(sent(p)).toMatchObject([{ _tag: "Close", code: 1007 }])
    expect(p.state).toBe("Closed")
    expect(p.closeInfo()).toMatchObject({ code: 1007, wasClean: false })
  })
  twins("the connection ends with the echo still held: not clean (§7.1.1: only one close frame was sent)", (role) => {
    for (const end of [(p: Protocol) => p.abort("close timeout"), (p: Protocol) => p.receiveEof()]) {
      const p = open(role, { holdClose: true })
      receive(p, closeFrom(role, 1000))
      end(p)
      expect(p.state).toBe("Closed")
      expect(p.closeInfo()).toMatchObject({ code: 1000, wasClean: false, initiatedBy: "peer" })
    }
  })
})

describe("fail: a bad frame fails the connection (§7.1.7) with the right close code", () => {
  const cases: ReadonlyArray<{
    readonly name: string
    readonly code: number
    readonly options?: Partial<ProtocolOptions>
    readonly bad: (role: Role) => Uint8Array
  }> = [
    {
      name: "wrong masking (unmasked to a server, masked to a client, §5.1)",
      code: 1002,
      bad: (role) => fromPeer(role, Opcode.Text, "x", { masked: role === "client" })
    },
    { name: "reserved opcode (§5.2)", code: 1002, bad: (role) => fromPeer(role, 0xb) },
    { name: "RSV1 without an extension (§5.2)", code: 1002, bad: (role) => fromPeer(role, Opcode.Text, "x", { rsv1: true }) },
    { name: "invalid UTF-8 text (§8.1)", code: 1007, bad: (role) => fromPeer(role, Opcode.Text, new Uint8Array([0xc3, 0x28])) },
    { name: "message too big (§7.4.1)", code: 1009, options: { maxMessageSize: 10 }, bad: (role) => text(role, "eleven byte") },
    { name: "fragmented control frame (§5.5)", code: 1002, bad: (role) => fromPeer(role, Opcode.Ping, "", { fin: false }) },
    { name: "close code not allowed on the wire (§7.4.1)", code: 1002, bad: (role) => closeFrom(role, 1005) },
    { name: "1-byte close payload (§5.5.1)", code: 1002, bad: (role) => fromPeer(role, Opcode.Close, new Uint8Array([3])) }
  ]
  for (const c of cases) {
    twins(c.name, (role) => {
      const p = open(role, c.options)
      // Events before the bad frame are still returned, and the ping before it answered.
      expect(receive(p, text(role, "before"), fromPeer(role, Opcode.Ping, "p"), c.bad(role), text(role, "after")))
        .toEqual([msg("before"), ping("p")])
      expect(sent(p)).toMatchObject([pong("p"), { _tag: "Close", code: c.code }])
      expect(p.failure?.closeCode).toBe(c.code)
      expect(p.state).toBe("Closing")
      expect(p.closeExpected).toBe(true)
      expect(p.canSend).toBe(false)
      // Everything after it is discarded, even the peer's close answer.
      expect(receive(p, text(role, "more"), fromPeer(role, Opcode.Ping), closeFrom(role, 1000))).toEqual([])
      expect(p.dataToSend()).toEqual([])
      p.receiveEof()
      expect(p.state).toBe("Closed")
      expect(p.closeInfo()).toMatchObject({ code: c.code, wasClean: false, initiatedBy: "local" })
    })
  }
  twins("fail() by the caller (e.g. bad deflate data): close 1007 queued, input discarded", (role) => {
    const p = open(role)
    p.fail(protocolError("InvalidCompressedData", "inflate failed"))
    expect(sent(p)).toMatchObject([{ _tag: "Close", code: 1007 }])
    expect(receive(p, text(role, "x"))).toEqual([])
    p.fail(protocolError("InvalidUtf8", "second"))
    expect(p.dataToSend()).toEqual([])
    expect(p.failure?.closeCode).toBe(1007)
  })
  twins("a bad frame after our close: no second close frame", (role) => {
    const p = open(role)
    p.sendClose(1000)
    p.dataToSend()
    expect(receive(p, fromPeer(role, 0x3))).toEqual([])
    expect(p.dataToSend()).toEqual([])
    expect(p.state).toBe("Closing")
  })
})

describe("receiveEof: the TCP connection ended", () => {
  twins("without a close frame: Closed, 1006, initiated by the transport (§7.1.5)", (role) => {
    const p = open(role)
    p.receiveEof()
    expect(p.state).toBe("Closed")
    expect(p.receivedEof).toBe(true)
    expect(p.closeInfo()).toEqual({ code: 1006, reason: "", wasClean: false, initiatedBy: "transport" })
    expect(receive(p, text(role, "x"))).toEqual([])
    expect(p.canSend).toBe(false)
  })
  twins("after our close frame, before the answer: 1006, not clean, initiated by us", (role) => {
    const p = open(role)
    p.sendClose(1000, "bye")
    p.receiveEof()
    expect(p.closeInfo()).toEqual({ code: 1006, reason: "bye", wasClean: false, initiatedBy: "local" })
  })
  twins("after the closing handshake: still clean", (role) => {
    const p = open(role)
    receive(p, closeFrom(role, 1000))
    p.receiveEof()
    expect(p.closeInfo()).toEqual({ code: 1000, reason: "", wasClean: true, initiatedBy: "peer" })
  })
  twins("then fail() (a late inflate error): our close frame is still queued, 1007 initiated by us (§7.1.7)", (role) => {
    for (const holdClose of [false, true]) {
      const p = open(role, { holdClose })
      p.receiveEof()
      p.fail(protocolError("InvalidCompressedData", "inflate failed"))
      expect(p.closeHeld).toBe(holdClose)
      p.releaseClose()
      expect(sent(p)).toMatchObject([{ _tag: "Close", code: 1007 }])
      expect(p.state).toBe("Closed")
      expect(p.canSend).toBe(false)
      expect(p.closeInfo()).toMatchObject({ code: 1007, wasClean: false, initiatedBy: "local" })
    }
  })
  twins("then fail() after the closing handshake or an abort: nothing more is sent", (role) => {
    const done = open(role)
    receive(done, closeFrom(role, 1000))
    done.dataToSend()
    done.receiveEof()
    done.fail(protocolError("InvalidUtf8", "late"))
    expect(done.dataToSend()).toEqual([])
    expect(done.closeInfo()).toMatchObject({ code: 1000, wasClean: true })
    const aborted = open(role)
    aborted.abort("close timeout")
    aborted.fail(protocolError("InvalidUtf8", "late"))
    expect(aborted.dataToSend()).toEqual([])
    expect(aborted.closeInfo()).toMatchObject({ code: 1006, reason: "close timeout" })
  })
})

describe("abort: the I/O side gives up on the peer", () => {
  twins("Closed, 1006 with the reason, input discarded", (role) => {
    const p = open(role)
    p.abort("heartbeat timeout")
    expect(p.state).toBe("Closed")
    expect(p.closeInfo()).toEqual({ code: 1006, reason: "heartbeat timeout", wasClean: false, initiatedBy: "local" })
    expect(receive(p, text(role, "x"))).toEqual([])
    expect(p.dataToSend()).toEqual([])
  })
  twins("after a clean close it changes nothing", (role) => {
    const p = open(role)
    p.sendClose(1000)
    receive(p, closeFrom(role, 1000))
    p.abort("too late")
    expect(p.closeInfo()).toEqual({ code: 1000, reason: "", wasClean: true, initiatedBy: "local" })
  })
})

twins("closeExpected: true once our close frame is out (the I/O side starts its timer)", (role) => {
  const p = open(role)
  expect(p.closeExpected).toBe(false)
  receive(p, text(role, "x"), fromPeer(role, Opcode.Ping))
  expect(p.closeExpected).toBe(false)
  p.sendClose(1000)
  expect(p.closeExpected).toBe(true)
  const q = open(role)
  receive(q, closeFrom(role, 1000))
  expect(q.closeExpected).toBe(true)
})

describe("dataToSend and bufferedBytes", () => {
  twins("frames come out in the order they were queued: a pong between two messages", (role) => {
    const p = open(role)
    p.sendText(enc("first"))
    receive(p, fromPeer(role, Opcode.Ping, "p"))
    p.sendBinary(new Uint8Array([9]))
    p.sendPing(enc("mine"))
    p.sendPong(enc("beat"))
    p.sendClose(1000)
    expect(sent(p)).toEqual([msg("first"), pong("p"), bin(new Uint8Array([9])), ping("mine"), pong("beat"), close(1000)])
  })
  twins("bufferedBytes counts the queued bytes and drops to 0 when taken", (role) => {
    const p = open(role)
    expect(p.bufferedBytes).toBe(0)
    p.sendText(enc("hello"))
    receive(p, fromPeer(role, Opcode.Ping, "p"))
    const headers = role === "client" ? 6 : 2 // + 4 mask bytes per client frame
    expect(p.bufferedBytes).toBe(headers + 5 + headers + 1)
    const out = p.dataToSend()
    expect(out.reduce((n, b) => n + b.length, 0)).toBe(headers + 5 + headers + 1)
    expect(p.bufferedBytes).toBe(0)
    expect(p.dataToSend()).toEqual([])
  })
  twins("fragmentSize splits a long message into fragments (§5.4)", (role) => {
    const p = open(role, { fragmentSize: 4 })
    p.sendText(enc("0123456789"))
    const frames = p.dataToSend()
    expect(frames).toHaveLength(3)
    const decoder = FrameDecoder.make({ role: role === "server" ? "client" : "server" })
    expect(decoder.feed(concatBytes(frames)).events.map(plain)).toEqual([msg("0123456789")])
  })
})

describe("staged small frames (written into shared arenas; masked on the way in for a client)", () => {
  // Decoded as the peer of `role` decodes them: a server-role decoder rejects unmasked frames.
  const decodeAll = (frames: ReadonlyArray<Uint8Array>, role: Role = "server") => {
    const decoder = FrameDecoder.make({ role: role === "server" ? "client" : "server", maxMessageSize: 1 << 30 })
    const result = decoder.feed(concatBytes(frames))
    expect(result.error).toBeUndefined()
    return result.events.map(plain)
  }
  twins("one turn's small messages go out as one buffer", (role) => {
    const p = open(role)
    const payloads = Array.from({ length: 10 }, (_, i) => new Uint8Array([i, i, i]))
    for (const payload of payloads) p.sendBinary(payload)
    const out = p.dataToSend()
    expect(out).toHaveLength(1)
    expect(out[0]!.length).toBe(10 * (role === "client" ? 9 : 5))
    expect(decodeAll(out, role)).toEqual(payloads.map(bin))
    // A client masks a copy: the caller's bytes are untouched (RFC 6455 §5.3).
    expect(payloads.map((p) => Array.from(p))).toEqual(Array.from({ length: 10 }, (_, i) => [i, i, i]))
  })
  it("a view handed out is never overwritten by later frames of any connection", () => {
    const a = open("server")
    a.sendText(enc("kept as it was"))
    const held = a.dataToSend()
    const before = Array.from(concatBytes(held))
    // Enough traffic from other connections to fill and replace several arenas.
    const others = Array.from({ length: 5 }, () => open("server"))
    for (let i = 0; i < 2000; i++) others[i % 5]!.sendBinary(new Uint8Array(100).fill(i & 0xff))
    for (const o of others) o.dataToSend()
    expect(Array.from(concatBytes(held))).toEqual(before)
    expect(decodeAll(held)).toEqual([msg("kept as it was")])
  })
  it("payloads around the staging limit and the arena size keep their order with large ones", () => {
    const p = open("server")
    const sizes = [0, 1, 125, 126, 4095, 4096, 4097, 8000, 65535, 65536, 3, 4096, 4096, 4096]
    const payloads = sizes.map((n, i) => new Uint8Array(n).fill(i + 1))
    for (const payload of payloads) p.sendBinary(payload)
    p.sendPing(enc("ping"))
    p.sendText(enc("after"))
    expect(p.bufferedBytes).toBe(p.dataToSend().reduce((n, b) => n + b.length, 0))
    for (const payload of payloads) p.sendBinary(payload)
    p.sendPing(enc("ping"))
    p.sendText(enc("after"))
    expect(decodeAll(p.dataToSend())).toEqual([...payloads.map(bin), ping("ping"), msg("after")])
  })
  twins("property: connections sending in any interleaving each get exactly their own frames, in order", (role) => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            conn: fc.integer({ min: 0, max: 3 }),
            kind: fc.constantFrom("text", "binary", "ping", "take"),
            payload: fc.uint8Array({ maxLength: 5000 })
          }),
          { maxLength: 120 }
        ),
        (steps) => {
          const conns = Array.from({ length: 4 }, () => open(role))
          const expected: Array<Array<unknown>> = conns.map(() => [])
          const written: Array<Array<Uint8Array>> = conns.map(() => [])
          for (const step of steps) {
            const p = conns[step.conn]!
            if (step.kind === "take") written[step.conn]!.push(...p.dataToSend())
            else if (step.kind === "ping") {
              const payload = step.payload.subarray(0, 125)
              p.sendPing(payload)
              expected[step.conn]!.push({ _tag: "Ping", data: Array.from(payload) })
            } else if (step.kind === "binary") {
              p.sendBinary(step.payload)
              expected[step.conn]!.push(bin(step.payload))
            } else {
              const t = Array.from(step.payload, (b) => String.fromCharCode(0x61 + (b % 26))).join("")
              p.sendText(enc(t))
              expected[step.conn]!.push(msg(t))
            }
          }
          conns.forEach((p, i) => {
            written[i]!.push(...p.dataToSend())
            expect(decodeAll(written[i]!, role)).toEqual(expected[i])
          })
        }
      ),
      { numRuns: 200 }
    )
  })
})

describe("masking (RFC 6455 §5.3)", () => {
  twins("client frames are masked with a fresh key from the source; server frames never", (role) => {
    const p = new Protocol({ role, maskKey: countingKeys() }) // a server ignores the source
    p.sendText(enc("a"))
    receive(p, fromPeer(role, Opcode.Ping, "b"))
    p.sendClose(1000)
    const frames = p.dataToSend()
    expect(frames).toHaveLength(3)
    frames.forEach((frame, i) => {
      expect((frame[1]! & 0x80) !== 0).toBe(role === "client")
      if (role === "client") expect(Array.from(frame.subarray(2, 6))).toEqual([4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3])
    })
  })
  twins("a client without a key source is refused; a server needs none", (role) => {
    if (role === "client") expect(() => new Protocol({ role })).toThrow(TypeError)
    else expect(new Protocol({ role }).state).toBe("Open")
  })
  twins("sendFrame (a frame encoded once for many) is for servers only: client frames need their own key", (role) => {
    const p = open(role)
    const frame = FrameEncoder.encodeFrameConcat({ opcode: Opcode.Text }, enc("shared"))
    expect(p.sendFrame(frame)).toBe(role === "server")
    expect(p.dataToSend()).toEqual(role === "server" ? [frame] : [])
  })
})

// ---- property: any split of the input gives the same events and the same output ----

type Item =
  | { readonly kind: "text"; readonly payload: string; readonly fragment: number | undefined }
  | { readonly kind: "binary"; readonly payload: Uint8Array }
  | { readonly kind: "ping" | "pong"; readonly payload: Uint8Array }
  | { readonly kind: "close"; readonly code: number | undefined }
  | { readonly kind: "bad" }

const itemArb: fc.Arbitrary<Item> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("text" as const), payload: fc.string({ maxLength: 200 }), fragment: fc.option(fc.integer({ min: 1, max: 40 }), { nil: undefined }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("binary" as const), payload: fc.uint8Array({ maxLength: 300 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom("ping" as const, "pong" as const), payload: fc.uint8Array({ maxLength: 125 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("close" as const), code: fc.option(fc.constantFrom(1000, 1001, 4000), { nil: undefined }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "bad" as const }) }
)

/** The peer's bytes for the items. */
const peerBytes = (role: Role, items: ReadonlyArray<Item>) => {
  const parts: Array<Uint8Array> = []
  for (const item of items) {
    switch (item.kind) {
      case "text": {
        const payload = enc(item.payload)
        const size = item.fragment ?? Math.max(1, payload.length)
        let at = 0
        do {
          const end = Math.min(at + size, payload.length)
          parts.push(fromPeer(role, at === 0 ? Opcode.Text : Opcode.Continuation, payload.subarray(at, end), { fin: end === payload.length }))
          at = end
        } while (at < payload.length)
        break
      }
      case "binary":
        parts.push(fromPeer(role, Opcode.Binary, item.payload))
        break
      case "ping":
      case "pong":
        parts.push(fromPeer(role, item.kind === "ping" ? Opcode.Ping : Opcode.Pong, item.payload))
        break
      case "close":
        parts.push(closeFrom(role, item.code))
        break
      case "bad":
        parts.push(fromPeer(role, 0x3))
        break
    }
  }
  return concatBytes(parts)
}

/**
 * Feed the chunks, taking the output after each. Only the protocol's own
 * answers (pongs, the close) are sent: what an application sends in between
 * depends on when it sees the events, which is what the split changes.
 */
const run = (role: Role, chunks: ReadonlyArray<Uint8Array>, holdClose: boolean) => {
  const p = open(role, { holdClose })
  const events: Array<ReturnType<typeof plain>> = []
  const output: Array<Uint8Array> = []
  for (const chunk of chunks) {
    for (const e of p.receiveData(chunk.slice())) events.push(plain(e))
    // Compared as one byte string: the split changes when output is taken, not what it is.
    output.push(...p.dataToSend())
  }
  p.releaseClose()
  output.push(...p.dataToSend())
  return { events, output: Array.from(concatBytes(output)), state: p.state, info: p.closeInfo() }
}

describe("property: any split of the peer's bytes gives the same events and the same output", () => {
  twins("with and without holdClose", (role) => {
    fc.assert(
      fc.property(
        fc.array(itemArb, { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        fc.boolean(),
        (items, cuts, holdClose) => {
          const bytes = peerBytes(role, items)
          const whole = run(role, [bytes], holdClose)
          expect(run(role, splitAt(bytes, cuts), holdClose)).toEqual(whole)
          if (bytes.length < 600) expect(run(role, splitAt(bytes, Array.from(bytes, (_, i) => i)), holdClose)).toEqual(whole)
        }
      ),
      { numRuns: 150 }
    )
  })
})
