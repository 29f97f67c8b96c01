#!/usr/bin/env bash
# swiftvmm benchmarks (run by `make bench`): exit throughput against the C exit floor, whole-process
# wall time of `swiftvmm run hello`, and the VMM's memory overhead. Prints the results and a
# Markdown table for docs/benchmarks.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${SWIFTVMM_BIN:?set SWIFTVMM_BIN to the swiftvmm binary}
guests=${SWIFTVMM_GUESTS:-$root/out/guests}
shared=${SHARED_DIR:-$root/../shared}
exits=${BENCH_EXITS:-200000}
rounds=${BENCH_ROUNDS:-5}
hello_runs=${BENCH_HELLO_RUNS:-30}
cpu=${BENCH_CPU:-1}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | head -n 1; }

mkdir -p "$root/out/bench"
floor_bin="$root/out/bench/exit_floor"
gcc -O2 -pthread "$shared/bench/exit_floor.c" -o "$floor_bin"

echo "== exit throughput: $exits port writes, $rounds alternated rounds, pinned to CPU $cpu"
floor_rates=() vmm_rates=()
for round in $(seq 1 "$rounds"); do
    floor_line=$("$floor_bin" io "$exits" x "$cpu")
    echo "$floor_line" | grep -q "ok=true" || { echo "exit_floor failed: $floor_line"; exit 1; }
    floor_rates+=("$(echo "$floor_line" | field exits_per_s)")
    vmm_line=$(taskset -c "$cpu" "$bin" run --entry real --irqchip none "$guests/portloop.bin" --serial none --stats 2>&1 | grep "^vcpu0:")
    vmm_exits=$(echo "$vmm_line" | field exits)
    [ "$vmm_exits" -eq $((exits + 1)) ] || { echo "swiftvmm saw $vmm_exits exits, expected $((exits + 1))"; exit 1; }
    vmm_rates+=("$(echo "$vmm_line" | field exits_per_s)")
    echo "  round $round: exit_floor ${floor_rates[-1]}/s  swiftvmm ${vmm_rates[-1]}/s"
done
floor_median=$(printf '%s\n' "${floor_rates[@]}" | median)
vmm_median=$(printf '%s\n' "${vmm_rates[@]}" | median)
ratio=$(awk -v v="$vmm_median" -v f="$floor_median" 'BEGIN { printf "%.3f", v / f }')
echo "  median: exit_floor $floor_median/s  swiftvmm $vmm_median/s  ratio $ratio (target >= 0.98)"

echo "== the API's cost: the same loop with --api-sock (serving nobody), $rounds rounds"
api_rates=()
for round in $(seq 1 "$rounds"); do
    api_line=$(taskset -c "$cpu" "$bin" run --entry real --irqchip none "$guests/portloop.bin" --serial none --stats \
        --api-sock "$root/out/bench/api.sock" 2>&1 | grep "^vcpu0:")
    api_rates+=("$(echo "$api_line" | field exits_per_s)")
    echo "  round $round: with --api-sock ${api_rates[-1]}/s"
done
api_median=$(printf '%s\n' "${api_rates[@]}" | median)
api_ratio=$(awk -v v="$api_median" -v f="$vmm_median" 'BEGIN { printf "%.3f", v / f }')
api_memory=$("$bin" run "$guests/hello.elf" --serial none --stats --api-sock "$root/out/bench/api.sock" 2>&1 | grep "^memory:" || true)
api_anon=$(echo "$api_memory" | field anon_overhead_kib)
echo "  median $api_median/s (ratio $api_ratio to without); $api_memory"

echo "== exit tracing cost: the same loop traced with a filter that selects nothing, and with every exit written to a file"
miss_rates=() file_rates=()
for round in $(seq 1 "$rounds"); do
    miss_line=$(taskset -c "$cpu" "$bin" run --entry real --irqchip none "$guests/portloop.bin" --serial none --stats \
        --trace-exits=hlt 2>&1 | grep "^vcpu0:")
    miss_rates+=("$(echo "$miss_line" | field exits_per_s)")
    file_line=$(taskset -c "$cpu" "$bin" run --entry real --irqchip none "$guests/portloop.bin" --serial none --stats \
        --trace-exits=io --trace-file "$root/out/bench/trace.txt" 2>&1 | grep "^vcpu0:")
    file_rates+=("$(echo "$file_line" | field exits_per_s)")
    traced=$(wc -l < "$root/out/bench/trace.txt")
    [ "$traced" -eq "$exits" ] || { echo "trace file has $traced lines, expected $exits"; exit 1; }
    echo "  round $round: filter miss ${miss_rates[-1]}/s  traced to file ${file_rates[-1]}/s"
