/**
 * The seed of the bounded fuzz slices in `npm test`: fixed by default, so CI
 * gives the same verdict every run (`npm run fuzz` explores fresh seeds);
 * `FUZZ_SEED=random` picks a fresh one here too, `FUZZ_SEED=<n>` replays one.
 */
export const fuzzSeed = (): number => {
  const env = process.env["FUZZ_SEED"]
  if (env === undefined) return 20261127
  return env === "random" ? Date.now() ^ (Math.random() * 0x7fffffff) : Number(env)
}
