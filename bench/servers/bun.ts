/**
 * Peer "bun": Bun's built-in server (uWebSockets inside), the speed anchor.
 * Run with the bun binary, not node. Echo on any path; /fanout subscribes to
 * one topic, /fanout?pub=1 publishes with server.publish.
 */

// Minimal typing of the Bun API used here (no bun-types in the project).
interface BunSocket {
  readonly data: { readonly pub: boolean; readonly fanout: boolean }
  send(message: string | Uint8Array): number
  subscribe(topic: string): void
}
interface BunServer {
  readonly port: number
  upgrade(req: Request, options: { data: BunSocket["data"] }): boolean
  publish(topic: string, message: string | Uint8Array): number
}
declare const Bun: {
  serve(options: {
    hostname: string
    port: number
    fetch(req: Request, server: BunServer): Response | undefined
    websocket: {
      maxPayloadLength: number
      backpressureLimit: number
      perMessageDeflate: boolean
      open(ws: BunSocket): void
      message(ws: BunSocket, message: string | Uint8Array): void
    }
  }): BunServer
}

const portIndex = process.argv.indexOf("--port")
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: portIndex > 0 ? Number(process.argv[portIndex + 1]) : 0,
  fetch(req, srv) {
    const url = new URL(req.url)
    const fanout = url.pathname === "/fanout"
    if (srv.upgrade(req, { data: { fanout, pub: fanout && url.searchParams.get("pub") === "1" } })) return undefined
    return new Response("upgrade required", { status: 426 })
  },
  websocket: {
    maxPayloadLength: 64 << 20,
    backpressureLimit: 64 << 20,
    perMessageDeflate: false,
    open(ws) {
      if (ws.data.fanout && !ws.data.pub) ws.subscribe("t")
    },
    message(ws, message) {
      if (ws.data.pub) server.publish("t", message)
      else ws.send(message)
    }
  }
})
console.log(`READY ${server.port}`)
// Lifeline: exit when the orchestrator's stdin closes.
process.stdin.on("end", () => process.exit(0))
process.stdin.resume()
