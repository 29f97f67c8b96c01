/* stealtime: every vCPU keeps busy for seconds=N (default 3) of wall time, then vCPU 0 reports,
 * as PAPI-V's timing calls would, each vCPU's real time, its own CPU time (real less steal) and
 * the steal time KVM recorded for it (runnable, but the host ran something else), with the
 * hypervisor's vendor string (CPUID 0x40000000); real time by the TSC and by kvmclock.
 * Exit V = 0, or 0x30 without steal time.
 *   stealtime: vcpu0 real_ms=3000 cpu_ms=1510 steal_ms=1490 kvmclock_ms=3000 */
#include "runtime/rt.h"

static volatile uint32_t go, finished;
static volatile uint64_t deadline_ticks;
static uint64_t real_ns[RT_MAX_CPUS], steal_ns[RT_MAX_CPUS], clock_ns[RT_MAX_CPUS];

static uint64_t ticks_to_ns(uint64_t ticks, uint64_t hz) {
    return ticks / hz * 1000000000ull + ticks % hz * 1000000000ull / hz;
}

static void burn(unsigned cpu) {
    uint64_t hz = rt_tsc_hz(), start = rdtsc(), steal_start = rt_steal_ns(cpu), clock_start = rt_kvmclock_ns(cpu);
    uint64_t end = start + deadline_ticks;
    volatile uint64_t sink = 0;
    while (rdtsc() < end) for (int i = 0; i < 1000; i++) sink += (uint64_t)i;
    real_ns[cpu] = ticks_to_ns(rdtsc() - start, hz);
    steal_ns[cpu] = rt_steal_ns(cpu) - steal_start;
    clock_ns[cpu] = rt_kvmclock_ns(cpu) - clock_start;
    atomic_add_u32(&finished, 1);
}

void ap_main(const struct svmm_boot_info *info, unsigned cpu) {
    (void)info;
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
    burn(cpu);
    for (;;) rt_wait_for_interrupt();
}

int main(const struct svmm_boot_info *info) {
    uint32_t a, vendor[4] = { 0 };
    rt_cpuid(0x40000000u, 0, &a, &vendor[0], &vendor[1], &vendor[2]);
    rt_printf("stealtime: hypervisor vendor \"%s\", steal time %s, kvmclock %s, %u vCPU(s)\n", (const char *)vendor,
              rt_steal_available() ? "reported by KVM" : "not offered", rt_kvmclock_available() ? "on" : "not offered", info->cpu_count);
    if (!rt_steal_available()) return 0x30;
    deadline_ticks = rt_cmdline_u64("seconds", 3) * rt_tsc_hz();
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    burn(0);
    while (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) < info->cpu_count) cpu_relax();
    for (unsigned cpu = 0; cpu < info->cpu_count && cpu < RT_MAX_CPUS; cpu++) {
        uint64_t steal = steal_ns[cpu] < real_ns[cpu] ? steal_ns[cpu] : real_ns[cpu];
        rt_printf("stealtime: vcpu%u real_ms=%lu cpu_ms=%lu steal_ms=%lu kvmclock_ms=%lu\n", cpu, real_ns[cpu] / 1000000,
                  (real_ns[cpu] - steal) / 1000000, steal_ns[cpu] / 1000000, clock_ns[cpu] / 1000000);
    }
    return 0;
}
