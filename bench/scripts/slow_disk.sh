#!/usr/bin/env bash
# The embedded backend on a slow disk: an ext4 file system on a loop
# device whose writes the blkio cgroup (v1) throttles to a few per second,
# so every fsync waits 100 ms to 1 s. For each write-IOPS limit, a fresh
# gateway (fsync) in that cgroup, the load generator's chat at RATE msg/s
# (outside the cgroup), then the gateway's latency, memory, backend queue
# and refusals. Needs root, loop devices and the blkio controller; run it
# on an otherwise idle machine, from the workspace root, after
# `cargo build --release -p imgate -p imgate-loadgen`:
#
#   bench/scripts/slow_disk.sh [IOPS ...]      # default: 0 (no limit) 20 5 2
#
# Environment: BIN (default target/release), RATE (default 2000), PAIRS
# (default 100), DUR (default 20s), DRAIN (the load generator's wait for
# the last answers after sending stops; default 5s). Ports 17901 (TCP) and 17909 (metrics)
# on 127.0.0.1. Everything it creates (mount, loop device, cgroup,
# processes) is removed on exit.
set -euo pipefail

LIMITS=("$@")
[ ${#LIMITS[@]} -eq 0 ] && LIMITS=(0 20 5 2)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
RATE=${RATE:-2000}
PAIRS=${PAIRS:-100}
DUR=${DUR:-20s}
DRAIN=${DRAIN:-5s}
WORK=$(mktemp -d)
CG=/sys/fs/cgroup/blkio/imgate-slow-$$
GW= LOOP= SAMPLER=
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  [ -n "$GW" ] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null || true
  mountpoint -q "$WORK/mnt" && umount "$WORK/mnt" || true
  [ -n "$LOOP" ] && losetup -d "$LOOP" || true
  [ -d "$CG" ] && rmdir "$CG" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

truncate -s 1G "$WORK/disk.img"
LOOP=$(losetup --find --show "$WORK/disk.img")
mkfs.ext4 -q "$WORK/disk.img"
mkdir -p "$WORK/mnt"
mount "$LOOP" "$WORK/mnt"
DEV=$(lsblk -no MAJ:MIN "$LOOP" | tr -d ' ')
mkdir -p "$CG"

metric() { # NAME: the sum of its lines
  curl -sf http://127.0.0.1:17909/metrics | awk -v n="$1" '$1 ~ "^" n "({|$)" { s += $2 } END { print s + 0 }'
}

for iops in "${LIMITS[@]}"; do
  if [ "$iops" = 0 ]; then
    echo "$DEV 0" >"$CG/blkio.throttle.write_iops_device" 2>/dev/null || true
  else
    echo "$DEV $iops" >"$CG/blkio.throttle.write_iops_device"
  fi
  rm -rf "$WORK/mnt/data"
  "$BIN/imgate" --listen 127.0.0.1:17901 --metrics-listen 127.0.0.1:17909 \
    --data-dir "$WORK/mnt/data" --durability fsync --max-frames-per-sec 100000 \
    --frame-burst 100000 --log-level warn >"$WORK/gw.log" 2>&1 &
  GW=$!
  echo "$GW" >"$CG/cgroup.procs"
  for t in $(ls /proc/$GW/task); do echo "$t" >"$CG/tasks" 2>/dev/null || true; done
  # Creating the store syncs a few files: at 2 writes a second, seconds.
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:17909/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
  # The backend queue's peak and the RSS, sampled every 100 ms.
  (peak=0; rss=0
   while kill -0 "$GW" 2>/dev/null; do
     q=$(metric imgate_backend_queue_batches)
     r=$(awk '/VmRSS/ { print $2 }' /proc/$GW/status 2>/dev/null || echo 0)
     [ "${q%.*}" -gt "$peak" ] && peak=${q%.*}
     [ "$r" -gt "$rss" ] && rss=$r
     echo "$peak $rss" >"$WORK/peak"
     sleep 0.1
   done) &
  SAMPLER=$!
  echo "=== write IOPS limit ${iops} (0: none): chat, $PAIRS pairs at $RATE msg/s for $DUR"
  "$BIN/imgate-loadgen" chat --pairs "$PAIRS" --rate "$RATE" --duration "$DUR" --warmup 2s \
    --drain "$DRAIN" --target 127.0.0.1:17901 --metrics 127.0.0.1:17909 2>&1 |
    grep -E "^  (ack|delivery) |sent .* acked|LOST|RESULT" || true
  commits=$(metric imgate_store_commit_seconds_count)
  commit_sum=$(metric imgate_store_commit_seconds_sum)
  echo "commits $commits, mean commit $(awk -v s="$commit_sum" -v c="$commits" 'BEGIN { if (c > 0) printf "%.1f ms", 1000 * s / c }')," \
    "overloaded refusals $(metric imgate_overloaded_total)"
  kill "$GW"; wait "$GW" || true; GW=
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
  read -r peak rss <"$WORK/peak"
  echo "backend queue peak $peak batches, gateway peak RSS $((rss / 1024)) MiB"
done
