#!/usr/bin/env bash
# TCP, WebSocket, TLS and WebSocket over TLS side by side: for each
# transport a fresh gateway (fsync, both listeners, TLS on both for tls and
# wss), then the load generator's idle scenario (memory per connection,
# login rate) and chat at 5,000 and 10,000 msg/s (latency percentiles, the
# gateway's CPU). Usage, from the workspace root after
# `cargo build --release -p imgate -p imgate-loadgen`:
#
#   bench/scripts/transports.sh [TRANSPORT ...]     # default: tcp ws tls wss
#
# Environment: BIN (directory of the binaries; default
# $CARGO_TARGET_DIR/release, else target/release), IDLE (connections of the
# idle run; default 10000), PAIRS (chat pairs; default 100), DUR (chat
# duration; default 10s). Ports 17601 (TCP), 17602 (WebSocket), 17609
# (metrics) on 127.0.0.1. Every run is bounded; the gateway is stopped by
# its PID after each transport. Run it on an otherwise idle machine.
set -euo pipefail

TRANSPORTS=("$@")
[ ${#TRANSPORTS[@]} -eq 0 ] && TRANSPORTS=(tcp ws tls wss)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
IDLE=${IDLE:-10000}
PAIRS=${PAIRS:-100}
DUR=${DUR:-10s}
OUT=$(mktemp -d)
GW=
trap 'if [ -n "$GW" ]; then kill "$GW" 2>/dev/null || true; fi; rm -rf "$OUT"' EXIT

# A certificate for 127.0.0.1 that is not a CA (rustls refuses a CA
# certificate as a server's own).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null

start_gateway() { # TLS(0|1)
  rm -rf "$OUT/data"
  local tls=()
  [ "$1" = 1 ] && tls=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
  "$BIN/imgate" --listen 127.0.0.1:17601 --ws-listen 127.0.0.1:17602 \
    --metrics-listen 127.0.0.1:17609 --data-dir "$OUT/data" --durability fsync \
    --max-connections 100000 --max-frames-per-sec 100000 --frame-burst 100000 \
    --log-level warn "${tls[@]}" >"$OUT/gw.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:17609/healthz >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "gateway did not start:" >&2
  cat "$OUT/gw.log" >&2
  exit 1
}

stop_gateway() {
  kill "$GW"
  wait "$GW" || true
  GW=
}

for t in "${TRANSPORTS[@]}"; do
  case "$t" in
    tcp) tls=0 port=17601 args=(--transport tcp) ;;
    ws) tls=0 port=17602 args=(--transport ws) ;;
    tls) tls=1 port=17601 args=(--transport tcp --tls --tls-ca "$OUT/cert.pem") ;;
    wss) tls=1 port=17602 args=(--transport ws --tls --tls-ca "$OUT/cert.pem") ;;
    *) echo "unknown transport $t (tcp, ws, tls or wss)" >&2; exit 2 ;;
  esac
  common=(--target "127.0.0.1:$port" --metrics 127.0.0.1:17609 "${args[@]}")
  echo "=== $t: idle, $IDLE connections"
  start_gateway "$tls"
  "$BIN/imgate-loadgen" idle -n "$IDLE" --hold 5s --source-ips 2 "${common[@]}" || true
  stop_gateway
  for rate in 5000 10000; do
    echo "=== $t: chat, $PAIRS pairs at $rate msg/s for $DUR"
    start_gateway "$tls"
    "$BIN/imgate-loadgen" chat --pairs "$PAIRS" --rate "$rate" --duration "$DUR" --warmup 2s \
      "${common[@]}" || true
    stop_gateway
  done
done
