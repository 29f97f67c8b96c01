/* echo: reads COM1 input and echoes each line back upper-cased, "echo: LINE". Ends with V = 0 on a
 * line "quit" or after lines=N lines (default 3). By default it polls LSR.DR; with irq=1 the
 * UART's receive interrupt (IRQ 4) fills a ring buffer and main() sleeps until interrupts come. */
#include "runtime/rt.h"

static volatile char ring[256];
static volatile uint32_t head, tail;
static int use_irq;

static void uart_irq(unsigned irq) {
    (void)irq;
    while (inb(SVMM_PORT_COM1 + 5) & 0x01) { /* drain the FIFO */
        char c = (char)inb(SVMM_PORT_COM1);
        if (head - tail < sizeof ring) ring[head++ % sizeof ring] = c;
    }
    (void)inb(SVMM_PORT_COM1 + 2); /* IIR: acknowledge */
}

static char read_char(void) {
    if (use_irq) {
        while (tail == head) rt_wait_for_interrupt();
        return ring[tail++ % sizeof ring];
    }
    while (!(inb(SVMM_PORT_COM1 + 5) & 0x01)) cpu_relax(); /* LSR.DR */
    return (char)inb(SVMM_PORT_COM1);
}

int main(const struct svmm_boot_info *info) {
    use_irq = rt_cmdline_u64("irq", 0) != 0;
    if (use_irq) {
        if (!(info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP)) { rt_puts("echo: irq=1 needs interrupt controllers\n"); return 0x30; }
        rt_irq_enable(SVMM_IRQ_COM1, uart_irq);
        outb(SVMM_PORT_COM1 + 4, 0x0B); /* MCR: DTR, RTS, OUT2 */
        outb(SVMM_PORT_COM1 + 1, 0x01); /* IER: received data */
    }
    uint64_t lines = rt_cmdline_u64("lines", 3);
    rt_puts("echo: ready\n");
    for (uint64_t n = 0; n < lines; n++) {
        char line[128];
        unsigned len = 0;
        for (;;) {
            char c = read_char();
            if (c == '\r' || c == '\n') break;
            if (len < sizeof line - 1) line[len++] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
        }
        line[len] = 0;
        if (len == 4 && memcmp(line, "QUIT", 4) == 0) break;
        if (use_irq) rt_printf("echo: %s (irq4 count %lu)\n", line, rt_irq_count[SVMM_IRQ_COM1]);
        else rt_printf("echo: %s\n", line);
    }
    return 0;
}
