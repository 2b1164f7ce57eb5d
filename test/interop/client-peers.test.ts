/**
 * Interop: wsreactor's client against servers no one here wrote, each started
 * as a child process: Bun's built-in server (`Bun.serve`, uWebSockets inside,
 * test/support/bun-echo.ts) and python's `websockets` (Debian's
 * python3-websockets, test/support/python_echo.py; scripts/ensure-python-websockets.sh
 * installs it), each with and without permessage-deflate (RFC 7692).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as Client from "../../src/services/Client.ts"
import type * as Message from "../../src/services/Message.ts"

const root = fileURLToPath(new URL("../../", import.meta.url))
const bun = `${root}node_modules/.bin/bun`
const python = "/usr/bin/python3"

const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.timeout(self, "10 seconds")

/** Start `command` (an echo server that prints its port), for the scope; killed at the end. */
const peer = (command: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly kill: () => void }, Error>((resume) => {
      const child = spawn(command, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let err = ""
      const kill = () => void child.kill("SIGKILL")
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        out += chunk
        const line = out.split("\n")[0]!
        if (out.includes("\n")) resume(Effect.succeed({ port: Number(line.trim()), kill }))
      })
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => (err += chunk))
      child.once("error", (e) => resume(Effect.fail(e)))
      child.once("exit", (code) => resume(Effect.fail(new Error(`${command} exited (${code}) before listening: ${err}`))))
      return Effect.sync(kill)
    }).pipe(Effect.timeout("15 seconds")),
    (server) => Effect.sync(() => server.kill())
  )

const exchange = (conn: Client.ClientConnection) =>
  Effect.gen(function*() {
    // Every length class of RFC 6455 §5.2 (7-bit, 16-bit, 64-bit), text and binary, UTF-8 beyond ASCII.
    const sizes = [0, 1, 125, 126, 65535, 65536, 300_000]
    const outgoing: Array<string | Uint8Array> = sizes.map((n, i) =>
      i % 2 === 0 ? "aé€😀".repeat(n).slice(0, n) : new Uint8Array(n).map((_, j) => (j * 31 + i) & 0xff)
    )
    for (const m of outgoing) yield* conn.send(m)
    const got = yield* bounded(conn.messages.pipe(Stream.take(outgoing.length), Stream.runCollect))
    expect(got.map((m) => m._tag)).toEqual(outgoing.map((m) => (typeof m === "string" ? "Text" : "Binary")))
    got.forEach((m, i) => {
      const sent = outgoing[i]!
      if (typeof sent === "string") expect((m as Message.TextMessage).text).toBe(sent)
      else expect(Buffer.from(m.data).equals(Buffer.from(sent))).toBe(true)
    })
  })

const peers: ReadonlyArray<{ readonly name: string; readonly start: (deflate: boolean) => ReturnType<typeof peer>; readonly available: boolean }> = [
  {
    name: "Bun.serve",
    start: (deflate) => peer(bun, ["test/support/bun-echo.ts", ...(deflate ? ["--deflate"] : [])]),
    available: existsSync(bun)
  },
  {
    name: "python websockets",
    start: (deflate) => peer(python, ["test/support/python_echo.py", ...(deflate ? ["--deflate"] : [])]),
    available: existsSync(python)
  }
]

for (const server of peers) {
  describe(`Client against ${server.name}`, () => {
    for (const deflate of [false, true]) {
      it.live(`echo of every length class${deflate ? ", permessage-deflate" : ""}; clean close both ways`, () =>
        Effect.scoped(Effect.gen(function*() {
          if (!server.available) return yield* Effect.die(new Error(`${server.name} is not installed (see scripts/ensure-python-websockets.sh)`))
          const { port } = yield* server.start(deflate)
          const url = `ws://127.0.0.1:${port}/`
          const conn = yield* Client.connect(url, { perMessageDeflate: deflate })
          if (deflate) expect(conn.extensions).toMatch(/^permessage-deflate/)
          else expect(conn.extensions).toBeUndefined()
          yield* exchange(conn)
          // We close: the server echoes our code (RFC 6455 §5.5.1) and closes TCP first (§7.1.1).
          yield* conn.close(1000, "bye")
          expect(yield* bounded(conn.closed)).toEqual({ code: 1000, reason: "bye", wasClean: true, initiatedBy: "local" })
          // The server closes: we echo it.
          const second = yield* Client.connect(url, { perMessageDeflate: deflate })
          yield* second.send("close-me")
          expect(yield* bounded(second.closed)).toMatchObject({ code: 4001, reason: "as asked", wasClean: true, initiatedBy: "peer" })
        })), 30_000)
    }
  })
}
