import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NetAddress from "effect/net/NetAddress"
import type * as SocketServer from "effect/socket/SocketServer"
import type * as Net from "node:net"
import type * as Tls from "node:tls"
import { type Incoming, Transport } from "../services/Transport.ts"

/** Where to listen. `port: 0` picks a free port (see `Transport.address`). */
export interface ListenOptions {
  readonly port: number
  readonly host?: string | undefined
  /** Kernel accept queue length (listen(2) backlog). */
  readonly backlog?: number | undefined
}

/** The reactor's view of a Node socket (see `Incoming`). */
export const fromNetSocket = (conn: Net.Socket): Incoming => {
  let ended = false
  return {
    // Getters: each is a getpeername(2) call, only paid when someone asks.
    get remoteAddress() {
      return conn.remoteAddress
    },
    get remotePort() {
      return conn.remotePort
    },
    listen: (onData, onEnd) => {
      const end = () => {
        if (ended) return
        ended = true
        onEnd()
      }
      conn.on("data", onData)
      conn.on("end", end)
      conn.on("error", end)
      conn.on("close", end)
      conn.resume()
    },
    pause: () => conn.pause(),
    resume: () => conn.resume(),
    write: (chunks) => {
      if (conn.destroyed || conn.writableEnded) return true
      if (chunks.length === 1) return conn.write(chunks[0]!)
      // One writev for the batch.
      conn.cork()
      for (let i = 0; i < chunks.length; i++) conn.write(chunks[i]!)
      conn.uncork()
      return !conn.writableNeedDrain
    },
    onDrain: (callback) => {
      if (conn.destroyed || !conn.writableNeedDrain) return void queueMicrotask(callback)
      const done = () => {
        conn.off("drain", done)
        conn.off("close", done)
        callback()
      }
      conn.on("drain", done)
      conn.on("close", done)
    },
    end: () => {
      if (!conn.destroyed) conn.end()
    },
    destroy: () => {
      conn.destroy()
    }
  }
}

const fromSocketServer = (server: SocketServer.SocketServer["Service"], requested: ListenOptions) =>
  Transport.of({
    address: server.address._tag === "UnixPathAddress"
      ? { host: requested.host ?? "0.0.0.0", port: requested.port }
      : { host: NetAddress.formatIp(server.address.address), port: server.address.port },
    // NodeSocketServer accepts, tracks and interrupts the connection fibers; the reactor drives
    // the Node socket itself (the Effect `Socket` is never acquired, so it adds nothing per chunk).
    run: (handler) =>
      server.run(() =>
        Effect.flatMap(Effect.serviceOption(NodeSocket.NetSocket), (net) =>
          net._tag === "Some"
            ? handler(fromNetSocket(net.value))
            : Effect.die(new Error("NodeSocketServer did not provide the net.Socket")))
      ).pipe(Effect.orDie)
  })

/**
 * Plain TCP on `@effect/platform-node`'s `NodeSocketServer`.
 *
 * @example
 * const TransportLive = NodeTcp.layer({ port: 8888, host: "0.0.0.0" })
 */
export const layer = (options: ListenOptions): Layer.Layer<Transport, SocketServer.SocketServerError> =>
  Layer.effect(
    Transport,
    Effect.map(
      // noDelay: Nagle would hold small frames back by up to 40 ms; every WebSocket server disables it.
      NodeSocketServer.make({ port: options.port, host: options.host, backlog: options.backlog ?? 511, noDelay: true }),
      (server) => fromSocketServer(server, options)
    )
  )

/**
 * TLS (wss://) on `NodeSocketServer.makeTls`: connections reach the reactor
 * after the TLS handshake.
 *
 * @example
 * const TransportLive = NodeTcp.layerTls({ port: 8443, key, cert })
 */
export const layerTls = (
  options: ListenOptions & Tls.TlsOptions
): Layer.Layer<Transport, SocketServer.SocketServerError> =>
  Layer.effect(
    Transport,
    Effect.map(
      NodeSocketServer.makeTls({ ...options, backlog: options.backlog ?? 511, noDelay: true }),
      (server) => fromSocketServer(server, options)
    )
  )