done
rm -f "$root/out/bench/trace.txt"
miss_median=$(printf '%s\n' "${miss_rates[@]}" | median)
file_median=$(printf '%s\n' "${file_rates[@]}" | median)
miss_ratio=$(awk -v v="$miss_median" -v f="$vmm_median" 'BEGIN { printf "%.3f", v / f }')
file_ratio=$(awk -v v="$file_median" -v f="$vmm_median" 'BEGIN { printf "%.3f", v / f }')
echo "  median: filter miss $miss_median/s (ratio $miss_ratio to untraced), traced to file $file_median/s (ratio $file_ratio)"

# Median and maximum whole-process wall time (ms) of `swiftvmm run IMAGE`, which must end with status 1.
wall_times() {
    local image=$1 times=() status start end
    for run in $(seq 1 "$hello_runs"); do
        start=$(date +%s%N)
        status=0
        "$bin" run "$image" --serial none || status=$?
        end=$(date +%s%N)
        [ "$status" -eq 1 ] || { echo "$image ended with status $status" >&2; exit 1; }
        times+=("$(awk -v n=$((end - start)) 'BEGIN { printf "%.2f", n / 1e6 }')")
    done
    echo "$(printf '%s\n' "${times[@]}" | median) $(printf '%s\n' "${times[@]}" | sort -n | tail -n 1)"
}

echo "== whole-process wall time of swiftvmm run hello.elf ($hello_runs runs)"
times=$(wall_times "$guests/hello.elf")
read -r hello_median hello_max <<< "$times"
echo "  median ${hello_median} ms, max ${hello_max} ms (target < 25 ms)"

echo "== start-up CPU: swiftvmm run hello.elf against exit_floor io 100 (the same VM lifecycle in C), $hello_runs runs each"
cpu_hello=$(python3 "$here/cpu.py" "$hello_runs" 1 "$bin" run "$guests/hello.elf" --serial none)
cpu_floor=$(python3 "$here/cpu.py" "$hello_runs" 0 "$floor_bin" io 100 x "$cpu")
hello_cpu=$(echo "$cpu_hello" | field median_cpu_ms)
floor_cpu=$(echo "$cpu_floor" | field median_cpu_ms)
echo "  swiftvmm: $cpu_hello"
echo "  exit_floor: $cpu_floor"
task_clock="not measured (no perf)"
if command -v perf > /dev/null && perf stat -e task-clock true > /dev/null 2>&1; then
    # perf counts from exec to exit of the program itself; rusage above adds the kernel's exec and teardown.
    # (perf stat exits with the program's status, 1 here: the pipeline's status is awk's.)
    task_clock=$( (perf stat -x, -r "$hello_runs" -e task-clock "$bin" run "$guests/hello.elf" --serial none 2>&1 >/dev/null || true) |
        awk -F, '/task-clock/ { printf "%.2f ms", $1 }')
    echo "  swiftvmm task-clock (perf stat): $task_clock"
fi

echo "== whole-process wall time of a trivial multiboot kernel, mbkludge.bin ($hello_runs runs)"
times=$(wall_times "$guests/mbkludge.bin")
read -r multiboot_median multiboot_max <<< "$times"
echo "  median ${multiboot_median} ms, max ${multiboot_max} ms"

echo "== memory while running hello.elf"
memory_line=$("$bin" run "$guests/hello.elf" --serial none --stats 2>&1 | grep "^memory:" || true)
echo "  $memory_line"
peak=$(echo "$memory_line" | field peak_rss_kib)
guest=$(echo "$memory_line" | field guest_resident_kib)
overhead=$(echo "$memory_line" | field " overhead_kib")
anon_overhead=$(echo "$memory_line" | field anon_overhead_kib)
file=$(echo "$memory_line" | field file_kib)

