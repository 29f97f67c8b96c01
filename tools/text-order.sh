#!/usr/bin/env bash
# Regenerates tools/startup.order, the order in which the release link places the code that
# `swiftvmm run` executes at start-up (docs/benchmarks.md, "Start-up code in one place").
#
# 1. links the release build with its current order and an lld map;
# 2. runs `swiftvmm run hello.elf` under tools/steptrace, which single-steps every thread and
#    records each instruction address (minutes: one ptrace trap per instruction);
# 3. tools/text-order.py maps those addresses to input sections through the map and writes
#    one symbol per section, in first-execution order;
# 4. relinks with the new order.
# Run it after changes to start-up code; a stale order only costs pages (a symbol the link no
# longer has is skipped), never correctness.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-/opt/swift/usr/bin/swift}
work=out/text-order
mkdir -p "$work"
flags=(-c release -Xswiftc -static-executable -Xswiftc -use-ld=lld
       -Xlinker --symbol-ordering-file="$PWD/tools/startup.order" -Xlinker --no-warn-symbol-ordering
       -Xlinker --no-demangle)
bin="$($SWIFT build "${flags[@]}" --show-bin-path)/swiftvmm"
rm -f "$bin"
$SWIFT build "${flags[@]}" -Xlinker -Map="$PWD/$work/map.txt" --product swiftvmm
gcc -O2 -Wall -o "$work/steptrace" tools/steptrace.c
make --no-print-directory guests >/dev/null
read -r lo size < <(readelf -SW "$bin" | awk '$2 == ".text" { print $4, $6 }')
hi=$(printf '0x%x' $((0x$lo + 0x$size)))
# Only the plain run is traced. Adding a traced `--api-sock` run as a second phase brought that
# run's overhead from 8964 to 7112 KiB but the plain run's from 6096 to 6224 KiB (past the 6 MiB
# goal), so it is left out (docs/benchmarks.md).
trace() {
    local out=$1 status=0
    shift
    "$work/steptrace" "0x$lo" "$hi" "$out" -- "$bin" run out/guests/hello.elf --serial none "$@" || status=$?
    if [ "$status" -ne 1 ]; then
        echo "text-order: traced run ($*) ended with status $status (expected 1)" >&2
        exit 1
    fi
}
trace "$work/rips-run.txt"
python3 tools/text-order.py "$work/map.txt" "$work/rips-run.txt" > "$work/startup.order"
mv "$work/startup.order" tools/startup.order
rm -f "$bin"
make --no-print-directory release
