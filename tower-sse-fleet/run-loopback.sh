#!/usr/bin/env bash
# The loopback fleet (issue 14), 127.0.0.1 only, bounded under 5 minutes:
#
#   load client (N EventSource clients)
#     -> HAProxy :LB (round robin, no stickiness, health checks on each proxy's /readyz)
#       -> 3 x tower-sse-proxy
#         -> HAProxy :APPLB (round robin) -> 2 x app (tower-sse-fleet app) -> redis-server stream
#                                             ^ tower-sse-fleet produce: one event per 100 ms
#
# Scenarios (each a fresh set of proxies and a fresh load client, buckets from a shared zero):
#   rolling-without   proxies stopped in turn by kill -9 and restarted (what a server without a
#                     drain does: every stream cut at once, clients wait their fixed 3 s)
#   rolling-nojitter  SIGTERM drain over DRAIN, retry 3 s without jitter (the layer's final
#                     drain hint is still jittered 20 %)
#   rolling-with      SIGTERM drain over DRAIN, retry 3 s +-50 %
#   loss-without/-with  kill -9 of one proxy, retry fixed / +-50 %
#   lifetime-without/-with  --max-lifetime LIFETIME, lifetime jitter 0 / 0.2
#   app-without       rolling restart of the apps, no resume (and app-resume when the proxy
#                     has --resume)
#
# Usage: tower-sse-fleet/run-loopback.sh [OUT_DIR]   (default docs/fleet)
# Environment: CLIENTS (3000), DRAIN (4s), SKIP_BUILD=1 to use the built binaries as they are,
# ONLY="app-without app-resume" to run some scenarios (their lines are then appended to the
# summary instead of starting a new one).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/docs/fleet}
CLIENTS=${CLIENTS:-3000}
DRAIN=${DRAIN:-4s}
LIFETIME=${LIFETIME:-12s}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/fleet-loopback.XXXXXX)
mkdir -p "$OUT"

for tool in haproxy redis-server; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy redis-server fonts-dejavu-core >/dev/null; }
done
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release -q -p tower-sse-proxy -p tower-sse-fleet)
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# Every process this script starts is listed here and ended on exit.
PIDS=()
cleanup() {
  local status=$?
  if ((status != 0)); then
    for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "== $f"; tail -5 "$f"; }; done
  fi
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports: a base chosen at random above 20000, so that two runs do not collide.
BASE=$((20000 + RANDOM % 20000))
REDIS_PORT=$BASE LB_PORT=$((BASE + 1)) APPLB_PORT=$((BASE + 2))
APP_PORTS=($((BASE + 10)) $((BASE + 11)))
PROXY_PORTS=($((BASE + 20)) $((BASE + 21)) $((BASE + 22)))
ADMIN_PORTS=($((BASE + 30)) $((BASE + 31)) $((BASE + 32)))
REDIS=redis://127.0.0.1:$REDIS_PORT/

