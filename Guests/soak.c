/* soak: prints `lines` numbered lines, one every `interval_ms` milliseconds (halting on PIT ticks
 * in between), each carrying a value the soak script recomputes, and writes then checks a
 * `touch_kib` working set each round; the script compares every byte of the output.
 * cmdline: vm=K lines=N interval_ms=M touch_kib=T */
#include "runtime/rt.h"

static uint8_t work[1 << 20];

int main(const struct svmm_boot_info *info) {
    (void)info;
    uint64_t vm = rt_cmdline_u64("vm", 0), lines = rt_cmdline_u64("lines", 100);
    uint64_t interval = rt_cmdline_u64("interval_ms", 100), touch = rt_cmdline_u64("touch_kib", 256) << 10;
    if (touch > sizeof work) touch = sizeof work;
    rt_timer_start(100);
    int failures = 0;
    for (uint64_t line = 1; line <= lines; line++) {
        uint8_t pattern = (uint8_t)(line * 7 + vm);
        for (uint64_t offset = 0; offset < touch; offset += 64) work[offset] = pattern;
        for (uint64_t offset = 0; offset < touch; offset += 64) failures += work[offset] != pattern;
        rt_printf("soak: vm=%lu line=%lu value=%lu\n", vm, line, (line * line + vm) % 1000003);
        rt_sleep_ns(interval * 1000000);
    }
    rt_printf("soak: vm=%lu done, %d memory mismatches\n", vm, failures);
    return failures ? 1 : 0;
}
