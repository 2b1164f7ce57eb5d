// Reference echo server on the `ws` package (which passes Autobahn). The conformance suite runs
// against it with CONFORMANCE_TARGET=ws, to check that the suite itself is right; by default it
// runs against wsreactor (test/support/EchoServer.ts).
import type { AddressInfo } from "node:net"
import { WebSocketServer } from "ws"

/** wsreactor's message size limit: 16 MiB of payload. */
const MAX_PAYLOAD = 16 * 1024 * 1024

/**
 * Where the reference (ws) knowingly differs from what wsreactor must do; the
 * conformance suite relaxes those expectations only when this export exists.
 * - utf8FailFast: ws validates UTF-8 only once a text message is complete.
 * - acceptsVersion8: ws still accepts Sec-WebSocket-Version: 8 (hybi drafts).
 * - requiresHost: ws (via node:http upgrades) accepts a request without Host.
 */
export const referenceQuirks = { utf8FailFast: false, acceptsVersion8: true, requiresHost: false } as const

/**
 * Starts an echo server on 127.0.0.1 with an ephemeral port.
 *
 * @example
 * const server = await startEchoServer()
 * // ... connect to server.port ...
 * await server.close()
 */
export const startEchoServer = (): Promise<{ readonly port: number; readonly close: () => Promise<void> }> =>
  new Promise((resolve, reject) => {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: MAX_PAYLOAD })
    wss.on("connection", (ws) => {
      // Protocol errors surface here after ws has sent its close frame.
      ws.on("error", () => {})
      ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }))
    })
    wss.once("error", reject)
    wss.once("listening", () => {
      const port = (wss.address() as AddressInfo).port
      const close = (): Promise<void> =>
        new Promise((done) => {
          for (const client of wss.clients) client.terminate()
          wss.close(() => done())
        })
      resolve({ port, close })
    })
  })
