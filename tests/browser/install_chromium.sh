#!/bin/sh
# Install Debian's chromium for the browser tests (idempotent; needs root and the apt repositories).
set -e
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
apt-get update -qq
apt-get install -y -qq chromium
