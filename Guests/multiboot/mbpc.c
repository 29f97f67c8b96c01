/* mbpc: the PC a QEMU-style multiboot test kernel expects (issue: PC fidelity), checked from
 * CPL 0 in 32-bit protected mode. Each part runs when named in tests= (default: all but s3):
 *   acpi     finds the RSDP in the BIOS area (0xE0000-0xFFFFF), checks every table's checksum,
 *            walks RSDT and XSDT to the FADT, DSDT (\_S3, \_S5), FACS and MADT, prints the
 *            FADT's PM blocks
 *   pmtimer  the ACPI PM timer's rate against the PIT (channel 2 gated for 50 ms, five rounds,
 *            each a bracket of PM readings; the narrowest decides)
 *   backdoor the VMware backdoor's GETVERSION (backdoor=1: expect an answer; else all-ones)
 *   int      int $0x40 and int $0x81 through our IDT, and int $0x42 whose handler returns with IRET
 *   ud       instructions the CPU must reject with #UD: register-form movbe, xgetbv with
 *            CR4.OSXSAVE clear, and invpcid, rdpru, clwb when CPUID does not offer them
 *   cpuid    prints the signature at 0x40000000 and 0x40000100
 *   s5       powers off through PM1a control (SLP_TYP = \_S5): status 0
 *   s3       suspends to RAM (wake=rtc: the RTC alarm 2 s ahead; wake=button: waits for the
 *            power button), wakes through the FACS waking vector at 0x8000, checks 1 MiB of
 *            memory it filled before sleeping, and the wake status bits
 * Prints "ok"/"FAIL" lines; V = 0 or 0x40 + failures. */
#include "mbrt.h"