now_ms() { date +%s%3N; }
# Sleeps until ZERO + $1 seconds.
at() {
  local target=$((ZERO + $(awk "BEGIN{printf \"%d\", $1 * 1000}")))
  local left=$((target - $(now_ms)))
  if ((left > 0)); then sleep "$(awk "BEGIN{print $left / 1000}")"; fi
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
log() { echo "[$(date +%T.%3N)] $*"; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"
"$BIN/tower-sse-fleet" produce --redis "$REDIS" >"$WORK/produce.log" 2>&1 &
PIDS+=($!)

declare -A APP_PID
start_app() {
  "$BIN/tower-sse-fleet" app --listen "127.0.0.1:${APP_PORTS[$1]}" --redis "$REDIS" >>"$WORK/app$1.log" 2>&1 &
  APP_PID[$1]=$!
  PIDS+=($!)
}
start_app 0
start_app 1

cat >"$WORK/haproxy.cfg" <<EOF
global
    # Two sessions per client (front and app side), two descriptors each: fits a 20,000 fd limit.
    maxconn 9000
defaults
    mode http
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout check 500ms
    option redispatch
    retries 3
frontend fleet
    bind 127.0.0.1:$LB_PORT
    default_backend proxies
backend proxies
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 200ms fall 1 rise 1
    server p0 127.0.0.1:${PROXY_PORTS[0]} check port ${ADMIN_PORTS[0]}
    server p1 127.0.0.1:${PROXY_PORTS[1]} check port ${ADMIN_PORTS[1]}
    server p2 127.0.0.1:${PROXY_PORTS[2]} check port ${ADMIN_PORTS[2]}
frontend apps
    bind 127.0.0.1:$APPLB_PORT
    default_backend apps
backend apps
    balance roundrobin
    default-server inter 200ms fall 1 rise 1
    server a0 127.0.0.1:${APP_PORTS[0]} check
    server a1 127.0.0.1:${APP_PORTS[1]} check
EOF
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
wait_port "$LB_PORT"
wait_port "${APP_PORTS[0]}"
wait_port "${APP_PORTS[1]}"

HAS_RESUME=0
"$BIN/tower-sse-proxy" --help | grep -q -- '--resume' && HAS_RESUME=1

declare -A PROXY_PID
PROXY_FLAGS=()
start_proxy() {
  "$BIN/tower-sse-proxy" --listen "127.0.0.1:${PROXY_PORTS[$1]}" --admin "127.0.0.1:${ADMIN_PORTS[$1]}" \
    --upstream "http://127.0.0.1:$APPLB_PORT" "${PROXY_FLAGS[@]}" >>"$WORK/proxy$1.log" 2>&1 &
  PROXY_PID[$1]=$!
  PIDS+=($!)
}
start_proxies() { for i in 0 1 2; do start_proxy "$i"; done; for i in 0 1 2; do wait_port "${ADMIN_PORTS[$i]}"; done; sleep 0.5; }
stop_proxies() { for i in 0 1 2; do kill -9 "${PROXY_PID[$i]}" 2>/dev/null || true; wait "${PROXY_PID[$i]}" 2>/dev/null || true; done; }
# Drains proxy $1 with SIGTERM, waits for it to exit (at most 30 s), starts it again.
drain_restart() {
  kill -TERM "${PROXY_PID[$1]}"
  for _ in $(seq 300); do kill -0 "${PROXY_PID[$1]}" 2>/dev/null || break; sleep 0.1; done
  kill -9 "${PROXY_PID[$1]}" 2>/dev/null || true
  wait "${PROXY_PID[$1]}" 2>/dev/null || true
  start_proxy "$1"
}
kill_restart() {
  kill -9 "${PROXY_PID[$1]}"
  wait "${PROXY_PID[$1]}" 2>/dev/null || true
  start_proxy "$1"
}

# run NAME DURATION_S ACTION...: fresh proxies, a load client from a new zero, the actions.
run() {
  local name=$1 duration=$2
  shift 2
  if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then return; fi
  start_proxies
  ZERO=$(now_ms)
  log "$name: ${PROXY_FLAGS[*]}"
  "$BIN/tower-sse-fleet" load --url "http://127.0.0.1:$LB_PORT/events" --clients "$CLIENTS" --ramp 3s \
    --duration "${duration}s" --zero-unix-ms "$ZERO" --csv "$OUT/loopback-$name.csv" --column "$name" \
    >"$WORK/load-$name.txt" 2>&1 &
  local load=$!
  PIDS+=($load)
  "$@"
  wait "$load" || { log "$name: the load client failed"; cat "$WORK/load-$name.txt"; }
  echo "$name $(tail -1 "$WORK/load-$name.txt")" | tee -a "$OUT/loopback-summary.txt"
  stop_proxies
}

# The scenarios' actions (first action at 8 s, as in the simulation's --start 8s).
rolling_kill() { for i in 0 1 2; do at $((8 + 6 * i)); log "kill -9 and restart proxy $i"; kill_restart "$i"; done; }
rolling_drain() { for i in 0 1 2; do at $((8 + 6 * i)); log "drain and restart proxy $i"; drain_restart "$i"; done; }
loss() { at 8; log "kill -9 proxy 0"; kill -9 "${PROXY_PID[0]}"; at 13; start_proxy 0; }
nothing() { :; }
app_restart() {
  for i in 0 1; do
    at $((8 + 6 * i)); log "restart app $i"
    kill -TERM "${APP_PID[$i]}"; wait "${APP_PID[$i]}" 2>/dev/null || true; start_app "$i"
  done
}

[[ -n ${ONLY:-} ]] || : >"$OUT/loopback-summary.txt"
echo "clients=$CLIENTS drain=$DRAIN lifetime=$LIFETIME resume_flag=$HAS_RESUME" >>"$OUT/loopback-summary.txt"
START=$(now_ms)
PROXY_FLAGS=(--retry 3s --retry-jitter 0 --drain 0s)
run rolling-without 30 rolling_kill
PROXY_FLAGS=(--retry 3s --retry-jitter 0 --drain "$DRAIN")
run rolling-nojitter 30 rolling_drain
PROXY_FLAGS=(--retry 3s --retry-jitter 0.5 --drain "$DRAIN")
run rolling-with 30 rolling_drain
PROXY_FLAGS=(--retry 3s --retry-jitter 0)
run loss-without 18 loss
PROXY_FLAGS=(--retry 3s --retry-jitter 0.5)
run loss-with 18 loss
PROXY_FLAGS=(--retry 3s --retry-jitter 0 --max-lifetime "$LIFETIME" --lifetime-jitter 0)
run lifetime-without 32 nothing
PROXY_FLAGS=(--retry 3s --retry-jitter 0.5 --max-lifetime "$LIFETIME" --lifetime-jitter 0.2)
run lifetime-with 32 nothing
PROXY_FLAGS=(--retry 3s --retry-jitter 0)
run app-without 22 app_restart
if ((HAS_RESUME)); then
  PROXY_FLAGS=(--retry 3s --retry-jitter 0.5 --resume)
  run app-resume 22 app_restart
else
  echo "app-resume: not run, tower-sse-proxy has no --resume flag yet" | tee -a "$OUT/loopback-summary.txt"
fi
log "done in $((($(now_ms) - START) / 1000)) s"
