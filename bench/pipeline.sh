#!/usr/bin/env bash
# Benchmark: dab's upload pipeline next to a plain AWS SDK uploader, in one run.
# Needs redis-server and versitygw (`make deps` installs them). Extra
# arguments go to the driver, e.g. ./bench/pipeline.sh -files 500 -big 256MiB
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
go build -o "$root/bin/dab" "$root/cmd/dab"
cd "$root/bench"
go build -o "$root/bin/dab-bench" .
exec "$root/bin/dab-bench" -dab "$root/bin/dab" "$@"
