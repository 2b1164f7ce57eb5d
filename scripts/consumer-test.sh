#!/usr/bin/env bash
# The package as a user gets it: `npm pack` (which runs the build), install the tarball into a scratch app
# outside the repository with Effect from the registry at the peer range, then there
#   (a) a plain .mjs serves a route and echoes through Node's built-in WebSocket client,
#   (b) a strict tsc (exactOptionalPropertyTypes, noUncheckedIndexedAccess, no allowImportingTsExtensions,
#       skipLibCheck off) type-checks a .ts consumer against the shipped .d.ts,
#   (c) vitest runs a test that uses wsreactor/testing.
# Fixtures: scripts/consumer/. Usage: bash scripts/consumer-test.sh (from anywhere; needs `npm ci` done).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
node="$repo/node_modules/.bin/node" # Node 24, pinned by the repository (the system node may be older)
scratch="$(mktemp -d "${TMPDIR:-/tmp}/wsreactor-consumer.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# The dev tool versions the repository pins, and the peer range it declares for Effect.
version() { "$node" -p "const p = require('$repo/package.json'); p.$1[process.argv[1]]" "$2"; }
effect_range="$(version peerDependencies effect)"
platform_range="$(version peerDependencies @effect/platform-node)"

echo "== consumer: pack"
(cd "$repo" && npm pack --silent --pack-destination "$scratch" >/dev/null)
tarball="$(ls "$scratch"/wsreactor-*.tgz)"
# The tarball holds the build, the sources (for source maps), README and LICENSE; nothing else.
unexpected="$(tar -tzf "$tarball" | grep -Ev '^package/(dist/|src/|README\.md$|LICENSE$|package\.json$)' || true)"
if [ -n "$unexpected" ]; then
  echo "unexpected files in the tarball:"; echo "$unexpected"; exit 1
fi

echo "== consumer: install into $scratch/app (effect@$effect_range, @effect/platform-node@$platform_range)"
mkdir "$scratch/app"
cp "$repo"/scripts/consumer/* "$scratch/app/"
cd "$scratch/app"
# --prefer-offline: the npm cache CI just filled with `npm ci` serves the dev tools without a round trip.
npm install --no-audit --no-fund --prefer-offline --loglevel=error \
  "$tarball" \
  "effect@$effect_range" "@effect/platform-node@$platform_range" \
  "typescript@$(version devDependencies typescript)" \
  "vitest@$(version devDependencies vitest)" \
  "@effect/vitest@$(version devDependencies @effect/vitest)" \
  "@types/node@$(version devDependencies @types/node)"
# One copy of effect in the app: two break Schema checks across the boundary.
copies="$(find node_modules -path '*/effect/package.json' -not -path '*/node_modules/@effect/*/package.json' | wc -l)"
if [ "$copies" != "1" ]; then
  echo "expected one copy of effect, found $copies:"; find node_modules -path '*/effect/package.json'; exit 1
fi

echo "== consumer: (a) plain .mjs under Node $("$node" --version)"
"$node" echo.mjs

echo "== consumer: (b) strict tsc"
"$node" node_modules/typescript/bin/tsc -p tsconfig.json

echo "== consumer: (c) vitest with wsreactor/testing"
PATH="$(dirname "$node"):$PATH" "$node" node_modules/vitest/vitest.mjs run --root . consumer.test.ts

echo "== consumer: ok"
