#!/bin/bash
# make soak: SOAK_VMS VMs (8) in one host-mode process for about SOAK_SECONDS (600), each printing
# numbered lines into its own serial file while its working set is rewritten. Passes when every
# VM's output is byte-exact, the VMM's RSS after warm-up stays within SOAK_RSS_KIB (1024 KiB) of
# its first post-warm-up sample, and its descriptor and thread counts never grow. Prints the
# samples; docs/benchmarks.md records a run.
set -u
cd "$(dirname "$0")/.."
BIN=${SWIFTVMM_BIN:?set SWIFTVMM_BIN (the Makefile does)}
GUESTS=${SWIFTVMM_GUESTS:-$PWD/out/guests}
VMS=${SOAK_VMS:-8} SECONDS_TOTAL=${SOAK_SECONDS:-600} RSS_SLACK=${SOAK_RSS_KIB:-1024}
INTERVAL_MS=100
LINES=$(( SECONDS_TOTAL * 1000 / INTERVAL_MS * 9 / 10 )) # ~90% of the time printing, the rest for slack
DIR=$(mktemp -d /tmp/swiftvmm-soak.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
{
    echo '{ "period": 2, "placement": "load-aware", "memoryPolicy": "none", "vms": ['
    for vm in $(seq 1 "$VMS"); do
        sep=$([ "$vm" -lt "$VMS" ] && echo , || true)
        echo "  { \"name\": \"soak$vm\", \"image\": \"$GUESTS/soak.elf\", \"memory\": \"32M\", \"cmdline\": \"vm=$vm lines=$LINES interval_ms=$INTERVAL_MS touch_kib=512\", \"serial\": \"file:$DIR/soak$vm.out\" }$sep"
    done
    echo '] }'
} > "$DIR/host.json"
echo "soak: $VMS VMs, $LINES lines each every $INTERVAL_MS ms (about $SECONDS_TOTAL s), $BIN"
"$BIN" host "$DIR/host.json" --quiet --duration $(( SECONDS_TOTAL * 3 )) > "$DIR/host.log" 2>&1 &
PID=$!
sample() { # rss_kib fds threads, or nothing once the process is gone (or a zombie)
    local rss
    rss=$(awk '/^VmRSS/ {print $2}' /proc/$PID/status 2>/dev/null)
    [ -n "$rss" ] && echo "$rss $(ls /proc/$PID/fd 2>/dev/null | wc -l) $(ls /proc/$PID/task 2>/dev/null | wc -l)"
}
sleep 30 # warm-up: guests loaded, working sets touched, allocator settled
read -r RSS0 FD0 THREADS0 <<< "$(sample)"
echo "t=30s rss=${RSS0}KiB fds=$FD0 threads=$THREADS0 (baseline)"
FAIL=0 MAXRSS=$RSS0 T=30
while kill -0 $PID 2>/dev/null; do
    sleep 30; T=$((T + 30))
    read -r RSS FD THREADS <<< "$(sample)"
    [ -z "${THREADS:-}" ] && break
    echo "t=${T}s rss=${RSS}KiB fds=$FD threads=$THREADS"
    [ "$RSS" -gt "$MAXRSS" ] && MAXRSS=$RSS
    if [ "$FD" -gt "$FD0" ]; then echo "soak: descriptors grew ($FD0 -> $FD)"; FAIL=1; fi
    if [ "$THREADS" -gt "$THREADS0" ]; then echo "soak: threads grew ($THREADS0 -> $THREADS)"; FAIL=1; fi
done
wait $PID; STATUS=$?
echo "soak: host mode ended with status $STATUS; RSS baseline ${RSS0} KiB, peak ${MAXRSS} KiB (+$((MAXRSS - RSS0)) KiB)"
[ "$STATUS" -eq 0 ] || { echo "soak: host mode failed"; tail -5 "$DIR/host.log"; FAIL=1; }
[ $((MAXRSS - RSS0)) -le "$RSS_SLACK" ] || { echo "soak: RSS grew more than $RSS_SLACK KiB"; FAIL=1; }
for vm in $(seq 1 "$VMS"); do
    awk -v vm="$vm" -v n="$LINES" 'BEGIN { for (i = 1; i <= n; i++) printf "soak: vm=%d line=%d value=%d\n", vm, i, (i * i + vm) % 1000003;
        printf "soak: vm=%d done, 0 memory mismatches\n", vm }' > "$DIR/expected$vm"
    if cmp -s "$DIR/expected$vm" "$DIR/soak$vm.out"; then
        echo "soak$vm: $(wc -c < "$DIR/soak$vm.out") bytes, byte-exact"
    else
        echo "soak$vm: output differs: $(cmp "$DIR/expected$vm" "$DIR/soak$vm.out" 2>&1 | head -1)"; FAIL=1
    fi
done
[ "$FAIL" -eq 0 ] && echo "soak: passed" || echo "soak: FAILED"
exit "$FAIL"
