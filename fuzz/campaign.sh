#!/bin/bash
# A campaign: each target in turn for RUNS executions (default 10^7), from its seeds and the
# corpus so far, -O -s none (see README.md, "Speed"). Appends a summary per target to campaign.log.
# Usage (from fuzz/): nohup ./campaign.sh [runs] [targets...] &
set -uo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
runs=${1:-10000000}
shift || true
[ $# -gt 0 ] && targets=("$@") || targets=(scanner body headers resume)
cargo fuzz build -O -s none
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="campaign-$target.log"
    start=$(date +%s)
    cargo fuzz run -O -s none "$target" "corpus/$target" "seeds/$target" -- \
        -runs="$runs" -print_final_stats=1 > "$log" 2>&1
    rc=$?
    end=$(date +%s)
    {
        echo "== $target: exit $rc, $(( end - start )) s wall, started $(date -u -d "@$start" +%FT%TZ)"
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)' "$log"
        grep -P '\tDONE ' "$log" | tail -n 1
        grep -E 'SUMMARY|panicked|crash-|deadly signal' "$log" | head -n 5
        ls "artifacts/$target" 2>/dev/null | head -n 5
    } >> campaign.log
done
