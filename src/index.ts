/**
 * wsreactor: a WebSocket server (RFC 6455) for Effect 4.
 *
 * @example
 * import { Effect, Stream } from "effect"
 * import { NodeRuntime } from "@effect/platform-node"
 * import { NodeTcp, Server } from "wsreactor"
 *
 * const app: Server.App<never> = {
 *   http: () => Effect.succeed({ status: 404 }),
 *   upgrade: () => Effect.succeed({
 *     _tag: "Accept",
 *     handler: (conn) => conn.messages.pipe(Stream.runForEach((m) => conn.send(m)))
 *   })
 * }
 * Server.serve(app).pipe(Effect.provide(NodeTcp.layer({ port: 8888 })), NodeRuntime.runMain)
 */
export * as CloseCode from "./domain/CloseCode.ts"
export * as Extensions from "./domain/Extensions.ts"
export * as FrameDecoder from "./domain/FrameDecoder.ts"
export * as FrameEncoder from "./domain/FrameEncoder.ts"
export * as Handshake from "./domain/Handshake.ts"
export * as Opcode from "./domain/Opcode.ts"
export * as Protocol from "./domain/Protocol.ts"
export * as ProtocolError from "./domain/ProtocolError.ts"
export * as Utf8 from "./domain/Utf8.ts"
export * as PerMessageDeflate from "./domain/PerMessageDeflate.ts"
export * as EffectSocket from "./layers/EffectSocket.ts"
export * as SocketAdapter from "./layers/SocketAdapter.ts"
export * as Memory from "./layers/Memory.ts"
export * as IpcBroker from "./layers/Ipc.ts"
export * as NodeHttp from "./layers/NodeHttp.ts"
export * as NodeTcp from "./layers/NodeTcp.ts"
export * as RedisBroker from "./layers/Redis.ts"
export * as RedisPresence from "./layers/RedisPresence.ts"
export * as App from "./services/App.ts"
export * as Broker from "./services/Broker.ts"
export * as Client from "./services/Client.ts"
export * as Compression from "./services/Compression.ts"
export * as Connection from "./services/Connection.ts"
export * as Message from "./services/Message.ts"
export * as Metrics from "./services/Metrics.ts"
export * as Middleware from "./services/Middleware.ts"
export * as Options from "./services/Options.ts"
export * as Presence from "./services/Presence.ts"
export * as ProtocolStream from "./services/ProtocolStream.ts"
export * as Reactor from "./services/Reactor.ts"
export * as Router from "./services/Router.ts"
export * as Server from "./services/Server.ts"
export * as Transport from "./services/Transport.ts"
export * as Typed from "./services/Typed.ts"
