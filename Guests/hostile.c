/* hostile: a guest that attacks the VMM the ways a malicious kernel could, one per `mode=`:
 *   rtc-storm   every vCPU reads CMOS register C in a loop (reads=N each) with the periodic
 *               interrupt at 8192 Hz, racing the VMM's timer thread; exit V = 0 when all finish.
 *   flood       prints lines forever (the VMM must stay stoppable when nobody reads stdout).
 *   mmio-walk   reads count=N distinct unclaimed MMIO addresses (each an exit); exit V = 0.
 * Each mode reports "hostile: MODE done" before it exits. */
#include "runtime/rt.h"

static volatile uint32_t go, finished;
static volatile uint64_t reads;

static uint8_t cmos(uint8_t index) {
    outb(SVMM_PORT_CMOS, index);
    return inb(SVMM_PORT_CMOS + 1);
}

static void rtc_storm(void) {
    for (uint64_t i = 0; i < reads; i++) (void)cmos(0x0C);
    atomic_add_u32(&finished, 1);
}

void ap_main(const struct svmm_boot_info *info, unsigned cpu) {
    (void)info;
    (void)cpu;
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
    rtc_storm();
    for (;;) rt_wait_for_interrupt();
}

static int mode_is(const char *mode, const char *name) {
    size_t length = strlen(name);
    return strncmp(mode, name, length) == 0 && mode[length] == 0;
}

int main(const struct svmm_boot_info *info) {
    (void)info;
    char mode[32] = "";
    rt_cmdline_get("mode", mode, sizeof mode);
    if (mode_is(mode, "rtc-storm")) {
        reads = rt_cmdline_u64("reads", 20000);
        outb(SVMM_PORT_CMOS, 0x0A);
        outb(SVMM_PORT_CMOS + 1, 0x23); /* divider running, rate 3: 8192 Hz */
        outb(SVMM_PORT_CMOS, 0x0B);
        outb(SVMM_PORT_CMOS + 1, 0x42); /* periodic interrupt enabled, 24-hour */
        __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
        rtc_storm();
        while (finished < rt_cpus_online) cpu_relax();
        rt_printf("hostile: rtc-storm done: %u vCPUs read register C %lu times each\n", rt_cpus_online, reads);
        return 0;
    }
    if (mode_is(mode, "flood")) {
        for (uint64_t line = 0;; line++) rt_printf("hostile: flood line %lu of output nobody reads\n", line);
    }
    if (mode_is(mode, "mmio-walk")) {
        uint64_t count = rt_cmdline_u64("count", 4096);
        for (uint64_t i = 0; i < count; i++) (void)*(volatile uint32_t *)(uintptr_t)(0xD0000000ull + i * 8);
        rt_printf("hostile: mmio-walk done: %lu addresses\n", count);
        return 0;
    }
    rt_printf("hostile: unknown mode '%s'\n", mode);
    return 0x7F;
}
