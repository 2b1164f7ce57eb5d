/**
 * Byte helpers shared by the parser tests.
 *
 * @example
 * concatBytes([a, b]) // a then b, one buffer
 * splitAt(bytes, [3, 7]) // bytes[0,3), bytes[3,7), bytes[7,end)
 */
export const concatBytes = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** Cut `bytes` at the given points (taken modulo length + 1, deduplicated): copies, in order. */
export const splitAt = (bytes: Uint8Array, points: ReadonlyArray<number>): Array<Uint8Array> => {
  const cuts = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const c of [...cuts, bytes.length]) {
    out.push(bytes.slice(from, c))
    from = c
  }
  return out
}
