/**
 * Bound a wait in an integration test, so a missing reply fails fast with what was awaited.
 *
 * @example
 * await withTimeout("open", opened, 5_000)
 */
export const withTimeout = <A>(what: string, promise: Promise<A>, ms: number): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
