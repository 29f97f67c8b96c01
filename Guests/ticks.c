/* ticks: a guest for deterministic mode (docs/replay.md). PIT channel 0 at hz=HZ (default 100) and
 * the RTC's update-ended interrupt drive it; it counts PIT ticks in each of seconds=N (default 3)
 * RTC seconds and prints them with the RTC's time, sleeping in HLT in between. Under
 * --deterministic the virtual clock makes every count the PIT's rate (HZ rounded by the reload,
 * so HZ or one less) and the whole output the same in every run of the same recording.
 *   balloon=1  also serves the balloon (inflate to the host's target, statistics) at every tick
 *              and prints its size each second;
 *   tsc=1      first writes bits of the TSC to port 0x80, 16 times: the TSC is not an input the
 *              VMM can record (RDTSC does not exit), so a replay diverges at one of those writes.
 * Exit V = 0 when every second had HZ ticks, give or take one (strict=1: else V = 0x50). */
#include "runtime/virtio.h"

static volatile uint64_t ticks, edges, edge_ticks[64];
static int balloon;

static uint8_t cmos_read(uint8_t index) { outb(SVMM_PORT_CMOS, index); return inb(SVMM_PORT_CMOS + 1); }
static void cmos_write(uint8_t index, uint8_t value) { outb(SVMM_PORT_CMOS, index); outb(SVMM_PORT_CMOS + 1, value); }

static void rtc_irq(unsigned irq) {
    (void)irq;
    if (cmos_read(0x0C) & 0x10) { /* update ended: a second boundary */
        if (edges < 64) edge_ticks[edges] = ticks;
        edges++;
    }
}

static void pit_irq(unsigned irq) { (void)irq; ticks++; }

static unsigned bcd(uint8_t value) { return (value >> 4) * 10 + (value & 0x0F); }

int main(const struct svmm_boot_info *info) {
    uint64_t hz = rt_cmdline_u64("hz", 100), seconds = rt_cmdline_u64("seconds", 3), strict = rt_cmdline_u64("strict", 0);
    balloon = rt_cmdline_u64("balloon", 0) != 0;
    if (seconds > 60) seconds = 60;
    if (hz < 19 || hz > 10000) hz = 100;
    if (!(info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP)) { rt_puts("ticks: needs interrupt controllers\n"); return 0x30; }
    if (rt_cmdline_u64("tsc", 0)) {
        for (int i = 0; i < 16; i++) {
            outb(0x80, (uint8_t)(rdtsc() >> 4));
            for (volatile int spin = 0; spin < 1000 + i * 37; spin++) {}
        }
        rt_puts("ticks: read the TSC\n");
    }
    if (balloon) {
        rt_pages_init(info);
        if (rt_balloon_init(info) != 0) { rt_puts("ticks: no balloon\n"); return 0x31; }
    }
    uint16_t reload = (uint16_t)((SVMM_PIT_HZ + hz / 2) / hz);
    outb(SVMM_PORT_PIT + 3, 0x34); /* channel 0, lo/hi, rate generator */
    outb(SVMM_PORT_PIT, (uint8_t)reload);
    outb(SVMM_PORT_PIT, (uint8_t)(reload >> 8));
    rt_irq_enable(SVMM_IRQ_PIT, pit_irq);
    rt_irq_enable(SVMM_IRQ_RTC, rtc_irq);
    cmos_write(0x0B, (uint8_t)(cmos_read(0x0B) | 0x10)); /* update-ended interrupt */
    (void)cmos_read(0x0C);
    rt_printf("ticks: %lu Hz for %lu seconds\n", hz, seconds);
    uint64_t printed = 1, bad = 0;
    uint64_t expected = (uint64_t)SVMM_PIT_HZ * 1000 / reload; /* ticks per second x 1000 */
    while (printed <= seconds) {
        rt_wait_for_interrupt();
        if (balloon) rt_balloon_poll();
        while (printed < edges && printed <= seconds) {
            uint64_t count = edge_ticks[printed] - edge_ticks[printed - 1];
            if (count * 1000 + 1000 < expected || count * 1000 > expected + 1000) bad++;
            rt_printf("second %lu: %lu ticks at %02u:%02u:%02u", printed, count, bcd(cmos_read(4)), bcd(cmos_read(2)), bcd(cmos_read(0)));
            if (balloon) rt_printf(", balloon %lu pages", rt_balloon.pages);
            rt_puts("\n");
            printed++;
        }
    }
    rt_printf("ticks: %lu ticks in all, %lu seconds off\n", ticks, bad);
    return strict && bad ? 0x50 : 0;
}
