#!/usr/bin/env bash
# Where the CPU of a chat or group run goes: user and kernel time of the
# gateway and of the load generator over the measured window, per message
# (chat) or per push (group). This is the study behind "what bounds chat and
# group on this machine" in docs/benchmarks.md. Usage, from the workspace
# root after `cargo build --release -p imgate -p imgate-loadgen`:
#
#   bench/scripts/cpu_per_msg.sh chat RATE [DURABILITY]
#   bench/scripts/cpu_per_msg.sh group [DURABILITY]
#
# chat: 1,000 pairs at RATE msg/s. group: one group of 1,000 members at 20
# msg/s (19,980 pushes/s). DURABILITY is fsync (default), os or memory.
# Environment: BIN (directory of the binaries; default
# $CARGO_TARGET_DIR/release, else target/release), DATA (the gateway's data
# directory, emptied first; default /tmp/imgate-cpu-data). Each run starts
# its own gateway and stops it; the load generator's report is printed after
# the figures. Run it on an otherwise idle machine.
set -euo pipefail

MODE=${1:?usage: cpu_per_msg.sh chat RATE [DURABILITY] | group [DURABILITY]}
case "$MODE" in
  chat)
    RATE=${2:?chat needs a rate}
    DUR=${3:-fsync}
    UNITS=$RATE
    UNIT=msg
    LOAD=(chat --pairs 1000 --rate "$RATE" --duration 10s --warmup 3s)
    ;;
  group)
    DUR=${2:-fsync}
    UNITS=$((20 * 999))
    UNIT=push
    LOAD=(group -g 1 -s 1000 --rate 20 --duration 10s --warmup 3s)
    ;;
  *) echo "unknown mode $MODE (chat or group)" >&2; exit 2 ;;
esac
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
DATA=${DATA:-/tmp/imgate-cpu-data}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"; [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null || true' EXIT

rm -rf "$DATA"
"$BIN/imgate" --max-connections 100000 --data-dir "$DATA" --durability "$DUR" \
  --max-frames-per-sec 100000 --frame-burst 100000 --log-level warn >"$OUT/gw.log" 2>&1 &
GW=$!
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:9100/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN/imgate-loadgen" "${LOAD[@]}" >"$OUT/lg.out" 2>&1 &
LG=$!

# user and system ticks of a process: fields 14 and 15 of /proc/PID/stat.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
sleep 5 # 3 s of warm-up and 2 s into the measured window
read -r gu0 gs0 < <(ticks "$GW")
read -r lu0 ls0 < <(ticks "$LG")
WINDOW=6
sleep "$WINDOW"
read -r gu1 gs1 < <(ticks "$GW")
read -r lu1 ls1 < <(ticks "$LG")
rc=0
wait "$LG" || rc=$?
kill "$GW"
wait "$GW" || true
GW=

HZ=$(getconf CLK_TCK)
for row in "gateway $((gu1 - gu0)) $((gs1 - gs0))" "loadgen $((lu1 - lu0)) $((ls1 - ls0))"; do
  set -- $row
  awk -v name="$1" -v u="$2" -v s="$3" -v hz="$HZ" -v t="$WINDOW" -v n="$UNITS" -v unit="$UNIT" 'BEGIN {
    u /= hz; s /= hz
    printf "%-8s user %3.0f%%  kernel %3.0f%%   per %s: user %5.1f us  kernel %5.1f us\n",
      name, 100 * u / t, 100 * s / t, unit, 1e6 * u / (n * t), 1e6 * s / (n * t)
  }'
done
echo "load generator exit code $rc; its report:"
sed -n '/^== /,$p' "$OUT/lg.out"
