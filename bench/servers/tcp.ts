/** Peer "tcp": a plain TCP echo, no WebSocket framing at all: the ceiling. */
import * as net from "node:net"
import { exitWithParent, portArg } from "./lifeline.ts"

exitWithParent()
const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => {})
  socket.pipe(socket)
})
server.listen(portArg(), "127.0.0.1", () => {
  const address = server.address() as net.AddressInfo
  console.log(`READY ${address.port}`)
})