static int failures;
static void check(int ok, const char *what) {
    mb_printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

static int has_test(const char *tests, const char *name) {
    size_t n = mb_strlen(name);
    for (const char *p = tests; *p;) {
        const char *end = p;
        while (*end && *end != ',') end++;
        if ((size_t)(end - p) == n && mb_memcmp(p, name, n) == 0) return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

static uint8_t sum(const void *p, uint32_t n) {
    uint8_t s = 0;
    for (uint32_t i = 0; i < n; i++) s += ((const uint8_t *)p)[i];
    return s;
}

static uint32_t rd32(const void *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }

/* ---- ACPI ---- */

static const uint8_t *rsdp, *fadt, *facs, *dsdt;

static const uint8_t *find_rsdp(void) {
    for (uint32_t a = 0xE0000; a < 0x100000; a += 16)
        if (mb_memcmp((const void *)a, "RSD PTR ", 8) == 0) return (const uint8_t *)a;
    return 0;
}

static int table_ok(const uint8_t *t, const char *signature) {
    return t && mb_memcmp(t, signature, 4) == 0 && sum(t, rd32(t + 4)) == 0;
}

static void test_acpi(void) {
    rsdp = find_rsdp();
    check(rsdp != 0, "acpi: RSDP in the BIOS area");
    if (!rsdp) return;
    check(((uint32_t)rsdp & 15) == 0 && sum(rsdp, 20) == 0 && rsdp[15] == 2 && sum(rsdp, 36) == 0, "acpi: RSDP checksums, revision 2");
    const uint8_t *rsdt = (const uint8_t *)rd32(rsdp + 16), *xsdt = (const uint8_t *)rd32(rsdp + 24);
    check(table_ok(rsdt, "RSDT"), "acpi: RSDT");
    check(table_ok(xsdt, "XSDT"), "acpi: XSDT");
    const uint8_t *madt = 0;
    for (uint32_t off = 36; rsdt && off < rd32(rsdt + 4); off += 4) {
        const uint8_t *t = (const uint8_t *)rd32(rsdt + off);
        if (mb_memcmp(t, "FACP", 4) == 0) fadt = t;
        if (mb_memcmp(t, "APIC", 4) == 0) madt = t;
    }
    check(table_ok(fadt, "FACP") && rd32(fadt + 4) >= 244, "acpi: FADT through the RSDT");
    check(table_ok(madt, "APIC"), "acpi: MADT");
    if (!fadt) return;
    check(rd32(xsdt + 36) == (uint32_t)fadt, "acpi: the XSDT names the same FADT");
    check(!(rd32(fadt + 112) & (1u << 20)), "acpi: a full FADT (not hardware-reduced)");
    facs = (const uint8_t *)rd32(fadt + 36);
    dsdt = (const uint8_t *)rd32(fadt + 40);
    check(facs && mb_memcmp(facs, "FACS", 4) == 0 && rd32(facs + 4) == 64 && ((uint32_t)facs & 63) == 0, "acpi: FACS, 64-byte aligned");
    check(table_ok(dsdt, "DSDT"), "acpi: DSDT");
    int s3 = 0, s5 = 0;
    for (uint32_t i = 36; dsdt && i + 4 <= rd32(dsdt + 4); i++) {
        if (mb_memcmp(dsdt + i, "_S3_", 4) == 0) s3 = 1;
        if (mb_memcmp(dsdt + i, "_S5_", 4) == 0) s5 = 1;
    }
    check(s3 && s5, "acpi: DSDT has \\_S3 and \\_S5");
    uint32_t pm1a_evt = rd32(fadt + 56), pm1a_cnt = rd32(fadt + 64), pm_tmr = rd32(fadt + 76);
    mb_printf("acpi: pm1a_evt=0x%x pm1a_cnt=0x%x pm_tmr=0x%x sci=%u flags=0x%x reset=0x%x/0x%x\n", pm1a_evt, pm1a_cnt, pm_tmr,
              fadt[46], rd32(fadt + 112), rd32(fadt + 120), fadt[128]);
    check(pm1a_evt && pm1a_cnt && pm_tmr && fadt[88] == 4 && fadt[89] == 2 && fadt[91] == 4, "acpi: PM1a blocks and PM timer");
    check((rd32(fadt + 112) & (1u << 8)) && (rd32(fadt + 112) & (1u << 10)), "acpi: 32-bit timer, reset register supported");
    check((inw(pm1a_cnt) & 1) == 1, "acpi: SCI_EN reads 1");
}


/* ---- PM timer against the PIT ---- */

static uint32_t pm_timer_port(void) { return fadt ? rd32(fadt + 76) : 0x628; }

/* One 50 ms window of PIT channel 2 (mode 0, 59659 counts; OUT2, port 0x61 bit 5, rises at the
 * end) measured in PM timer ticks, as a bracket: the gate went on between two PM readings and
 * OUT2 rose between the last reading that saw it low and the one after it was seen high, so the
 * true length lies in [*low, *high]. A vCPU the host preempts mid-window widens the bracket
 * instead of skewing the result. */
static void pit_gate_window(uint32_t *low, uint32_t *high) {
    uint32_t port = pm_timer_port();
    outb(0x61, (inb(0x61) & ~0x03) | 0x00);
    outb(0x43, 0xB0);
    outb(0x42, 59659 & 0xFF);
    outb(0x42, 59659 >> 8);
    uint32_t before_gate = inl((uint16_t)port);
    outb(0x61, (inb(0x61) & ~0x02) | 0x01); /* gate on, speaker off */
    uint32_t after_gate = inl((uint16_t)port), last_low = after_gate;
    for (;;) {
        uint32_t now = inl((uint16_t)port);
        if (inb(0x61) & 0x20) break;
        last_low = now;
    }
    uint32_t seen_high = inl((uint16_t)port);
    outb(0x61, inb(0x61) & ~0x01);
    *low = last_low - after_gate;
    *high = seen_high - before_gate;
}

static void test_pm_timer(void) {
    uint32_t best_low = 0, best_high = ~0u;
    for (int i = 0; i < 5; i++) {
        uint32_t low, high;
        pit_gate_window(&low, &high);
        if (high - low < best_high - best_low) { best_low = low; best_high = high; }
    }
    uint32_t expected = 178977; /* 3579545 Hz x 50 ms */
    mb_printf("pmtimer: %u to %u ticks in 50 ms of PIT (narrowest of 5 brackets; expected %u): about %u Hz\n", best_low, best_high,
              expected, (best_low / 2 + best_high / 2) * 20);
    /* The VMM's two clocks agree when the expected count is within 2% of the bracket. */
    check(best_high > expected - expected / 50 && best_low < expected + expected / 50, "pmtimer: 3.579545 MHz within 2% of the PIT");
}

/* ---- the VMware backdoor ---- */

static void test_backdoor(int expect) {
    uint32_t a = 0x564D5868, b = 0, c = 10, d = 0x5658;
    __asm__ volatile("inl %%dx, %%eax" : "+a"(a), "+b"(b), "+c"(c), "+d"(d));
    mb_printf("backdoor: eax=0x%x ebx=0x%x ecx=0x%x\n", a, b, c);
    if (expect) check(a == 6 && b == 0x564D5868 && c == 2, "backdoor: GETVERSION answers version 6 with the magic");
    else check(a == 0xFFFFFFFF && b == 0, "backdoor: without --vmware-backdoor the port is unclaimed");
}

/* ---- IDT: int imm8 and #UD ---- */

struct idt_gate { uint16_t offset_low, selector; uint8_t zero, type; uint16_t offset_high; } __attribute__((packed));
static struct idt_gate idt[0x100];
volatile uint32_t int40_count, int81_count, int42_count, ud_count, ud_skip, int_flags;
extern char int40_stub[], int81_stub[], int42_stub[], ud_stub[];
/* The handlers return without IRET, which PVM's emulator cannot run in 32-bit mode (mbentry.S's
 * irq_return explains): the EIP, CS, EFLAGS frame becomes EFLAGS, EIP for POPF and RET. */
__asm__(".text\n"
        "int40_stub: incl int40_count\n pushfl\n popl int_flags\n jmp frame_return\n"
        "int81_stub: incl int81_count\n jmp frame_return\n"
        "int42_stub: incl int42_count\n iret\n" /* a real IRET: completed by the PVM layer there */
        "ud_stub: incl ud_count\n pushl %eax\n movl ud_skip, %eax\n addl %eax, 4(%esp)\n popl %eax\n jmp frame_return\n"
        "frame_return: pushl %eax\n movl 4(%esp), %eax\n xchgl 12(%esp), %eax\n movl %eax, 8(%esp)\n popl %eax\n"
        " addl $4, %esp\n popfl\n ret\n");

static void set_gate(int vector, void *handler, uint8_t type) {
    uint32_t address = (uint32_t)handler;
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    idt[vector] = (struct idt_gate){ (uint16_t)address, cs, 0, type, (uint16_t)(address >> 16) };
}

static void load_idt(void) {
    set_gate(0x40, int40_stub, 0x8E); /* interrupt gate: IF cleared in the handler */
    set_gate(0x81, int81_stub, 0x8F); /* trap gate */
    set_gate(0x42, int42_stub, 0x8E);
    set_gate(6, ud_stub, 0x8E);
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) idtr = { sizeof idt - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

static void test_int(void) {
    __asm__ volatile("sti");
    __asm__ volatile("int $0x40" ::: "memory");
    __asm__ volatile("int $0x81" ::: "memory");
    __asm__ volatile("int $0x81" ::: "memory");
    __asm__ volatile("cli");
    check(int40_count == 1, "int: int $0x40 reached its handler once");
    check(!(int_flags & 0x200), "int: an interrupt gate cleared IF");
    check(int81_count == 2, "int: int $0x81 (a trap gate) twice, returning to the next instruction");
    uint32_t flags_before, flags_after;
    __asm__ volatile("pushfl; popl %0; int $0x42; pushfl; popl %1" : "=r"(flags_before), "=r"(flags_after) :: "memory");
    check(int42_count == 1 && flags_before == flags_after, "int: a handler's IRET returns with the flags restored");
}

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

#define EXPECT_UD(name, length, bytes)                                                              \
    do {                                                                                           \
        uint32_t before = ud_count;                                                                \
        ud_skip = length;                                                                          \
        __asm__ volatile(".byte " bytes ::"a"(0x100000) : "memory");                               \
        check(ud_count == before + 1, "ud: " name " raised #UD");                                  \
    } while (0)

static void test_ud(void) {
    uint32_t a, b, c, d;
    cpuid(7, 0, &a, &b, &c, &d);
    uint32_t leaf7 = b;
    cpuid(0x80000000, 0, &a, &b, &c, &d);
    uint32_t rdpru = 0;
    if (a >= 0x80000008) { cpuid(0x80000008, 0, &a, &b, &c, &d); rdpru = b & (1u << 4); }
    uint32_t cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    EXPECT_UD("movbe eax, eax (register form)", 4, "0x0f, 0x38, 0xf0, 0xc0");
    if (!(cr4 & (1u << 18))) EXPECT_UD("xgetbv with CR4.OSXSAVE clear", 3, "0x0f, 0x01, 0xd0");
    if (!(leaf7 & (1u << 10))) EXPECT_UD("invpcid (not offered)", 5, "0x66, 0x0f, 0x38, 0x82, 0x00");
    else mb_printf("ud: invpcid is offered here: not tried\n");
    if (!rdpru) EXPECT_UD("rdpru (not offered)", 3, "0x0f, 0x01, 0xfd");
    else mb_printf("ud: rdpru is offered here: not tried\n");
    if (!(leaf7 & (1u << 24))) EXPECT_UD("clwb (not offered)", 4, "0x66, 0x0f, 0xae, 0x30");
    else mb_printf("ud: clwb is offered here: not tried\n");
}

static void test_cpuid_vendor(void) {
    uint32_t a, s[3];
    char text[13];
    for (uint32_t leaf = 0x40000000; leaf <= 0x40000100; leaf += 0x100) {
        cpuid(leaf, 0, &a, &s[0], &s[1], &s[2]);
        __builtin_memcpy(text, s, 12);
        text[12] = 0;
        for (int i = 0; i < 12; i++) if (text[i] < 32 || text[i] > 126) text[i] = '.';
        mb_printf("cpuid: 0x%x max=0x%x signature=%s\n", leaf, a, text);
    }
}

/* ---- S3 ---- */

extern char wake_trampoline[], wake_trampoline_end[];
__asm__(".text\n .code16\n"
        "wake_trampoline:\n"
        " cli\n"
        " movw %cs, %ax\n movw %ax, %ds\n"
        " lgdtl %ds:(wake_gdtr - wake_trampoline)\n"
        " movl %cr0, %eax\n orl $1, %eax\n movl %eax, %cr0\n"
        " ljmpl $0x08, $wake32\n"
        "wake_gdtr: .word 23\n .long wake_gdt\n"
        "wake_trampoline_end:\n"
        " .code32\n"
        "wake32:\n"
        " movw $0x10, %ax\n movw %ax, %ds\n movw %ax, %es\n movw %ax, %ss\n movw %ax, %fs\n movw %ax, %gs\n"
        " movl $wake_stack_top, %esp\n"
        " call mb_resumed\n"
        "1: hlt\n jmp 1b\n"
        ".data\n .align 8\n"
        "wake_gdt: .quad 0\n .quad 0x00CF9A000000FFFF\n .quad 0x00CF92000000FFFF\n"
        ".bss\n .align 16\n .space 8192\n wake_stack_top:\n"
        ".text\n");

#define PATTERN_BASE 0x400000u
#define PATTERN_WORDS (1u << 18) /* 1 MiB */
static volatile uint32_t pattern_sum, slept, wake_mode_button;
static uint16_t pm1a_evt_port, pm1a_cnt_port;

static uint8_t cmos(uint8_t reg) { outb(0x70, reg); return inb(0x71); }
static void cmos_write(uint8_t reg, uint8_t v) { outb(0x70, reg); outb(0x71, v); }
static uint32_t bcd(uint8_t v) { return (v & 15) + (v >> 4) * 10; }

static uint32_t memory_sum(void) {
    uint32_t s = 0;
    for (uint32_t i = 0; i < PATTERN_WORDS; i++) s = s * 31 + ((volatile uint32_t *)PATTERN_BASE)[i];
    return s;
}

void mb_resumed(void);
void mb_resumed(void) {
    uint16_t status = inw(pm1a_evt_port);
    mb_printf("s3: resumed at the waking vector, PM1 status 0x%x\n", status);
    check(slept == 1, "s3: the kernel's memory survived (the flag set before sleeping)");
    check(memory_sum() == pattern_sum, "s3: 1 MiB filled before sleeping reads back unchanged");
    check(status & 0x8000, "s3: WAK_STS set");
    if (wake_mode_button) check(status & 0x100, "s3: PWRBTN_STS set (woken by the power button)");
    else check(status & 0x400, "s3: RTC_STS set (woken by the RTC alarm)");
    (void)cmos(0x0C); /* acknowledge the RTC */
    outw(pm1a_evt_port, 0x8500); /* clear WAK_STS, RTC_STS, PWRBTN_STS */
    check((inw(pm1a_evt_port) & 0x8500) == 0, "s3: status bits clear when written with 1");
    mb_printf("mbpc: %u failures\n", (uint32_t)failures);
    mb_exit(failures ? 0x40 + (uint32_t)failures : 0, 1);
}

static void test_s3(int button) {
    if (!fadt) { check(0, "s3: needs the FADT (tests=acpi,s3)"); return; }
    pm1a_evt_port = (uint16_t)rd32(fadt + 56);
    pm1a_cnt_port = (uint16_t)rd32(fadt + 64);
    wake_mode_button = (uint32_t)button;
    volatile uint8_t *low = (volatile uint8_t *)0x8000;
    for (uint32_t i = 0; i < (uint32_t)(wake_trampoline_end - wake_trampoline); i++) low[i] = (uint8_t)wake_trampoline[i];
    *(volatile uint32_t *)(facs + 12) = 0x8000; /* firmware waking vector: CS 0x800, IP 0 */
    for (uint32_t i = 0; i < PATTERN_WORDS; i++) ((volatile uint32_t *)PATTERN_BASE)[i] = i * 2654435761u;
    pattern_sum = memory_sum();
    slept = 1;
    if (!button) {
        /* The RTC alarm two seconds ahead (hours and minutes: don't care), AIE on, RTC_EN on. */
        while (cmos(0x0A) & 0x80) {}
        uint32_t seconds = cmos(0x0B) & 0x04 ? cmos(0x00) : bcd(cmos(0x00));
        uint32_t alarm = (seconds + 2) % 60;
        cmos_write(0x01, cmos(0x0B) & 0x04 ? (uint8_t)alarm : (uint8_t)((alarm / 10) << 4 | alarm % 10));
        cmos_write(0x03, 0xC0);
        cmos_write(0x05, 0xC0);
        (void)cmos(0x0C);
        cmos_write(0x0B, cmos(0x0B) | 0x20);
        outw(pm1a_evt_port + 2, 0x0400);
        mb_printf("s3: sleeping until the RTC alarm at second %u\n", alarm);
    } else {
        mb_printf("s3: sleeping until the power button\n");
    }
    outw(pm1a_cnt_port, (uint16_t)(1u << 10 | 1u << 13)); /* SLP_TYP = 1 (\_S3), SLP_EN */
    for (;;) __asm__ volatile("hlt"); /* not reached: the VMM parks the vCPUs at the write */
}

void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0);
void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0) {
    (void)magic; (void)eflags; (void)cr0;
    const char *cmdline = (info->flags & 4) ? (const char *)info->cmdline : "";
    char tests[128], value[16];
    if (!mb_cmdline_value(cmdline, "tests", tests, sizeof tests)) __builtin_memcpy(tests, "acpi,pmtimer,backdoor,int,ud,cpuid", 35);
    load_idt();
    if (has_test(tests, "acpi")) test_acpi();
    if (has_test(tests, "pmtimer")) test_pm_timer();
    if (has_test(tests, "backdoor")) test_backdoor(mb_cmdline_value(cmdline, "backdoor", value, sizeof value) && value[0] == '1');
    if (has_test(tests, "int")) test_int();
    if (has_test(tests, "ud")) test_ud();
    if (has_test(tests, "cpuid")) test_cpuid_vendor();
    if (has_test(tests, "s5") && fadt) {
        mb_printf("s5: powering off\n");
        outw((uint16_t)rd32(fadt + 64), (uint16_t)(5u << 10 | 1u << 13));
        check(0, "s5: still running after SLP_EN with \\_S5");
    }
    if (has_test(tests, "s3")) {
        int button = mb_cmdline_value(cmdline, "wake", value, sizeof value) && value[0] == 'b';
        test_s3(button);
    }
    mb_printf("mbpc: %u failures\n", (uint32_t)failures);
    mb_exit(failures ? 0x40 + (uint32_t)failures : 0, 1);
}
