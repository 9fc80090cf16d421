#!/usr/bin/env bash
# The embedded backend's latency histograms under chat load: a fresh
# gateway (fsync) per rate, the load generator's chat scenario, then the
# gateway's /metrics, from which the p50, p90, p99 and p99.9 of
# imgate_msg_ack_seconds, imgate_store_commit_seconds and
# imgate_backend_batch_events are read (as the upper bound of the bucket
# the quantile falls in, which is what a Prometheus histogram can tell).
# Usage, from the workspace root after
# `cargo build --release -p imgate -p imgate-loadgen`:
#
#   bench/scripts/histograms.sh [RATE ...]     # default: 5000 10000
#
# Environment: BIN (directory of the binaries; default
# $CARGO_TARGET_DIR/release, else target/release), PAIRS (chat pairs;
# default 100), DUR (chat duration; default 15s). Ports 17701 (TCP) and
# 17709 (metrics) on 127.0.0.1. Every run is bounded; the gateway is
# stopped by its PID after each rate. Run it on an otherwise idle machine.
set -euo pipefail

RATES=("$@")
[ ${#RATES[@]} -eq 0 ] && RATES=(5000 10000)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
PAIRS=${PAIRS:-100}
DUR=${DUR:-15s}
OUT=$(mktemp -d)
GW=
trap 'if [ -n "$GW" ]; then kill "$GW" 2>/dev/null || true; fi; rm -rf "$OUT"' EXIT

# quantiles FAMILY < metrics: "p50 ≤ X, p90 ≤ X, p99 ≤ X, p99.9 ≤ X (n)"
quantiles() {
  awk -v fam="$1" '
    $1 ~ "^" fam "_bucket" {
      match($1, /le="[^"]+"/); le = substr($1, RSTART + 4, RLENGTH - 5)
      n++; les[n] = le; cum[n] = $2
    }
    $1 == fam "_count" { total = $2 }
    END {
      if (total == 0) { print "no observations"; exit }
      split("0.5 0.9 0.99 0.999", qs, " ")
      out = ""
      for (i = 1; i <= 4; i++) {
        for (j = 1; j <= n; j++) if (cum[j] >= qs[i] * total) break
        out = out sprintf("p%s <= %s  ", qs[i] * 100, les[j])
      }
      print out "(" total " observations)"
    }'
}

for rate in "${RATES[@]}"; do
  rm -rf "$OUT/data"
  "$BIN/imgate" --listen 127.0.0.1:17701 --metrics-listen 127.0.0.1:17709 \
    --data-dir "$OUT/data" --durability fsync --max-frames-per-sec 100000 \
    --frame-burst 100000 --log-level warn >"$OUT/gw.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:17709/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "=== chat, $PAIRS pairs at $rate msg/s for $DUR"
  "$BIN/imgate-loadgen" chat --pairs "$PAIRS" --rate "$rate" --duration "$DUR" --warmup 2s \
    --target 127.0.0.1:17701 --metrics 127.0.0.1:17709 || true
  curl -sf http://127.0.0.1:17709/metrics >"$OUT/metrics"
  for fam in imgate_msg_ack_seconds imgate_store_commit_seconds imgate_backend_batch_events; do
    printf '%-30s %s\n' "$fam" "$(quantiles "$fam" <"$OUT/metrics")"
  done
  kill "$GW"
  wait "$GW" || true
  GW=
done
