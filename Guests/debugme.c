/* debugme: a kernel-mode-only guest for the debugger and the gdb stub. Everything runs at CPL 0,
 * where breakpoints and single-stepping work on every KVM (on PVM, CPL 3 code runs natively and
 * sees no debug traps; docs/debugging.md). It sums the first `count` Fibonacci numbers in
 * compute(), hands the sum to report(), prints it on COM1 and ends through the debug-exit port:
 * status 1 when the sum is right, 3 when it is not (a debugger that changed registers can tell). */
#include "runtime/kernel.h"

volatile uint64_t count = 10;
volatile uint64_t result;

static void put_decimal(uint64_t value) {
    char digits[24];
    int length = 0;
    do {
        digits[length++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (length > 0) outb(SVMM_PORT_COM1, (uint8_t)digits[--length]);
}

__attribute__((noinline)) uint64_t compute(uint64_t n) {
    uint64_t a = 0, b = 1, sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        sum += a;
        uint64_t next = a + b;
        a = b;
        b = next;
    }
    return sum;
}

/* The sum arrives in rdi: `break report` then `$rdi` is the value to check. */
__attribute__((noinline)) void report(uint64_t sum) {
    result = sum;
    puts_com1("debugme: sum=");
    put_decimal(sum);
    puts_com1("\n");
}

void kmain(void) {
    report(compute(count));
    /* Fibonacci 0..9 sum to 88. */
    outb(SVMM_PORT_DEBUG_EXIT, result == 88 ? 0 : 1);
}
