/* echo: reads COM1 input (polling LSR.DR) and echoes each line back in upper case, prefixed
 * "echo: ". Ends with V = 0 on a line "quit", or after lines=N lines (default 3). */
#include "runtime/rt.h"

static char read_char(void) {
    while (!(inb(SVMM_PORT_COM1 + 5) & 0x01)) cpu_relax(); /* LSR.DR */
    return (char)inb(SVMM_PORT_COM1);
}

int main(const struct svmm_boot_info *info) {
    (void)info;
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
        rt_printf("echo: %s\n", line);
    }
    return 0;
}
