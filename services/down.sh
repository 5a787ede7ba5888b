#!/usr/bin/env bash
# Stop the servers started by services/up.sh (SIGTERM, then SIGKILL after a grace period).
# Usage: services/down.sh [kafka] [cassandra] [elasticsearch]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m broker.ops.services down "$@"
