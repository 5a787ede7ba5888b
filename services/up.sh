#!/usr/bin/env bash
# Start the real Kafka / Cassandra / Elasticsearch servers on 127.0.0.1 (all three by default),
# fetching them from Maven Central on first use. Exits non-zero, with the failing server's log
# tail, if any is not healthy in time. Usage: services/up.sh [kafka] [cassandra] [elasticsearch]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m broker.ops.services up "$@"
