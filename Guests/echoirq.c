/* echoirq: like echo, but the UART's receive interrupt (IRQ 4) fills a ring buffer and main()
 * sleeps until interrupts arrive. Echoes lines=N lines (default 3) upper-cased, or until "quit". */
#include "runtime/rt.h"

static volatile char ring[256];
static volatile uint32_t head, tail;

static void uart_irq(unsigned irq) {
    (void)irq;
    while (inb(SVMM_PORT_COM1 + 5) & 0x01) { /* drain the FIFO */
        char c = (char)inb(SVMM_PORT_COM1);
        if (head - tail < sizeof ring) ring[head++ % sizeof ring] = c;
    }
    (void)inb(SVMM_PORT_COM1 + 2); /* IIR: acknowledge */
}

static char next_char(void) {
    while (tail == head) rt_wait_for_interrupt();
    return ring[tail++ % sizeof ring];
}

int main(const struct svmm_boot_info *info) {
    if (!(info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP)) { rt_puts("echoirq: needs interrupt controllers\n"); return 0x30; }
    rt_irq_enable(SVMM_IRQ_COM1, uart_irq);
    outb(SVMM_PORT_COM1 + 4, 0x0B); /* MCR: DTR, RTS, OUT2 */
    outb(SVMM_PORT_COM1 + 1, 0x01); /* IER: received data */
    uint64_t lines = rt_cmdline_u64("lines", 3);
    rt_puts("echoirq: ready\n");
    for (uint64_t n = 0; n < lines; n++) {
        char line[128];
        unsigned len = 0;
        for (;;) {
            char c = next_char();
            if (c == '\r' || c == '\n') break;
            if (len < sizeof line - 1) line[len++] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
        }
        line[len] = 0;
        if (len == 4 && memcmp(line, "QUIT", 4) == 0) break;
        rt_printf("echoirq: %s (irq4 count %lu)\n", line, rt_irq_count[SVMM_IRQ_COM1]);
    }
    return 0;
}
