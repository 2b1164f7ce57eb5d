/**
 * Deadlines for many connections from a few fibers. Every connection has the
 * same handshake, close and linger timeouts, so deadlines of one duration
 * expire in the order they were set: a FIFO per duration, served by one fiber
 * sleeping on Effect's `Clock` (so `TestClock` drives it exactly), replaces a
 * timer fiber per connection and per wait.
 *
 * @example
 * const deadlines = yield* Deadlines.make
 * const deadline = deadlines.add(10_000, () => dropConnection())
 * // ... handshake done in time:
 * deadline.cancel()
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** A pending deadline; `cancel()` stops it (idempotent). */
export interface Deadline {
  readonly cancel: () => void
}

/** A deadline that never fires: the initial value of a slot. */
export const none: Deadline = { cancel: () => {} }

/**
 * An object that owns several deadlines: called with the `tag` it gave, so a
 * per-connection owner needs no closure per kind of deadline.
 */
export interface Expiring {
  readonly expire: (tag: number) => void
}

// The entry is its own cancel handle: no closure per deadline.
class Entry implements Deadline {
  readonly at: number
  onExpire: (() => void) | Expiring | undefined
  readonly tag: number
  constructor(at: number, onExpire: (() => void) | Expiring, tag: number) {
    this.at = at
    this.onExpire = onExpire
    this.tag = tag
  }
  cancel(): void {
    this.onExpire = undefined
  }
  fire(): void {
    const expire = this.onExpire
    this.onExpire = undefined
    if (typeof expire === "function") expire()
    else if (expire !== undefined) expire.expire(this.tag)
  }
}

interface Lane {
  entries: Array<Entry>
  head: number
  /** Wakes the lane's fiber when an entry arrives while it is idle. */
  wake: (() => void) | undefined
}

export interface Deadlines {
  /**
   * Call `onExpire` after `delayMs` (on the Clock) unless the returned function
   * is called first; an `Expiring` is called with `tag`.
   */
  readonly add: (delayMs: number, onExpire: (() => void) | Expiring, tag?: number) => Deadline
  /**
   * Call `onExpire` at the Clock time `atMs`, for deadlines that do not come in
   * the order they are set (an idle timeout moved by the last message). A heap,
   * so use `add` when every deadline of a kind has the same duration.
   */
  readonly addAt: (atMs: number, onExpire: (() => void) | Expiring, tag?: number) => Deadline
  /** Wait for `register`'s `done`, or at most `delayMs`, which completes with `timeout`. */
  readonly within: <A>(delayMs: number, register: (done: (a: A) => void) => (() => void) | void, timeout: A) => Effect.Effect<A>
}

/** Create the deadline lanes; their fibers live in the current scope. */
export const make: Effect.Effect<Deadlines, never, Scope.Scope> = Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const scope = yield* Effect.scope
  const context = yield* Effect.context<never>()
  const lanes = new Map<number, Lane>()

  const runLane = (lane: Lane): Effect.Effect<never> =>
    Effect.forever(Effect.gen(function*() {
      // Drop cancelled entries at the head; compact now and then.
      while (lane.head < lane.entries.length && lane.entries[lane.head]!.onExpire === undefined) lane.head++
      if (lane.head > 1024 && lane.head * 2 > lane.entries.length) {
        lane.entries = lane.entries.slice(lane.head)
        lane.head = 0
      }
      if (lane.head >= lane.entries.length) {
        lane.entries = []
        lane.head = 0
        yield* Effect.callback<void>((resume) => {
          lane.wake = () => resume(Effect.void)
          return Effect.sync(() => {
            lane.wake = undefined
          })
        })
        return
      }
      const entry = lane.entries[lane.head]!
      const wait = entry.at - clock.currentTimeMillisUnsafe()
      if (wait > 0) return yield* Effect.sleep(wait)
      lane.head++
      entry.fire()
    }))

  const laneFor = (delayMs: number): Lane => {
    let lane = lanes.get(delayMs)
    if (lane === undefined) {
      const created: Lane = { entries: [], head: 0, wake: undefined }
      lanes.set(delayMs, created)
      // The lane's fiber sees the same services (the Clock above all) and dies with the scope.
      Effect.runForkWith(context)(Effect.forkIn(runLane(created), scope))
      lane = created
    }
    return lane
  }

  const add = (delayMs: number, onExpire: (() => void) | Expiring, tag = 0): Deadline => {
    const lane = laneFor(delayMs)
    const entry = new Entry(clock.currentTimeMillisUnsafe() + delayMs, onExpire, tag)
    lane.entries.push(entry)
    if (lane.wake !== undefined) {
      const wake = lane.wake
      lane.wake = undefined
      wake()
    }
    return entry
  }

  // Exact-time deadlines: a binary min-heap on `at`, served by one fiber that sleeps until the
  // earliest entry and is woken when an earlier one arrives.
  const heap: Array<Entry> = []
  let heapWake: (() => void) | undefined
  let heapStarted = false
  const siftUp = (i: number) => {
    const entry = heap[i]!
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (heap[parent]!.at <= entry.at) break
      heap[i] = heap[parent]!
      i = parent
    }
    heap[i] = entry
  }
  const popTop = (): Entry => {
    const top = heap[0]!
    const last = heap.pop()!
    if (heap.length > 0) {
      let i = 0
      const n = heap.length
      while (true) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        const child = r < n && heap[r]!.at < heap[l]!.at ? r : l
        if (heap[child]!.at >= last.at) break
        heap[i] = heap[child]!
        i = child
      }
      heap[i] = last
    }
    return top
  }
  const awaitHeapWake = Effect.callback<void>((resume) => {
    heapWake = () => resume(Effect.void)
    return Effect.sync(() => {
      heapWake = undefined
    })
  })
  const runHeap: Effect.Effect<never> = Effect.forever(Effect.gen(function*() {
    while (heap.length > 0 && heap[0]!.onExpire === undefined) popTop()
    if (heap.length === 0) return yield* awaitHeapWake
    const wait = heap[0]!.at - clock.currentTimeMillisUnsafe()
    if (wait > 0) return yield* Effect.raceFirst(Effect.sleep(wait), awaitHeapWake)
    popTop().fire()
  }))
  const addAt = (atMs: number, onExpire: (() => void) | Expiring, tag = 0): Deadline => {
    if (!heapStarted) {
      heapStarted = true
      Effect.runForkWith(context)(Effect.forkIn(runHeap, scope))
    }
    const entry = new Entry(atMs, onExpire, tag)
    heap.push(entry)
    siftUp(heap.length - 1)
    if (heap[0] === entry && heapWake !== undefined) {
      const wake = heapWake
      heapWake = undefined
      wake()
    }
    return entry
  }

  const within = <A>(delayMs: number, register: (done: (a: A) => void) => (() => void) | void, timeout: A) =>
    Effect.callback<A>((resume) => {
      let finished = false
      let unregister: (() => void) | void = undefined
      const deadline = add(delayMs, () => {
        if (finished) return
        finished = true
        if (unregister) unregister()
        resume(Effect.succeed(timeout))
      })
      unregister = register((a) => {
        if (finished) return
        finished = true
        deadline.cancel()
        resume(Effect.succeed(a))
      })
      return Effect.sync(() => {
        finished = true
        deadline.cancel()
        if (unregister) unregister()
      })
    })

  return { add, addAt, within }
})
