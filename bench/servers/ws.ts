/**
 * Peer "ws": the npm ws server in its fastest setup (bufferutil and
 * utf-8-validate are installed, ws loads them by itself; no compression).
 * Echo on any path; /fanout subscribes, /fanout?pub=1 publishes to all subscribers.
 * `--tls`: over node:https (wss://) with the test certificate.
 */
import { readFileSync } from "node:fs"
import * as Https from "node:https"
import { WebSocketServer, type WebSocket } from "ws"
import { exitWithParent, portArg } from "./lifeline.ts"

exitWithParent()
const subscribers = new Set<WebSocket>()
// `--tls`: over node:https with the test certificate (for 127.0.0.1 and localhost), for the client scenario's wss:// cases.
const tlsDir = new URL("../../test/support/tls/", import.meta.url)
const https = process.argv.includes("--tls")
  ? Https.createServer({ key: readFileSync(new URL("key.pem", tlsDir)), cert: readFileSync(new URL("cert.pem", tlsDir)) })
  : undefined
const server = new WebSocketServer({
  ...(https === undefined ? { host: "127.0.0.1", port: portArg() } : { server: https }),
  perMessageDeflate: false,
  maxPayload: 64 << 20
})

server.on("connection", (ws, req) => {
  ws.on("error", () => {})
  const url = req.url ?? "/"
  if (url.startsWith("/fanout")) {
    if (url.includes("pub=1")) {
      ws.on("message", (data, isBinary) => {
        for (const s of subscribers) s.send(data, { binary: isBinary })
      })
    } else {
      subscribers.add(ws)
      ws.on("close", () => subscribers.delete(ws))
    }
    return
  }
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }))
})
const ready = (address: ReturnType<typeof server.address>) =>
  console.log(`READY ${typeof address === "object" && address !== null ? address.port : address}`)
if (https === undefined) server.on("listening", () => ready(server.address()))
else https.listen(portArg(), "127.0.0.1", () => ready(https.address()))
