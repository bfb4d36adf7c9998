#!/bin/sh
# The Dockerfile's build stage: a static, stripped dab binary at $1.
# Runs the same outside Docker (the test suite runs it).
set -eu
out="${1:-/out/dab}"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out" ./cmd/dab
"$out" help >/dev/null 2>&1 || { echo "the built binary does not run" >&2; exit 1; }
