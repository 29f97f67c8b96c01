/* kmxcsr: kernel-mode (CPL 0) ldmxcsr and stmxcsr with memory operands, the instructions PVM's
 * emulator cannot run and swiftvmm's PVM compatibility layer completes. It loads an MXCSR with
 * round-toward-zero and flush-to-zero set, stores it back and prints both; status 1 when the
 * stored value is the loaded one and a second load/store round trip restores the default. */
#include "runtime/kernel.h"

static void put_hex(uint32_t value) {
    puts_com1("0x");
    for (int shift = 28; shift >= 0; shift -= 4) outb(SVMM_PORT_COM1, (uint8_t)"0123456789abcdef"[(value >> shift) & 0xF]);
}

static uint32_t round_trip(uint32_t value) {
    volatile uint32_t in = value, out = 0;
    __asm__ volatile("ldmxcsr %0" : : "m"(in));
    __asm__ volatile("stmxcsr %0" : "=m"(out));
    return out;
}

void kmain(void) {
    const uint32_t custom = 0x7F80; /* all exceptions masked, round toward zero, flush to zero */
    uint32_t first = round_trip(custom);
    uint32_t second = round_trip(0x1F80);
    puts_com1("mxcsr loaded ");
    put_hex(custom);
    puts_com1(" stored ");
    put_hex(first);
    puts_com1(", default again ");
    put_hex(second);
    puts_com1("\n");
    uint8_t status = (first == custom && second == 0x1F80) ? 0 : 1;
    __asm__ volatile("outb %0, %1" : : "a"(status), "Nd"((uint16_t)SVMM_PORT_DEBUG_EXIT));
    for (;;) __asm__ volatile("hlt");
}
