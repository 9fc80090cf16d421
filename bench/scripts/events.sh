#!/usr/bin/env bash
# The event webhook's cost and reach (docs/benchmarks.md, "Events"):
#
#  1. chat at RATE msg/s (fsync) with events off, then on (a fast local
#     receiver), twice each in turn: the load generator's ack p50/p99/p99.9
#     and the gateway's CPU per 1k msg/s;
#  2. throughput: chat at BACKLOG_RATE for BACKLOG_DUR with the receiver
#     down, so events pile up in the outbox; then the receiver starts and
#     the backlog drains with no chat load: events per second it takes;
#  3. a 30 s outage: chat at RATE for OUTAGE+30 s, the receiver down from
#     10 s to 10+OUTAGE s; imgate_events_lag each second, the time to drain
#     after the receiver returns, and what it received (distinct ids).
#
# Usage, from the workspace root after
# `cargo build --release -p imgate -p imgate-loadgen --example event_sink`:
#
#   bench/scripts/events.sh
#
# Environment: BIN (default target/release), RATE (default 5000), PAIRS
# (default 100), DUR (default 15s), OUTAGE (seconds, default 30),
# BACKLOG_RATE (default 10000), BACKLOG_DUR (default 30s). PARTS (default
# "1 2 3") picks the parts to run. Ports
# 17701, 17709 and 17790 on 127.0.0.1. Every process is bounded and
# stopped by its PID. Run it on an otherwise idle machine.
set -euo pipefail

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
RATE=${RATE:-5000}
PAIRS=${PAIRS:-100}
DUR=${DUR:-15s}
OUTAGE=${OUTAGE:-30}
BACKLOG_RATE=${BACKLOG_RATE:-10000}
BACKLOG_DUR=${BACKLOG_DUR:-30s}
PARTS=${PARTS:-1 2 3}
SECRET=bench-secret
OUT=$(mktemp -d)
GW=
SINK=
stop() { for p in "$@"; do if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi; done; }
trap 'stop "$GW" "$SINK"; rm -rf "$OUT"' EXIT

gateway() { # gateway [events]
  rm -rf "$OUT/data"
  local ev=()
  [ "${1:-}" = events ] && ev=(--events-url http://127.0.0.1:17790/events --events-secret "$SECRET")
  "$BIN/imgate" --listen 127.0.0.1:17701 --metrics-listen 127.0.0.1:17709 \
    --data-dir "$OUT/data" --durability fsync --max-frames-per-sec 100000 \
    --frame-burst 100000 --log-level warn "${ev[@]}" >"$OUT/gw.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:17709/healthz >/dev/null 2>&1 && return
    sleep 0.1
  done
}

sink() { # sink SECONDS
  "$BIN/examples/event_sink" --listen 127.0.0.1:17790 --secret "$SECRET" --seconds "$1" >"$OUT/sink.log" &
  SINK=$!
  sleep 0.3
}

chat() { # chat DURATION -> the ack row and the cpu line
  "$BIN/imgate-loadgen" chat --pairs "$PAIRS" --rate "$RATE" --duration "$1" --warmup 2s \
    --target 127.0.0.1:17701 --metrics 127.0.0.1:17709 >"$OUT/lg.log" 2>&1 || true
  grep -E "^  ack |per 1k msg/s|^deliveries|^RESULT" "$OUT/lg.log" | tr -s ' ' | paste -sd'|'
}

metric() { curl -sf http://127.0.0.1:17709/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

if part 1; then
echo "=== 1. chat, $PAIRS pairs at $RATE msg/s for $DUR, events off and on"
for round in 1 2; do
  for mode in off on; do
    if [ $mode = on ]; then sink 120; gateway events; else gateway; fi
    echo "round $round events $mode: $(chat "$DUR")"
    [ $mode = on ] && echo "  sent_total $(metric imgate_events_sent_total)  lag $(metric imgate_events_lag)"
    stop "$GW" "$SINK"; GW=; SINK=
  done
done

fi

if part 2; then
echo "=== 2. throughput: a backlog piled up with the receiver down, then drained"
gateway events
echo "chat at $BACKLOG_RATE msg/s for $BACKLOG_DUR with the receiver down: $(RATE=$BACKLOG_RATE chat "$BACKLOG_DUR")"
backlog=$(metric imgate_events_lag)
sink 120
while [ "$(metric imgate_events_lag)" != 0 ]; do sleep 0.1; done
sleep 1.1
stop "$GW" "$SINK"; GW=; SINK=
echo "backlog $backlog events; the receiver's seconds while it drained:"
grep -v "rate=0 " "$OUT/sink.log"
tail -1 "$OUT/sink.log" | awk '{ split($2, e, "="); split($8, s, "="); printf "drain: %d events from the first POST to the last in %d ms: %.0f events/s\n", e[2], s[2], e[2] * 1000 / s[2] }'
fi

if part 3; then
echo "=== 3. an outage of $OUTAGE s under chat at $RATE msg/s"
gateway events
sink 10
total=$((OUTAGE + 30))
"$BIN/imgate-loadgen" chat --pairs "$PAIRS" --rate "$RATE" --duration "${total}s" --warmup 0s \
  --target 127.0.0.1:17701 --metrics 127.0.0.1:17709 >"$OUT/lg.log" 2>&1 &
LG=$!
back=
for t in $(seq 1 $((total + 60))); do
  sleep 1
  lag=$(metric imgate_events_lag)
  if [ "$t" -eq $((10 + OUTAGE)) ]; then sink 90; back=$t; fi
  echo "t=$t lag=$lag" >>"$OUT/lag.log"
  if [ -n "$back" ] && [ "$lag" = 0 ] && ! kill -0 $LG 2>/dev/null; then break; fi
done
awk '{ print } /lag=/ { split($2, a, "="); if (a[2] + 0 > max) max = a[2] + 0 } END { print "max lag " max }' "$OUT/lag.log"
echo "receiver back at t=$back s; lag 0 again at t=$(awk -F'[ =]' -v b="$back" '$2 > b && $4 == 0 { print $2; exit }' "$OUT/lag.log") s"
wait $LG || true
grep -E "^  ack |^deliveries|^RESULT" "$OUT/lg.log"
echo "gateway: sent_total $(metric imgate_events_sent_total) failures $(metric imgate_events_post_failures_total) dropped $(metric imgate_events_dropped_total)"
stop "$GW" "$SINK"; GW=; SINK=
echo "the receiver after it came back:"
grep -v "rate=0 " "$OUT/sink.log"
fi
