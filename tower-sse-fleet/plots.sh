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

# Run E (docs/fleet/loopback-run-e/: the machine ran nothing but the fleet), against the
# simulation calibrated on that run's own closes (the -closes columns against
# loopback-actions.txt): a killed proxy's streams ended 0-100 ms after the kill, over ~300 ms;
# a restarted app's 300 ms after its SIGTERM, over ~500 ms, and the script restarts the apps
# 6 s apart (the proxies 10 s apart).
E=$D/loopback-run-e
if [[ -f $E/loopback-loss-without.csv ]]; then
  SIM=(--instances 3 --clients 3000 --drain-window 8s --start 8s --restart 1s --down 5s
    --lifetime 12s --apps 2 --ramp 3s --out $E --prefix sim)
  $B simulate "${SIM[@]}" --step 10s --close-delay 50ms --close-spread 300ms \
    --scenario rolling-deploy --scenario instance-loss --scenario lifetime-rotation | tee $E/sim-summary.md
  $B simulate "${SIM[@]}" --step 6s --close-delay 300ms --close-spread 500ms \
    --scenario app-restart | tail -1 | tee -a $E/sim-summary.md
  pair_e() { # NAME SIM_SCENARIO LOOP_WITHOUT LOOP_WITH
    $B plot --output "$E/$1.png" --title "loopback run E (3 proxies, 3,000 clients) vs simulation: $1" \
      --series "loopback without=$E/loopback-$3.csv:$3" --series "loopback with=$E/loopback-$4.csv:$4" \
      --series "sim without=$E/sim-$2.csv:without" --series "sim with=$E/sim-$2.csv:with"
  }
  pair_e rolling-restart rolling-deploy rolling-without rolling-with
  pair_e instance-loss instance-loss loss-without loss-with
  pair_e lifetime-rotation lifetime-rotation lifetime-without lifetime-with
  pair_e app-restart app-restart app-without app-resume
fi