echo "== interrupt delivery: PIT channel 0 ticks seen by the timer guest (TSC-timed)"
irq_rows=""
for hz in 1000 10000; do
    line=$("$bin" run "$guests/timer.elf" --serial stdio --cmdline "bench=$hz seconds=3" | grep "^timer-bench:" || true)
    [ -n "$line" ] || { echo "timer guest produced no bench line at $hz Hz"; exit 1; }
    echo "  $line"
    achieved=$(echo "$line" | sed -n 's/.*achieved \([0-9.]*\) Hz.*/\1/p')
    p50=$(echo "$line" | sed -n 's/.*p50 \([0-9]*\) ns.*/\1/p')
    p99=$(echo "$line" | sed -n 's/.*p99 \([0-9]*\) ns.*/\1/p')
    irq_rows="$irq_rows| PIT channel 0 at $hz Hz: achieved rate, interval p50 / p99 | $achieved Hz, $((p50 / 1000)) us / $((p99 / 1000)) us | |
"
done

echo "== balloon: 512 MiB inflate and deflate on a 1 GiB memhog guest"
balloon_lines=$("$(dirname "$bin")/swiftvmm-balloon-bench" "$guests")
echo "$balloon_lines" | sed 's/^/  /'
inflate=$(echo "$balloon_lines" | sed -n 's/.*inflate 512 MiB in .* = \([0-9]*\) MiB\/s.*/\1/p')
release=$(echo "$balloon_lines" | sed -n 's/.*host release .* = \([0-9]*\) MiB\/s.*/\1/p')
deflate=$(echo "$balloon_lines" | sed -n 's/.*deflate 512 MiB in .* = \([0-9]*\) MiB\/s.*/\1/p')
freed=$(echo "$balloon_lines" | sed -n 's/.*freed per MiB ballooned: \([0-9.]*\) MiB.*/\1/p')

python3 "$here/host.py" "$bin" "$guests"

cat <<TABLE

| measure | result | target |
|---|---|---|
| exit throughput, exit_floor (C) | $floor_median exits/s | reference |
| exit throughput, swiftvmm | $vmm_median exits/s | |
| ratio swiftvmm / exit_floor | $ratio | >= 0.98 |
| exit throughput with --api-sock (no client) | $api_median exits/s, ratio $api_ratio to without | ~1 |
| private (anonymous) overhead with --api-sock | $api_anon KiB (without: $anon_overhead KiB) | +1024 KiB at most |
| exit tracing, filter selects nothing (--trace-exits=hlt) | $miss_median exits/s, ratio $miss_ratio to untraced | |
| exit tracing, every exit to a file | $file_median exits/s, ratio $file_ratio to untraced | |
| swiftvmm run hello.elf, median wall time | $hello_median ms (max $hello_max) | < 25 ms |
| swiftvmm run mbkludge.bin (multiboot, to its exit), median wall time | $multiboot_median ms (max $multiboot_max) | |
| start-up CPU, run hello.elf (rusage: exec to reaped, every thread) | $hello_cpu ms (exit_floor io 100: $floor_cpu ms) | < 10 ms |
| start-up CPU, run hello.elf (perf task-clock) | $task_clock | |
| peak RSS / guest pages resident | $peak KiB / $guest KiB | |
| overhead: peak RSS - guest pages | $overhead KiB (of which file-backed code: $file KiB) | < 6144 KiB |
| private (anonymous) overhead | $anon_overhead KiB | |
$irq_rows| balloon inflate / deflate, guest-driven end to end | $inflate / $deflate MiB/s | |
| balloon host-side release (MADV_DONTNEED) alone | $release MiB/s | |
| guest RAM freed per MiB ballooned | $freed MiB | >= 0.99 |
TABLE

echo "== page sharing (KSM) and steal time (bench/sharing.py: ksmd's settings raised, then put back)"
python3 "$here/sharing.py" "$bin" "$guests"

echo "== snapshots: create and restore against RAM size (bench/snapshot.py)"
python3 "$here/snapshot.py" "$bin" "$guests"

echo "== live migration over loopback TCP: pre-copy against naive, by dirty rate (bench/migration.py)"
python3 "$here/migration.py" "$bin" "$guests"

echo "== file hypercalls: PostMark natively and as a guest over --share (bench/postmark.py)"
python3 "$here/postmark.py" "$bin" "$guests"

echo "== virtio-blk: 4 KiB requests from a test kernel against native reads (bench/disk.py)"
python3 "$here/disk.py" "$bin" "$guests"

echo "== virtio-net: ping round trips and echo frames per second over a tap (bench/net.py)"
python3 "$here/net.py" "$bin" "$guests"

echo "== record/replay and fault tolerance: exit throughput, log size, replay speed, the output rule, failover (bench/replay.py)"
python3 "$here/replay.py" "$bin" "$guests"
