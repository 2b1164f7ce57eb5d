/**
 * Scratch: the client's per-message send cost without sockets. A client-role
 * `Protocol` encodes (masks) N messages of SIZE bytes, the way a client's
 * `send` does, then hands them out as `dataToSend` would to the Outbox.
 * Usage: node bench/scratch/client-send.ts [size=32] [messages=2000000]
 */
import { randomFillSync } from "node:crypto"
import { Protocol } from "../../src/domain/Protocol.ts"

const size = Number(process.argv[2] ?? 32)
const n = Number(process.argv[3] ?? 2_000_000)
// As Client.ts draws them: 4 bytes at a time from a random pool, into one reused key.
const pool = new Uint8Array(4096)
let at = 4096
const key = new Uint8Array(4)
const maskKey = (): Uint8Array => {
  if (at === 4096) {
    randomFillSync(pool)
    at = 0
  }
  key[0] = pool[at]!
  key[1] = pool[at + 1]!
  key[2] = pool[at + 2]!
  key[3] = pool[at + 3]!
  at += 4
  return key
}
const protocol = new Protocol({ role: "client", maxMessageSize: 1 << 26, compression: false, fragmentSize: 1 << 20, maskKey })
const payload = new Uint8Array(size).fill(7)
let bytes = 0
for (let round = 0; round < 3; round++) {
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    protocol.sendBinary(payload)
    if ((i & 15) === 15) bytes += protocol.dataToSend().length
  }
  const ns = ((performance.now() - t0) * 1e6) / n
  console.log(`${size} B: ${ns.toFixed(1)} ns/message`)
}
if (bytes < 0) console.log(bytes)
