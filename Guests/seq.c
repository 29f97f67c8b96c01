/* seq: a long-running guest for fault tolerance (docs/replay.md): prints "seq N" for N = 1 to
 * count=C (default 400), one line per PIT tick at hz=H (default 200), sleeping in HLT between
 * ticks; then "seq: done" and exit V = 0. Any output lost or repeated across a failover shows as
 * a missing or doubled number. */
#include "runtime/rt.h"

static volatile uint64_t ticks;

static void pit_irq(unsigned irq) { (void)irq; ticks++; }

int main(const struct svmm_boot_info *info) {
    uint64_t hz = rt_cmdline_u64("hz", 200), count = rt_cmdline_u64("count", 400);
    if (hz < 19 || hz > 10000) hz = 200;
    if (!(info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP)) { rt_puts("seq: needs interrupt controllers\n"); return 0x30; }
    uint16_t reload = (uint16_t)((SVMM_PIT_HZ + hz / 2) / hz);
    outb(SVMM_PORT_PIT + 3, 0x34); /* channel 0, lo/hi, rate generator */
    outb(SVMM_PORT_PIT, (uint8_t)reload);
    outb(SVMM_PORT_PIT, (uint8_t)(reload >> 8));
    rt_irq_enable(SVMM_IRQ_PIT, pit_irq);
    rt_printf("seq: %lu lines at %lu Hz\n", count, hz);
    uint64_t printed = 0;
    while (printed < count) {
        rt_wait_for_interrupt();
        while (printed < ticks && printed < count) rt_printf("seq %lu\n", ++printed);
    }
    rt_puts("seq: done\n");
    return 0;
}
