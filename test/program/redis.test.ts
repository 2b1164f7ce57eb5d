// Two real programs (`node src/main.ts --redis URL`) on one redis-server behave as one chat;
// Redis restarting never drops their clients, and the chat resumes.
import { afterEach, describe, expect, it } from "@effect/vitest"
import { cleanup, get, openClient, startProgram } from "../support/Program.ts"
import { type RedisServer, startRedis } from "../support/RedisServer.ts"

let redis: RedisServer | undefined
afterEach(async () => {
  cleanup()
  await redis?.stop()
  redis = undefined
})

const args = ["--port", "0", "--host", "127.0.0.1"]
const say = (text: string) => JSON.stringify({ type: "message", text })
const join = (name: string) => JSON.stringify({ type: "join", name })

const brokerState = async (port: number) => {
  const health = await get(port, "/healthz")
  return (JSON.parse(health.body) as { broker?: { state?: string } }).broker?.state
}

const waitReady = async (port: number) => {
  const deadline = Date.now() + 10_000
  while ((await brokerState(port)) !== "ready") {
    if (Date.now() > deadline) throw new Error(`broker of :${port} not ready`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe("node src/main.ts --redis", () => {
  it("two processes on one Redis are one chat (messages and presence); /healthz and /metrics report the broker; a Redis restart drops no client", async () => {
    redis = await startRedis()
    const a = await startProgram([...args, "--redis", redis.url])
    // The environment variable works as well as the flag.
    const b = await startProgram(args, { env: { REDIS_URL: redis.url } })
    await Promise.all([waitReady(a.port), waitReady(b.port)])

    const ada = await openClient(a.port, "/chat/room1")
    const bob = await openClient(b.port, "/chat/room1")
    ada.ws.send(join("Ada"))
    await ada.waitFor("Ada joined", (m) => m.type === "joined" && m.name === "Ada")
    // Names are unique across the processes: "ada" is taken on A.
    bob.ws.send(join("ada"))
    await bob.waitFor("the name taken", (m) => m.type === "error" && /taken/.test(m.message))
    bob.ws.send(join("Bob"))
    // Bob sees the members of both processes; his join reaches Ada on A through Redis, as a delta.
    const bobsList = await bob.waitFor("Bob joined", (m) => m.type === "joined" && m.name === "Bob")
    expect(bobsList).toMatchObject({ members: ["Ada", "Bob"] })
    const bobJoined = await ada.waitFor("Bob's join on A", (m) => m.type === "joined" && m.name === "Bob")
    expect(bobJoined).not.toHaveProperty("members")
    bob.ws.send(say("hello from B"))
    ada.ws.send(say("hello from A"))
    await ada.waitFor("B's message on A", (m) => m.type === "message" && m.text === "hello from B")
    await bob.waitFor("A's message on B", (m) => m.type === "message" && m.text === "hello from A")
    // Once each: no echo through Redis.
    expect(ada.received.filter((m: any) => m.text === "hello from A")).toHaveLength(1)
    expect(bob.received.filter((m: any) => m.text === "hello from B")).toHaveLength(1)

    const metrics = await get(a.port, "/metrics")
    expect(metrics.body).toMatch(/^wsreactor_broker_up 1$/m)
    expect(metrics.body).toMatch(/^wsreactor_broker_topics 1$/m)
    expect(metrics.body).toMatch(/^wsreactor_broker_received_total [1-9]/m)

    await redis.kill()
    await a.waitForStdout(/Redis connection lost/)
    expect(await brokerState(a.port)).not.toBe("ready")
    // Local delivery keeps working while Redis is down; the health check still answers 200.
    expect((await get(a.port, "/healthz")).status).toBe(200)
    ada.ws.send(say("A alone"))
    await ada.waitFor("A's own message while Redis is down", (m) => m.text === "A alone")

    await redis.restart()
    await Promise.all([waitReady(a.port), waitReady(b.port)])
    bob.ws.send(say("B is back"))
    await ada.waitFor("B's message after the restart", (m) => m.text === "B is back")
    expect(ada.ws.readyState).toBe(ada.ws.OPEN)
    expect(bob.ws.readyState).toBe(bob.ws.OPEN)
  }, 40_000)
})
