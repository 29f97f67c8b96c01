#!/bin/bash
# make fuzz: builds swiftvmm-fuzz with libFuzzer and the address sanitizer, then runs every
# target (or those named in FUZZ_TARGETS) for FUZZ_RUNS executions or FUZZ_SECONDS, whichever
# comes first, FUZZ_JOBS targets at a time (FUZZ_TIMEOUT seconds per input, default 60). Each target starts from Fuzz/corpus/<target> and keeps
# what it learns in out/fuzz/corpus/<target>; a crash input lands in out/fuzz/<target>/. The table
# out/fuzz/summary.md is what docs/benchmarks.md records. FUZZ_MERGE=1 then merges what each
# campaign learned into Fuzz/corpus (libFuzzer -merge=1 keeps only inputs that add coverage).
set -u
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
RUNS=${FUZZ_RUNS:-10000000}
SECONDS_CAP=${FUZZ_SECONDS:-900}
JOBS=${FUZZ_JOBS:-2}
# Per-input limit. Every corpus input replays in well under a second (the slowest, a balloon
# program walking its page budget, in 0.5 s); a lower limit mistakes a fuzzer the host starved
# (builds or tests beside it) for a hang, as 10 s did on this 2-core machine.
TIMEOUT=${FUZZ_TIMEOUT:-60}
ROOT=$PWD
OUT=out/fuzz
echo "building swiftvmm-fuzz with -sanitize=fuzzer,address (.build/fuzz)"
"$SWIFT" build -c release --scratch-path .build/fuzz --product swiftvmm-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address -Xswiftc -use-ld=lld || exit 1
BIN=$PWD/.build/fuzz/release/swiftvmm-fuzz
TARGETS=${FUZZ_TARGETS:-$("$BIN" list)}
mkdir -p "$OUT"
# A Swift trap must reach libFuzzer as a signal: the Swift backtracer would read memory the
# address sanitizer watches and report itself instead.
export SWIFT_BACKTRACE=enable=no
# The share target builds and removes a directory tree per input: on tmpfs it runs 4.5 times as
# fast as on this machine's disk-backed /tmp (330 against 1,496 inputs per second). FUZZ_TMPDIR
# names another place.
if [ -n "${FUZZ_TMPDIR:-}" ]; then export TMPDIR=$FUZZ_TMPDIR
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm/
fi

run_target() {
    local target=$1 dir=$OUT/$1 corpus=$OUT/corpus/$1
    mkdir -p "$dir" "$corpus"
    cp -n Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null
    local start=$(date +%s)
    (cd "$dir" && "$BIN" "$target" -runs="$RUNS" -max_total_time="$SECONDS_CAP" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 "$ROOT/$corpus" > log.txt 2>&1)
    local status=$? elapsed=$(( $(date +%s) - start ))
    local runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log.txt")
    local crashes=$(ls "$dir" | grep -cE '^(crash|leak|timeout|oom)-')
    echo "| $target | ${runs:-0} | $elapsed | $(( ${runs:-0} / (elapsed > 0 ? elapsed : 1) )) | $(ls "$corpus" | wc -l) | $crashes | $status |" > "$dir/row.md"
    echo "$target: ${runs:-0} executions in ${elapsed} s, $crashes findings (exit $status)"
}

running=0
for target in $TARGETS; do
    run_target "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
{
    echo "make fuzz, $(date -u +%Y-%m-%d), FUZZ_RUNS=$RUNS FUZZ_SECONDS=$SECONDS_CAP FUZZ_JOBS=$JOBS, commit $(git rev-parse --short HEAD)"
    echo
    echo "| target | executions | seconds | exec/s | corpus | findings | exit |"
    echo "|---|---|---|---|---|---|---|"
    for target in $TARGETS; do cat "$OUT/$target/row.md"; done
} > "$OUT/summary.md"
cat "$OUT/summary.md"
if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    for target in $TARGETS; do
        "$BIN" "$target" -merge=1 -max_len=65536 "Fuzz/corpus/$target" "$OUT/corpus/$target" 2>&1 | grep "MERGE-OUTER: [0-9]* new" | sed "s/^/$target: /"
    done
fi
! grep -qE '\| [1-9][0-9]* \| [0-9]+ \|$' "$OUT/summary.md"
