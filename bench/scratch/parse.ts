// Scratch: the request parser alone.
import * as Handshake from "../../src/domain/Handshake.ts"
const req = new TextEncoder().encode("GET /echo HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: bench\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
const N = 200000
for (let round = 0; round < 3; round++) {
  const t0 = performance.now()
  for (let i = 0; i < N; i++) {
    const r = Handshake.stepRequest(Handshake.initialRequestParser(), req)
    if (r._tag !== "Request") throw new Error("bad")
    const v = Handshake.validateUpgrade(r.request)
    if (v._tag === "Error") throw new Error("invalid")
  }
  console.log(((performance.now() - t0) * 1000 / N).toFixed(2), "µs per parse+validate")
}
