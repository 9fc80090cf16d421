#!/usr/bin/env bash
# The event webhook's cost on the cluster backend (docs/benchmarks.md,
# "Events"): a fresh 3-server JetStream cluster (R3, sync_interval always)
# per step, one gateway node, chat at RATE msg/s with events off, then on
# (a local receiver), twice in turn; the load generator's ack latency and
# the receiver's count.
#
# Usage, from the workspace root after
# `cargo build --release -p imgate -p imgate-loadgen --example event_sink`
# and with nats-server 2.10 or newer on PATH:
#
#   bench/scripts/cluster_events.sh
#
# Environment: BIN (default target/release), RATE (default 1000), PAIRS
# (default 100), DUR (default 10s). Ports 14220-14222 and 16220-16222
# and 18220-18222 (NATS), 17701, 17709 and 17790 on 127.0.0.1. Every process is stopped
# by its PID.
set -euo pipefail

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
RATE=${RATE:-1000}
PAIRS=${PAIRS:-100}
DUR=${DUR:-10s}
SECRET=bench-secret
OUT=$(mktemp -d)
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$OUT"' EXIT

nats() {
  rm -rf "$OUT/js"
  for i in 0 1 2; do
    cat >"$OUT/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:1422$i
http: 127.0.0.1:1822$i
jetstream { store_dir: "$OUT/js/n$i", sync_interval: "always" }
cluster { name: bench, listen: 127.0.0.1:1622$i, routes: [nats://127.0.0.1:16220, nats://127.0.0.1:16221, nats://127.0.0.1:16222] }
CONF
    nats-server -c "$OUT/n$i.conf" >"$OUT/n$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 0 1 2; do
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:1822$i/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

gateway() { # gateway [events]
  local ev=()
  [ "${1:-}" = events ] && ev=(--events-url http://127.0.0.1:17790/events --events-secret "$SECRET")
  "$BIN/imgate" --backend cluster \
    --cluster-nats-urls nats://127.0.0.1:14220,nats://127.0.0.1:14221,nats://127.0.0.1:14222 \
    --cluster-node-id a --listen 127.0.0.1:17701 --metrics-listen 127.0.0.1:17709 \
    --max-frames-per-sec 100000 --frame-burst 100000 --log-level warn "${ev[@]}" >"$OUT/gw.log" 2>&1 &
  PIDS+=($!)
  # The client port opens once the node has joined JetStream.
  for _ in $(seq 600); do
    (exec 3<>/dev/tcp/127.0.0.1/17701) 2>/dev/null && return
    sleep 0.1
  done
  echo "gateway did not start"; cat "$OUT/gw.log"; exit 1
}

echo "=== chat on the cluster backend, $PAIRS pairs at $RATE msg/s for $DUR, events off and on"
for round in 1 2; do
  for mode in off on; do
    nats
    if [ $mode = on ]; then
      "$BIN/examples/event_sink" --listen 127.0.0.1:17790 --secret "$SECRET" --seconds 120 >"$OUT/sink.log" &
      PIDS+=($!)
      gateway events
    else
      gateway
    fi
    "$BIN/imgate-loadgen" chat --pairs "$PAIRS" --rate "$RATE" --duration "$DUR" --warmup 2s \
      --target 127.0.0.1:17701 --metrics 127.0.0.1:17709 >"$OUT/lg.log" 2>&1 || true
    sleep 2
    echo "round $round events $mode: $(grep -E "^  ack |per 1k msg/s|^deliveries|^RESULT" "$OUT/lg.log" | tr -s ' ' | paste -sd'|')"
    grep -q "RESULT: PASS" "$OUT/lg.log" || { tail -5 "$OUT/lg.log"; tail -5 "$OUT/gw.log"; }
    [ $mode = on ] && echo "  receiver: $(tail -1 "$OUT/sink.log")"
    stop_all
  done
done
