/**
 * Client-side conformance: a raw node:net server that misbehaves on purpose
 * (its handshake answers and frames are written by hand), and the client must
 * refuse it the way RFC 6455 says: a typed HandshakeError before the
 * connection is open, the right close code after (§7.1.7, §7.4.1). The
 * server reads the client's frames with the project's own decoder (server
 * role: a client frame must be masked).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Net from "node:net"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import * as Client from "../../src/services/Client.ts"
import type * as Message from "../../src/services/Message.ts"

const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.timeout(self, "5 seconds")

interface Peer {
  readonly socket: Net.Socket
  /** Close frames the client sent, decoded. */
  readonly closes: Array<number | undefined>
  /** Data messages the client sent. */
  readonly texts: Array<string>
  /** Pong payloads the client sent. */
  readonly pongs: Array<string>
  /** Resolves when the client's TCP side ends. */
  readonly ended: Promise<void>
}

/**
 * A raw server: answers each upgrade with `headers(key)` (the full 101 head)
 * and then `onOpen(peer)`; the scope closes it.
 */
const rawServer = (
  onOpen: (peer: Peer) => void,
  headers: (key: string) => string = (key) => okHead(key)
) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly server: Net.Server; readonly sockets: Set<Net.Socket> }>(
      (resume) => {
        const sockets = new Set<Net.Socket>()
        const server = Net.createServer((socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          let head = ""
          const decoder = FrameDecoder.make({ role: "server", maxMessageSize: 1 << 20 })
          const peer: Peer = {
            socket,
            closes: [],
            texts: [],
            pongs: [],
            ended: new Promise((resolve) => socket.once("end", () => resolve()))
          }
          const onFrames = (chunk: Uint8Array) => {
            for (const event of decoder.feed(chunk).events) {
              if (event._tag === "Close") peer.closes.push(event.code)
              if (event._tag === "Message") peer.texts.push(Buffer.from(event.data).toString("utf8"))
              if (event._tag === "Pong") peer.pongs.push(Buffer.from(event.data).toString("utf8"))
            }
          }
          const onHead = (chunk: Buffer) => {
            head += chunk.toString("latin1")
            const end = head.indexOf("\r\n\r\n")
            if (end < 0) return
            socket.off("data", onHead)
            socket.on("data", onFrames)
            const key = /sec-websocket-key: *(\S+)/i.exec(head)![1]!
            socket.write(headers(key))
            onOpen(peer)
          }
          socket.on("data", onHead)
        })
        server.listen(0, "127.0.0.1", () =>
          resume(Effect.succeed({ port: (server.address() as Net.AddressInfo).port, server, sockets })))
      }
    ),
    ({ server, sockets }) =>
      Effect.sync(() => {
        for (const socket of sockets) socket.destroy()
        server.close()
      })
  )

const okHead = (key: string, extra = "") =>
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${
    Handshake.acceptKey(key)
  }\r\n${extra}\r\n`

/** An unmasked server frame, written by hand. */
const frame = (firstByte: number, payload: Uint8Array, masked = false): Buffer => {
  const mask = masked ? Buffer.from([1, 2, 3, 4]) : undefined
  const header = Buffer.from([firstByte, (masked ? 0x80 : 0) | payload.length])
  const body = Buffer.from(payload)
  if (mask !== undefined) for (let i = 0; i < body.length; i++) body[i]! ^= mask[i % 4]!
  return Buffer.concat(mask === undefined ? [header, body] : [header, mask, body])
}

const handshakeFailure = (headers: (key: string) => string, options: Client.ConnectOptions = {}) =>
  Effect.scoped(Effect.gen(function*() {
    const { port } = yield* rawServer(() => {}, headers)
    return yield* Effect.flip(Client.connect(`ws://127.0.0.1:${port}/`, options))
  }))

