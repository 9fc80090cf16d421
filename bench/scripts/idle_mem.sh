#!/usr/bin/env bash
# The idle-connection memory study: for each server binary and driver, start
# the server, open N connections with idle_client, and print the server's
# REPORT line plus a one-line summary. Usage, from the workspace root after
# `cargo build --release -p imgate-bench --bins`:
#
#   bench/scripts/idle_mem.sh [N] [server-binary ...]
#
# Environment: BIN (directory of the binaries; default
# $CARGO_TARGET_DIR/release, else target/release), DRIVERS (default
# "uring legacy"), THREADS (default 1), PORT (default 7700). MIMALLOC_*
# variables reach the server. Each run is bounded: the server exits by
# itself after 120 s at most, the client after its hold time.
set -euo pipefail

N=${1:-19000}
shift || true
SERVERS=("$@")
[ ${#SERVERS[@]} -eq 0 ] && SERVERS=(idle_server idle_server_mimalloc idle_server_mimalloc_tuned)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
DRIVERS=${DRIVERS:-uring legacy}
THREADS=${THREADS:-1}
PORT=${PORT:-7700}
ENVS=$(env | grep '^MIMALLOC_' | tr '\n' ' ' || true)
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

for server in "${SERVERS[@]}"; do
  for driver in $DRIVERS; do
    log="$LOG/$server-$driver.log"
    "$BIN/$server" --addr "127.0.0.1:$PORT" --driver "$driver" --threads "$THREADS" \
      --expect "$N" --settle-ms 2000 --max-secs 120 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -qs READY "$log" && break; sleep 0.1; done
    # 5000 connections/s (the client's default) stays under the accept rate.
    "$BIN/idle_client" --addr "127.0.0.1:$PORT" -n "$N" --hold-secs 6 >/dev/null
    wait "$pid" || { echo "$server $driver failed:"; cat "$log"; continue; }
    grep -E '^REPORT' "$log" | sed 's/^/  /'
    grep -E '^REPORT' "$log" | awk -v env="$ENVS" -v n="$N" '{
      for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2 && !(kv[1] in f)) f[kv[1]] = kv[2]
      printf "SUMMARY %-16s %-7s %s per_conn=%s B fixed=%s KiB slab_per_conn=%.0f B %s\n",
        f["alloc"], f["driver"], f["conns"], f["per_conn_bytes"], f["rss_before_kib"],
        (f["slab_after_kib"] - f["slab_before_kib"]) * 1024 / n, env
    }'
    # Let the kernel reap the closed sockets before the next run.
    sleep 1
  done
done
