#!/usr/bin/env bash
# The client interop tests (test/interop/client-peers.test.ts) start python's `websockets`
# server (Debian's python3-websockets). On a fresh machine, install Debian's package when we
# can (root with apt-get); otherwise say what is missing: those tests then fail saying so.
set -u
# Debian's interpreter (/usr/bin/python3), not whatever python3 comes first on PATH (pyenv...).
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import websockets" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "python3-websockets is missing: installing Debian's package for the client interop tests (apt-get install python3-websockets)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-websockets >/dev/null
  exit 0
fi
echo "warning: python3-websockets is missing and cannot be installed here; install Debian's python3-websockets package for test/interop/client-peers.test.ts" >&2
exit 0
