/* smp: every vCPU (started by INIT/SIPI) prints its APIC ID and adds steps=N (default 100000)
 * to a shared counter with atomic increments at CPL 3. vCPU 0 waits for all, then checks the
 * total is exactly cpus * N. Exit V = 0 when it is, 0x20 when a vCPU never came up, else 0x21. */
#include "runtime/rt.h"

static volatile uint64_t counter;
static volatile uint32_t finished;
static volatile uint64_t steps;
static volatile uint32_t go; /* set by vCPU 0 once `steps` is known: APs start before main() */

static unsigned apic_id(void) {
    uint32_t a, b, c, d;
    rt_cpuid(1, 0, &a, &b, &c, &d);
    return b >> 24;
}

static void work(unsigned cpu) {
    rt_printf("smp: vcpu %u has APIC ID %u, at cpl %u\n", cpu, apic_id(), current_cpl());
    for (uint64_t i = 0; i < steps; i++) atomic_add_u64(&counter, 1);
    atomic_add_u32(&finished, 1);
}

void ap_main(const struct svmm_boot_info *info, unsigned cpu) {
    (void)info;
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
    work(cpu);
    for (;;) rt_wait_for_interrupt();
}

int main(const struct svmm_boot_info *info) {
    steps = rt_cmdline_u64("steps", 100000);
    uint32_t cpus = info->cpu_count;
    rt_printf("smp: %u vCPUs online of %u\n", rt_cpus_online, cpus);
    if (rt_cpus_online != cpus) return 0x20;
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    work(0);
    while (finished < cpus) cpu_relax();
    uint64_t expected = steps * cpus;
    rt_printf("smp: counter %lu, expected %lu\n", counter, expected);
    return counter == expected ? 0 : 0x21;
}
