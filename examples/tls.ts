import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { Broker, NodeTcp, Server } from "wsreactor"
import { app } from "./chat.ts"

// wss:// on port 8443: node:tls does the TLS handshake, then the same server runs on the decrypted stream.
const TlsTransport = NodeTcp.layerTls({
  port: Number(process.env["PORT"] ?? 8443),
  key: readFileSync(process.env["TLS_KEY"] ?? "key.pem"),
  cert: readFileSync(process.env["TLS_CERT"] ?? "cert.pem")
})

app.pipe(
  Effect.flatMap((app) => Server.serve(app)),
  Effect.provide([Broker.layerMemory, TlsTransport]),
  NodeRuntime.runMain({ teardown: Server.teardown })
)
