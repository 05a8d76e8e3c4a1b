#!/usr/bin/env bash
# Which load generator: Python (uvloop + websockets, as benchmarks/loadgen.py) or
# Node.js (ws). Each holds N connections to a Node ws fan-out source and parses
# N x M message frames; prints each client's CPU and memory. Run from the repo
# root after `npm ci --prefix benchmarks/generator_choice`:
#   bash benchmarks/generator_choice/compare.sh [N] [M] [RATE]
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-10000}; M=${2:-20}; RATE=${3:-20}
ulimit -n "$(ulimit -Hn)"
for client in "node client.js" "../../.venv/bin/python client.py"; do
  PORT=$(../../.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  node source.js "$PORT" "$N" "$M" "$RATE" > /dev/null &
  SRC=$!
  sleep 1
  $client "$PORT" "$N" "$M"
  wait $SRC || true
done