describe("client handshake conformance (RFC 6455 §4.1)", () => {
  it.live("a wrong Sec-WebSocket-Accept: BadAccept", () =>
    Effect.gen(function*() {
      const error = yield* handshakeFailure(() => okHead("dGhlIHNhbXBsZSBub25jZQ=="))
      expect(error).toMatchObject({ _tag: "HandshakeError", reason: "BadAccept", status: 101 })
    }))

  it.live("no Upgrade header: NotUpgrade; a 200: BadStatus", () =>
    Effect.gen(function*() {
      const noUpgrade = yield* handshakeFailure((key) =>
        `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${Handshake.acceptKey(key)}\r\n\r\n`
      )
      expect(noUpgrade).toMatchObject({ reason: "NotUpgrade" })
      const ok = yield* handshakeFailure(() => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
      expect(ok).toMatchObject({ reason: "BadStatus", status: 200 })
    }))

  it.live("an extension not offered, or deflate parameters not acceptable: UnexpectedExtension", () =>
    Effect.gen(function*() {
      const notOffered = yield* handshakeFailure((key) => okHead(key, "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
      expect(notOffered).toMatchObject({ reason: "UnexpectedExtension" })
      const unknown = yield* handshakeFailure(
        (key) => okHead(key, "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
        { perMessageDeflate: true }
      )
      expect(unknown).toMatchObject({ reason: "UnexpectedExtension" })
      const noValue = yield* handshakeFailure(
        (key) => okHead(key, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
        { perMessageDeflate: true }
      )
      expect(noValue).toMatchObject({ reason: "UnexpectedExtension" })
    }))

  it.live("a subprotocol not offered: UnexpectedProtocol", () =>
    Effect.gen(function*() {
      const chosen = yield* handshakeFailure((key) => okHead(key, "Sec-WebSocket-Protocol: other\r\n"), {
        protocols: ["chat"]
      })
      expect(chosen).toMatchObject({ reason: "UnexpectedProtocol" })
      const unasked = yield* handshakeFailure((key) => okHead(key, "Sec-WebSocket-Protocol: chat\r\n"))
      expect(unasked).toMatchObject({ reason: "UnexpectedProtocol" })
    }))

  it.live("the server closes before answering: Closed", () =>
    Effect.gen(function*() {
      const error = yield* Effect.scoped(Effect.gen(function*() {
        const { port } = yield* rawServer((peer) => peer.socket.end(), () => "")
        return yield* Effect.flip(Client.connect(`ws://127.0.0.1:${port}/`))
      }))
      expect(error).toMatchObject({ _tag: "HandshakeError", reason: "Closed" })
    }))
})

/** Connect to a raw server that sends `bytes` after the 101, and report how the client ended. */
const failsWith = (bytes: Uint8Array, options: Client.ConnectOptions = {}) =>
  Effect.scoped(Effect.gen(function*() {
    let peer: Peer | undefined
    const { port } = yield* rawServer((p) => {
      peer = p
      p.socket.write(bytes)
      // §7.1.1: the server closes TCP after the client's close frame.
      p.socket.on("data", () => {
        if (p.closes.length > 0) p.socket.end()
      })
    })
    const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`, options)
    const info = yield* bounded(conn.closed)
    const messages = yield* bounded(Stream.runCollect(conn.messages))
    return { info, closes: peer!.closes, messages }
  }))

describe("client protocol conformance: the server misbehaves after the 101", () => {
  it.live("a masked server frame: 1002 (§5.1)", () =>
    Effect.gen(function*() {
      const { info, closes } = yield* failsWith(frame(0x81, Buffer.from("hi"), true))
      expect(info).toMatchObject({ code: 1002, wasClean: false, initiatedBy: "local" })
      expect(closes).toEqual([1002])
    }))

  it.live("a fragmented ping: 1002 (§5.5)", () =>
    Effect.gen(function*() {
      const { info, closes } = yield* failsWith(frame(0x09, Buffer.from("p")))
      expect(info.code).toBe(1002)
      expect(closes).toEqual([1002])
    }))

  it.live("invalid UTF-8 in a text message: 1007 (§8.1); the messages before it are delivered", () =>
    Effect.gen(function*() {
      const { info, closes, messages } = yield* failsWith(
        Buffer.concat([frame(0x81, Buffer.from("fine")), frame(0x81, Buffer.from([0xc3, 0x28]))])
      )
      expect(info.code).toBe(1007)
      expect(closes).toEqual([1007])
      expect(messages.map((m) => (m as Message.TextMessage).text)).toEqual(["fine"])
    }))

  it.live("a close code not allowed on the wire (1005): 1002 (§7.4.1)", () =>
    Effect.gen(function*() {
      const { info, closes } = yield* failsWith(frame(0x88, Buffer.from([0x03, 0xed])))
      expect(info.code).toBe(1002)
      expect(closes).toEqual([1002])
    }))

  it.live("a frame over maxMessageSize: 1009 (§7.4.1)", () =>
    Effect.gen(function*() {
      const { info, closes } = yield* failsWith(frame(0x82, new Uint8Array(100)), { maxMessageSize: 50 })
      expect(info.code).toBe(1009)
      expect(closes).toEqual([1009])
    }))

  it.live("RSV1 without permessage-deflate: 1002 (§5.2)", () =>
    Effect.gen(function*() {
      const { info } = yield* failsWith(frame(0xc1, Buffer.from("x")))
      expect(info.code).toBe(1002)
    }))
})

describe("client closing handshake (§7.1.1)", () => {
  it.live("after echoing the server's close, the client waits for the server to close TCP", () =>
    Effect.scoped(Effect.gen(function*() {
      let serverEndedAt = 0
      const { port } = yield* rawServer((peer) => {
        peer.socket.write(FrameEncoder.encodeClose(1000, "done"))
        peer.socket.on("data", () => {
          if (peer.closes.length === 0) return
          // The client's echo arrived; it must not have closed TCP: we close it, a little later.
          setTimeout(() => {
            serverEndedAt = Date.now()
            peer.socket.end()
          }, 200)
        })
      })
      const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`)
      const info = yield* bounded(conn.closed)
      expect(info).toEqual({ code: 1000, reason: "done", wasClean: true, initiatedBy: "peer" })
      expect(serverEndedAt).toBeGreaterThan(0)
      expect(Date.now()).toBeGreaterThanOrEqual(serverEndedAt)
    })))

  it.live("a server that never answers our close is dropped after closeTimeoutMs (1006)", () =>
    Effect.scoped(Effect.gen(function*() {
      let peer: Peer | undefined
      const { port } = yield* rawServer((p) => (peer = p))
      const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`, { closeTimeoutMs: 200 })
      const started = Date.now()
      yield* conn.close(1000, "")
      const info = yield* bounded(conn.closed)
      expect(Date.now() - started).toBeGreaterThanOrEqual(150)
      expect(info).toMatchObject({ code: 1006, wasClean: false, initiatedBy: "local" })
      yield* bounded(Effect.promise(() => peer!.ended))
      expect(peer!.closes).toEqual([1000])
    })))

  it.live("every client frame is masked (the server-role decoder accepts them) and pings are answered", () =>
    Effect.scoped(Effect.gen(function*() {
      let peer: Peer | undefined
      const { port } = yield* rawServer((p) => {
        peer = p
        p.socket.write(frame(0x89, Buffer.from("ping!")))
      })
      const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`, { closeTimeoutMs: 100 })
      yield* conn.send("masked")
      yield* Effect.sleep("100 millis")
      expect(peer!.texts).toEqual(["masked"])
      expect(peer!.pongs).toEqual(["ping!"])
    })))

  it.live("a server that sends a close and drops TCP at once, right behind the 101: the close is still read", () =>
    Effect.scoped(Effect.gen(function*() {
      const { port } = yield* rawServer((peer) => {
        peer.socket.end(Buffer.concat([frame(0x81, Buffer.from("last words")), FrameEncoder.encodeClose(1001, "going")]))
      })
      const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`)
      const info = yield* bounded(conn.closed)
      expect(info).toMatchObject({ code: 1001, reason: "going", initiatedBy: "peer" })
      const messages = yield* bounded(Stream.runCollect(conn.messages))
      expect(messages.map((m) => (m as Message.TextMessage).text)).toEqual(["last words"])
    })))

  it.live("heartbeat: a server that answers no ping is dropped (1006)", () =>
    Effect.scoped(Effect.gen(function*() {
      // The raw server reads frames but never answers: no pong, nothing.
      const { port } = yield* rawServer(() => {})
      const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`, {
        heartbeatIntervalMs: 100,
        heartbeatTimeoutMs: 100,
        closeTimeoutMs: 100
      })
      const started = Date.now()
      const info = yield* bounded(conn.closed)
      expect(Date.now() - started).toBeGreaterThanOrEqual(150)
      expect(info).toMatchObject({ code: 1006, reason: "heartbeat timeout", wasClean: false })
    })))
})
