#!/usr/bin/env bash
# Benchmark: dab next to s5cmd (and asynq's own task rate), in one run against
# one freshly started redis-server and versitygw; prints one table of ratios.
# Needs redis-server, versitygw (`make deps` installs both) and curl. Builds
# dab, s5cmd (the version pinned in bench/tools/go.mod) and the driver into
# bin/. Extra arguments go to the driver, e.g. ./bench/pipeline.sh -quick
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$root" && go build -o "$root/bin/dab" ./cmd/dab)
(cd "$root/bench/tools" && go build -o "$root/bin/s5cmd" github.com/peak/s5cmd/v2)
(cd "$root/bench" && go build -o "$root/bin/dab-bench" .)
exec "$root/bin/dab-bench" -dab "$root/bin/dab" -s5cmd "$root/bin/s5cmd" "$@"
