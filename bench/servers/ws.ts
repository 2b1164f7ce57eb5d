/**
 * Peer "ws": the npm ws server in its fastest setup (bufferutil and
 * utf-8-validate are installed, ws loads them by itself; no compression).
 * Echo on any path; /fanout subscribes, /fanout?pub=1 publishes to all subscribers.
 */
import { WebSocketServer, type WebSocket } from "ws"
import { exitWithParent, portArg } from "./lifeline.ts"

exitWithParent()
const subscribers = new Set<WebSocket>()
const server = new WebSocketServer({ host: "127.0.0.1", port: portArg(), perMessageDeflate: false, maxPayload: 64 << 20 })

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
server.on("listening", () => {
  const address = server.address()
  console.log(`READY ${typeof address === "object" && address !== null ? address.port : address}`)
})
