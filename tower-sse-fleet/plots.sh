#!/usr/bin/env bash
# The simulation's CSVs and the plots of docs/fleet/ (run after run-loopback.sh for the
# loopback curves; the plots of the simulation alone need nothing else).
#
# Usage: tower-sse-fleet/plots.sh   (from anywhere; writes docs/fleet/*.csv and *.png)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"
cargo build --release -q -p tower-sse-fleet
B=$CARGO_TARGET_DIR/release/tower-sse-fleet
D=docs/fleet

# 20 instances x 100,000 clients, the ideal fleet (clients notice a close at once).
$B simulate --out $D --prefix sim | tee $D/sim-summary.md
# The loopback's shape (3 proxies x 3,000 clients, the script's timing: drain 8 s, a proxy
# every 10 s), calibrated on the loopback run (docs/fleet/loopback-*.csv, the closes column
# against loopback-actions.txt): clients notice a close CLOSE_DELAY late, plus up to
# CLOSE_SPREAD, on the loaded 2-core machine (HAProxy passes ~1,000 aborts on over ~0.5 s).
$B simulate --instances 3 --clients 3000 --drain-window 8s --start 8s --step 10s --restart 1s \
  --down 5s --lifetime 12s --apps 2 --ramp 3s --close-delay "${CLOSE_DELAY:-150ms}" \
  --close-spread "${CLOSE_SPREAD:-400ms}" --out $D --prefix sim-loopback | tee $D/sim-loopback-summary.md

for s in rolling-deploy instance-loss lifetime-rotation app-restart; do
  $B plot --output $D/sim-$s.png --title "simulation, 20 x 100,000: $s" \
    --series "without (fixed retry, no drain window, no resume)=$D/sim-$s.csv:without" \
    --series "with tower-sse settings=$D/sim-$s.csv:with"
done

# Loopback against the calibrated simulation, where the loopback run left its CSVs.
pair() { # NAME SIM_SCENARIO LOOP_WITHOUT LOOP_WITH
  local args=(--output "$D/loopback-$1.png" --title "loopback (3 proxies, 3,000 clients) vs simulation: $1")
  [[ -f $D/loopback-$3.csv ]] && args+=(--series "loopback without=$D/loopback-$3.csv:$3")
  [[ -n $4 && -f $D/loopback-$4.csv ]] && args+=(--series "loopback with=$D/loopback-$4.csv:$4")
  args+=(--series "sim without=$D/sim-loopback-$2.csv:without" --series "sim with=$D/sim-loopback-$2.csv:with")
  $B plot "${args[@]}"
}
pair rolling-restart rolling-deploy rolling-without rolling-with
pair rolling-restart-nojitter rolling-deploy rolling-without rolling-nojitter
pair instance-loss instance-loss loss-without loss-with
pair lifetime-rotation lifetime-rotation lifetime-without lifetime-with
pair app-restart app-restart app-without app-resume
