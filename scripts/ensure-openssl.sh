#!/usr/bin/env bash
# The TLS tests make a throwaway certificate with `openssl` at test time. On a fresh machine,
# install Debian's package when we can (root with apt-get); otherwise say what is missing.
set -u
if command -v openssl >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "openssl is missing: installing Debian's package for the TLS tests (apt-get install openssl)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
  exit 0
fi
echo "warning: openssl is missing and cannot be installed here; install Debian's openssl package for the TLS tests" >&2
exit 0
