#!/usr/bin/env bash
# `npm test` starts its own redis-server (a free loopback port, no persistence) for the
# Redis broker and scale-out tests. On a fresh machine, install Debian's package when we
# can (root with apt-get); otherwise say what is missing: those tests then fail saying so.
set -u
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is missing: installing Debian's package for the Redis tests (apt-get install redis-server)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system service on 6379; the tests never use it.
  exit 0
fi
echo "warning: redis-server is missing and cannot be installed here; install Debian's redis-server package for test/layers/Redis.test.ts" >&2
exit 0
