#!/usr/bin/env bash
# `npm test` runs a real-browser test on Debian's Chromium (never a downloaded browser).
# On a fresh machine, install the package when we can (root with apt-get); otherwise say
# what is missing: the browser test then fails with the same message.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing: installing Debian's package for the browser test (apt-get install chromium)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
echo "warning: /usr/bin/chromium is missing and cannot be installed here; install Debian's chromium package for test/browser" >&2
exit 0
