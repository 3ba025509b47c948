#!/usr/bin/env bash
# Every media figure of the README in one go, ≈ 30 minutes on the 2-core host (run it when the
# machine is otherwise quiet: `uptime`, and the "other CPU" column of each table):
#
#     benchmarks/media_figures.sh                 # BASELINE=REV to compare with another revision
#
# 1. transcoding vs forwarding, server on CPU 0 and load generator on CPU 1 (≈ 6 min)
# 2. µs of server CPU per packet, the engine before issue 11 vs now, same run, pinned (≈ 3 min)
# 3. 1 vs 2 media workers, not pinned: on 2 cores the load generator cannot be kept off the
#    workers' cores, so it shows the per-worker cost rather than scaling (≈ 6 min)
# 4. added delay at 80 % of the count step 1 sustained, pinned (≈ 1 min)
# 5. RSS across 1,000 consecutive recorded calls, pinned (≈ 4 min)
# Each writes its JSON and Markdown to benchmarks/results/ and prints its table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PIN=(--server-cpus 0 --load-cpus 1)
BASELINE=${BASELINE:-b58eb85~1}  # the forwarding engine before issue 11's per-packet cuts

echo "== $(date -u +%FT%TZ), $(uptime)"
$PY -m benchmarks.bridge "${PIN[@]}"
sustained=$($PY -c '
import json, pathlib
report = json.loads(sorted(pathlib.Path("benchmarks/results").glob("bridge-bridge-*.json"))[-1].read_text())
print(next(e["max_sustained_calls"] for e in report["engines"] if e["engine"] == "forwarding"))')

echo "== before/after, $(uptime)"
$PY -m benchmarks.bridge "${PIN[@]}" --engines forwarding --baseline "$BASELINE" --steps 50 100 150

echo "== workers, $(uptime)"
$PY -m benchmarks.bridge --mode workers

echo "== delay at 80 % of $sustained calls, $(uptime)"
$PY -m benchmarks.bridge "${PIN[@]}" --mode delay --steps $((sustained * 8 / 10))

echo "== RSS, $(uptime)"
$PY -m benchmarks.bridge "${PIN[@]}" --mode rss
echo "== done $(date -u +%FT%TZ)"
