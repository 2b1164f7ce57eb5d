/**
 * Echo server on Bun's built-in WebSocket server (`Bun.serve`), for the client
 * interop tests; run with node_modules/.bin/bun. Prints the port on stdout
 * once listening. `--deflate` turns on permessage-deflate (RFC 7692). A text
 * message "close-me" makes the server close with 4001 "as asked".
 */

// Minimal typing of the Bun API used here (no bun-types in the project).
interface BunSocket {
  send(message: string | Uint8Array, compress?: boolean): number
  close(code?: number, reason?: string): void
}
interface BunServer {
  readonly port: number
  upgrade(req: Request): boolean
}
declare const Bun: {
  serve(options: {
    hostname: string
    port: number
    fetch(req: Request, server: BunServer): Response | undefined
    websocket: {
      maxPayloadLength: number
      perMessageDeflate: boolean
      message(ws: BunSocket, message: string | Uint8Array): void
    }
  }): BunServer
}

const deflate = process.argv.includes("--deflate")
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(req, srv) {
    if (srv.upgrade(req)) return undefined
    return new Response("upgrade required", { status: 426 })
  },
  websocket: {
    maxPayloadLength: 64 << 20,
    perMessageDeflate: deflate,
    message(ws, message) {
      if (message === "close-me") ws.close(4001, "as asked")
      else ws.send(message, deflate)
    }
  }
})
console.log(server.port)
