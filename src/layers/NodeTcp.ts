import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NetAddress from "effect/net/NetAddress"
import * as SocketServer from "effect/socket/SocketServer"
import type * as Tls from "node:tls"
import { Transport } from "../services/Transport.ts"

/** Where to listen. `port: 0` picks a free port (see `Transport.address`). */
export interface ListenOptions {
  readonly port: number
  readonly host?: string | undefined
  /** Kernel accept queue length (listen(2) backlog). */
  readonly backlog?: number | undefined
}

const fromSocketServer = (server: SocketServer.SocketServer["Service"], requested: ListenOptions) =>
  Transport.of({
    address: server.address._tag === "UnixPathAddress"
      ? { host: requested.host ?? "0.0.0.0", port: requested.port }
      : { host: NetAddress.formatIp(server.address.address), port: server.address.port },
    run: (handler) =>
      server.run((socket) =>
        Effect.flatMap(Effect.serviceOption(NodeSocket.NetSocket), (net) => {
          const conn = net._tag === "Some" ? net.value : undefined
          // Nagle would delay small frames by up to 40 ms (RFC 6455 says nothing; every
          // WebSocket server disables it).
          conn?.setNoDelay(true)
          return handler({ socket, remoteAddress: conn?.remoteAddress, remotePort: conn?.remotePort })
        })
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
      NodeSocketServer.make({ port: options.port, host: options.host, backlog: options.backlog ?? 511 }),
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
      NodeSocketServer.makeTls({ ...options, backlog: options.backlog ?? 511 }),
      (server) => fromSocketServer(server, options)
    )
  )
