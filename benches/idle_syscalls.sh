#!/usr/bin/env bash
# Syscalls, context switches and wake-ups per heartbeat of the loadgen's idle phase, for one
# variant at a time (the server's process only; the clients run in a child process).
#
#   cargo bench --bench loadgen --no-run
#   benches/idle_syscalls.sh target/release/deps/loadgen-<hash> sse [ROUNDS] [extra loadgen args]
#
# Runs `loadgen --only idle --variant VARIANT --heartbeat-ms 1000 --idle-window-ms 3000` with a
# `perf stat -p PID` beside it that the loadgen enables only during its CPU windows
# (`--perf-ctl`; `--no-inherit`: not the client process it spawns), then prints the counts
# divided by the heartbeats of those windows.
# Needs `perf` with tracepoints (root, or perf_event_paranoid <= -1) and Linux.
set -euo pipefail
bin=$1
variant=$2
rounds=${3:-2}
shift $(($# < 3 ? $# : 3))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkfifo "$work/ctl" "$work/ack"
"$bin" --only idle --variant "$variant" --heartbeat-ms 1000 --idle-window-ms 3000 \
    --rounds "$rounds" --perf-ctl "$work/ctl,$work/ack" "$@" >"$work/loadgen.txt" 2>&1 &
loadgen=$!
sleep 0.3
events=raw_syscalls:sys_enter,syscalls:sys_enter_writev,syscalls:sys_enter_write
events+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_recvfrom
events+=,syscalls:sys_enter_sched_yield,context-switches,sched:sched_wakeup,task-clock
perf stat --no-inherit -D -1 --control "fifo:$work/ctl,$work/ack" -p "$loadgen" -e "$events" -x, \
    -o "$work/perf.txt" &
perf=$!
wait "$loadgen"
kill -INT "$perf" 2>/dev/null || true
wait "$perf" || true
cat "$work/loadgen.txt"
# The variant's row: hb/s is the third column; the window and rounds are the flags above.
hbps=$(awk -v v="$variant" '$1 == v { print $3 }' "$work/loadgen.txt")
heartbeats=$(awk -v h="$hbps" -v r="$rounds" 'BEGIN { printf "%.0f", h * 3 * r }')
echo
echo "per heartbeat ($heartbeats heartbeats in the windows):"
awk -F, -v n="$heartbeats" '$1 ~ /^[0-9.]+$/ { printf "  %-32s %12s %8.3f\n", $3, $1, $1 / n }' \
    "$work/perf.txt"
