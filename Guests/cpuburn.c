/* cpuburn: busy work at CPL 3 with a duty cycle. Each period_ms (default 100) it spins for duty
 * percent of it (default 100) and sleeps the rest in HLT, woken by a 100 Hz timer. The burst starts
 * at a pseudo-random point of each period: with a fixed phase, two guests sharing a pCPU whose
 * bursts happen to line up would fight over it every period (each spin is bounded by wall time, so
 * both get less CPU) while another pair runs side by side, and pCPU usage would depend on start-up
 * timing rather than on placement. Every report
 * seconds (default 5) it prints how many bursts it ran. Runs until the host stops it, or for
 * seconds=S and then exits V = 0. */
#include "runtime/rt.h"

int main(const struct svmm_boot_info *info) {
    uint64_t duty = rt_cmdline_u64("duty", 100), period_ms = rt_cmdline_u64("period_ms", 100);
    uint64_t report = rt_cmdline_u64("report", 5), seconds = rt_cmdline_u64("seconds", 0);
    if (duty > 100) duty = 100;
    if (duty < 100) {
        if (!(info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP)) { rt_puts("cpuburn: duty < 100 needs interrupt controllers\n"); return 0x2F; }
        rt_timer_start(100);
    }
    uint64_t hz = rt_tsc_hz(), period = period_ms * hz / 1000, busy = period * duty / 100;
    uint64_t start = rdtsc(), next_report = start + report * hz, bursts = 0, x = 0x9E3779B97F4A7C15ull;
    uint64_t phase = start | 1; /* xorshift state for burst offsets, different in every guest */
    rt_printf("cpuburn: duty %lu%% of %lu ms at cpl %u\n", duty, period_ms, current_cpl());
    for (uint64_t begin = start;; begin += period) {
        if (busy < period) {
            phase ^= phase << 13; phase ^= phase >> 7; phase ^= phase << 17;
            uint64_t offset = phase % (period - busy);
            while (rdtsc() - begin < offset) rt_wait_for_interrupt();
        }
        for (uint64_t burst = rdtsc(); rdtsc() - burst < busy;) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
        bursts++;
        uint64_t now = rdtsc();
        if (now >= next_report) {
            rt_printf("cpuburn: %lu bursts (%lu s) x=%lx\n", bursts, (now - start) / hz, x & 0xFFFF);
            next_report += report * hz;
        }
        if (seconds && now - start >= seconds * hz) break;
        if (duty < 100) while (rdtsc() - begin < period) rt_wait_for_interrupt();
        if (rdtsc() - begin > 4 * period) begin = rdtsc() - period; /* after a long stall, do not race to catch up */
    }
    return 0;
}
