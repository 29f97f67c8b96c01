/* Guest runtime: ring-0 setup (GDT, TSS, IDT), ring-3 entry, console, command line, exit. */
#include "rt.h"

#define KSTACK_SIZE (16 * 1024)
#define USTACK_SIZE (64 * 1024)

const struct svmm_boot_info *rt_boot_info;

unsigned char rt_kernel_stacks[RT_MAX_CPUS * KSTACK_SIZE] __attribute__((aligned(16)));
static unsigned char user_stacks[RT_MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));

struct __attribute__((packed)) tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};

struct __attribute__((packed)) descriptor_pointer {
    uint16_t limit;
    uint64_t base;
};

struct idt_gate {
    uint16_t offset_low, selector;
    uint8_t ist, type;
    uint16_t offset_mid;
    uint32_t offset_high, zero;
};

/* null, kernel code 0x08, kernel data 0x10, user data 0x18, user code 0x20, then one TSS
 * descriptor (two slots) per vCPU from 0x28. */
static uint64_t gdt[5 + 2 * RT_MAX_CPUS] __attribute__((aligned(16))) = {
    0,
    0x00AF9A000000FFFFull,
    0x00CF92000000FFFFull,
    0x00CFF2000000FFFFull,
    0x00AFFA000000FFFFull,
};
static struct tss64 tss[RT_MAX_CPUS] __attribute__((aligned(16)));
#define IDT_VECTORS 48
#define IRQ_BASE 0x20
static struct idt_gate idt[IDT_VECTORS] __attribute__((aligned(16)));
extern const uint64_t rt_exception_stubs[IDT_VECTORS];
extern const uint8_t rt_ap_trampoline[], rt_ap_trampoline_end[];
extern uint64_t rt_ap_tramp_cr3, rt_ap_tramp_entry;
extern void rt_ap_entry(void);
#define RT_TRAMPOLINE 0x58000u

volatile uint32_t rt_cpus_online;
volatile uint64_t rt_irq_count[16];
static volatile rt_irq_handler irq_handlers[16];
static volatile uint16_t pic_mask = 0xFFFF;

static void pic_init(void) {
    outb(0x20, 0x11); outb(0xA0, 0x11); /* ICW1: edge, cascade, ICW4 follows */
    outb(0x21, IRQ_BASE); outb(0xA1, IRQ_BASE + 8); /* ICW2: vectors */
    outb(0x21, 0x04); outb(0xA1, 0x02); /* ICW3: slave on IRQ 2 */
    outb(0x21, 0x01); outb(0xA1, 0x01); /* ICW4: 8086 mode */
    outb(0x21, 0xFF); outb(0xA1, 0xFF); /* everything masked */
}

static void pic_write_mask(uint16_t mask) {
    pic_mask = mask;
    outb(0x21, (uint8_t)mask);
    outb(0xA1, (uint8_t)(mask >> 8));
}

void rt_irq_enable(unsigned irq, rt_irq_handler handler) {
    if (irq >= 16) return;
    irq_handlers[irq] = handler;
    uint16_t mask = pic_mask & (uint16_t)~(1u << irq);
    if (irq >= 8) mask &= (uint16_t)~(1u << 2); /* the cascade */
    pic_write_mask(mask);
}

void rt_irq_disable(unsigned irq) {
    if (irq >= 16) return;
    pic_write_mask(pic_mask | (uint16_t)(1u << irq));
    irq_handlers[irq] = 0;
}

static void lapic_write(uint32_t reg, uint32_t value) { *(volatile uint32_t *)(SVMM_LAPIC_BASE + reg) = value; }
static uint32_t lapic_read(uint32_t reg) { return *(volatile uint32_t *)(SVMM_LAPIC_BASE + reg); }

/* Sends INIT, then two start-up IPIs, to every other vCPU, and waits until they run. */
static void start_aps(const struct svmm_boot_info *info) {
    uint32_t want = info->cpu_count < RT_MAX_CPUS ? info->cpu_count : RT_MAX_CPUS;
    memcpy((void *)(uintptr_t)RT_TRAMPOLINE, rt_ap_trampoline, (size_t)(rt_ap_trampoline_end - rt_ap_trampoline));
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    *(volatile uint64_t *)(uintptr_t)(RT_TRAMPOLINE + ((uintptr_t)&rt_ap_tramp_cr3 - (uintptr_t)rt_ap_trampoline)) = cr3;
    *(volatile uint64_t *)(uintptr_t)(RT_TRAMPOLINE + ((uintptr_t)&rt_ap_tramp_entry - (uintptr_t)rt_ap_trampoline)) =
        (uint64_t)(uintptr_t)rt_ap_entry;
    lapic_write(0xF0, lapic_read(0xF0) | 0x1FF); /* software-enable, spurious vector 0xFF */
    lapic_write(0x310, 0);
    lapic_write(0x300, 0x000C4500); /* INIT, assert, all excluding self */
    for (int sipi = 0; sipi < 2 && rt_cpus_online < want; sipi++) {
        lapic_write(0x300, 0x000C4600 | (RT_TRAMPOLINE >> 12)); /* start-up at the trampoline */
        uint64_t start = rdtsc();
        while (rt_cpus_online < want && rdtsc() - start < (1ull << 31)) cpu_relax();
    }
}

static void set_tss_descriptor(unsigned cpu) {
    uint64_t base = (uint64_t)&tss[cpu], limit = sizeof(struct tss64) - 1;
    gdt[5 + 2 * cpu] = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89ull << 40 |
                       ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56;
    gdt[6 + 2 * cpu] = base >> 32;
}

/* KVM's steal-time record, one per vCPU (64 bytes, 64-byte aligned, as the MSR requires). */
struct steal_time {
    uint64_t steal;
    uint32_t version;
    uint32_t flags;
    uint8_t preempted;
    uint8_t pad[3];
    uint32_t more_pad[11];
};
_Static_assert(sizeof(struct steal_time) == 64, "steal-time record is 64 bytes");
static struct steal_time steal_records[RT_MAX_CPUS] __attribute__((aligned(64)));
static int steal_enabled;

#define KVM_SIGNATURE_EBX 0x4b4d564bu /* "KVMK" */
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)
#define KVM_FEATURE_STEAL_TIME (1u << 5)
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define MSR_KVM_STEAL_TIME 0x4b564d03u

/* kvmclock's per-vCPU time record (pvclock_vcpu_time_info, 32 bytes, aligned). */
struct pvclock {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t pad[2];
};
_Static_assert(sizeof(struct pvclock) == 32, "pvclock record is 32 bytes");
static struct pvclock clock_records[RT_MAX_CPUS] __attribute__((aligned(64)));
static int kvmclock_enabled;

/* The base of KVM's CPUID leaves, found by their signature (0 when absent). */
static uint32_t kvm_cpuid_base(void) {
    for (uint32_t base = 0x40000000u; base < 0x40010000u; base += 0x100) {
        uint32_t a, b, c, d;
        cpuid(base, 0, &a, &b, &c, &d);
        if (b == KVM_SIGNATURE_EBX && c == 0x564b4d56u && d == 0x4du) return base;
    }
    return 0;
}

/* At CPL 0, on each vCPU: points KVM's steal-time MSR at this vCPU's record when KVM offers it. */
static void steal_time_init(unsigned cpu) {
    static uint32_t features;
    if (cpu == 0) {
        uint32_t base = kvm_cpuid_base(), a = 0, b, c, d;
        if (base) cpuid(base + 1, 0, &a, &b, &c, &d);
        features = a;
    }
    if (features & KVM_FEATURE_CLOCKSOURCE2) {
        uint64_t value = (uint64_t)(uintptr_t)&clock_records[cpu] | 1; /* enabled */
        __asm__ volatile("wrmsr" :: "c"(MSR_KVM_SYSTEM_TIME_NEW), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)));
        if (cpu == 0) kvmclock_enabled = 1;
    }
    if (!(features & KVM_FEATURE_STEAL_TIME)) return;
    uint64_t value = (uint64_t)(uintptr_t)&steal_records[cpu] | 1; /* enabled */
    __asm__ volatile("wrmsr" :: "c"(MSR_KVM_STEAL_TIME), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)));
    if (cpu == 0) steal_enabled = 1;
}

int rt_kvmclock_available(void) { return kvmclock_enabled; }

uint64_t rt_kvmclock_ns(unsigned cpu) {
    if (cpu >= RT_MAX_CPUS || !kvmclock_enabled) return 0;
    volatile struct pvclock *clock = &clock_records[cpu];
    for (;;) { /* the host updates it under an odd version, as the steal-time record */
        uint32_t version = clock->version;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        uint64_t delta = rdtsc() - clock->tsc_timestamp, base = clock->system_time;
        uint32_t mul = clock->tsc_to_system_mul;
        int8_t shift = clock->tsc_shift;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if ((version & 1) || clock->version != version) { cpu_relax(); continue; }
        delta = shift < 0 ? delta >> -shift : delta << shift;
        return base + (uint64_t)(((unsigned __int128)delta * mul) >> 32);
    }
}

int rt_steal_available(void) { return steal_enabled; }

uint64_t rt_steal_ns(unsigned cpu) {
    if (cpu >= RT_MAX_CPUS) return 0;
    volatile struct steal_time *record = &steal_records[cpu];
    for (;;) { /* the host updates it under an odd version */
        uint32_t version = record->version;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        uint64_t steal = record->steal;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (!(version & 1) && record->version == version) return steal;
        cpu_relax();
    }
}

/* Runs at CPL 0 on each vCPU: loads the runtime's GDT, TSS and IDT; returns the CPL 3 stack. */
uint64_t rt_kernel_init(const struct svmm_boot_info *info, unsigned cpu) {
    if (cpu == 0) {
        rt_boot_info = info;
        outb(SVMM_PORT_COM1 + 2, 0x07); /* FCR: FIFOs on and cleared, so THRE means 16 free bytes */
        if (info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP) pic_init();
        for (unsigned v = 0; v < IDT_VECTORS; v++) {
            uint64_t handler = rt_exception_stubs[v];
            idt[v] = (struct idt_gate){ (uint16_t)handler, 0x08, 0, 0x8E, (uint16_t)(handler >> 16),
                                        (uint32_t)(handler >> 32), 0 };
        }
    }
    tss[cpu].rsp[0] = (uint64_t)&rt_kernel_stacks[(cpu + 1) * KSTACK_SIZE];
    tss[cpu].iomap_base = sizeof(struct tss64); /* no I/O bitmap: IOPL 3 grants the ports */
    set_tss_descriptor(cpu);
    struct descriptor_pointer gdtr = { sizeof gdt - 1, (uint64_t)gdt };
    struct descriptor_pointer idtr = { sizeof idt - 1, (uint64_t)idt };
    uint16_t tr = (uint16_t)(0x28 + 16 * cpu);
    __asm__ volatile(
        "lgdt %0\n\t"
        "pushq $0x08\n\t"
        "lea 1f(%%rip), %%rax\n\t"
        "pushq %%rax\n\t"
        "lretq\n"
        "1:\n\t"
        "mov $0x10, %%eax\n\t"
        "mov %%eax, %%ds\n\t"
        "mov %%eax, %%es\n\t"
        "mov %%eax, %%ss\n\t"
        "xor %%eax, %%eax\n\t"
        "mov %%eax, %%fs\n\t"
        "mov %%eax, %%gs\n\t"
        "ltr %1\n\t"
        "lidt %2"
        :: "m"(gdtr), "r"(tr), "m"(idtr) : "rax", "memory");
    steal_time_init(cpu);
    atomic_add_u32(&rt_cpus_online, 1);
    if (cpu == 0 && (info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP) && info->cpu_count > 1) start_aps(info);
    return (uint64_t)&user_stacks[cpu][USTACK_SIZE];
}

/* First code at CPL 3. */
__attribute__((noreturn)) void rt_user_entry(const struct svmm_boot_info *info, unsigned cpu) {
    if (cpu == 0) rt_exit((uint32_t)main(info));
    if (ap_main) ap_main(info, cpu);
    for (;;) cpu_relax();
}

volatile uint64_t rt_emulated_port_io;

static inline uint8_t user_byte(uint64_t address) { return *(const volatile uint8_t *)address; }

/* Completes the port I/O instruction at frame->rip for CPL 3 code, as IOPL 3 would have allowed.
 * Returns 0 when the instruction is not port I/O. Runs at CPL 0, where the ports are open. */
static int complete_user_port_io(struct rt_frame *frame) {
    uint64_t ip = frame->rip;
    unsigned size = 4, rep = 0;
    for (int prefixes = 0; prefixes < 4; prefixes++, ip++) {
        uint8_t b = user_byte(ip);
        if (b == 0x66) size = 2;
        else if (b == 0xF3) rep = 1;
        else if ((b & 0xF0) == 0x40) continue; /* REX: no effect on port I/O */
        else break;
    }
    uint8_t op = user_byte(ip++);
    uint16_t port = (uint16_t)frame->rdx;
    if (op == 0xE4 || op == 0xE5 || op == 0xE6 || op == 0xE7) port = user_byte(ip++);
    if (op == 0xE4 || op == 0xEC || op == 0xE6 || op == 0xEE || op == 0x6C || op == 0x6E) size = 1;
    switch (op) {
    case 0xE4: case 0xE5: case 0xEC: case 0xED: {
        uint32_t v = size == 1 ? inb(port) : size == 2 ? inw(port) : inl(port);
        uint64_t keep = size == 1 ? ~0xFFull : size == 2 ? ~0xFFFFull : 0;
        frame->rax = (frame->rax & keep) | v;
        break;
    }
    case 0xE6: case 0xE7: case 0xEE: case 0xEF:
        if (size == 1) outb(port, (uint8_t)frame->rax);
        else if (size == 2) outw(port, (uint16_t)frame->rax);
        else outl(port, (uint32_t)frame->rax);
        break;
    case 0x6C: case 0x6D: case 0x6E: case 0x6F: {
        /* String I/O: run the same instruction here so a REP still needs one exit per page. */
        uint64_t count = rep ? frame->rcx : 1, si = frame->rsi, di = frame->rdi;
        int down = (frame->rflags >> 10) & 1;
        if (down) __asm__ volatile("std");
        if (op == 0x6E) __asm__ volatile("rep outsb" : "+S"(si), "+c"(count) : "d"(port) : "memory");
        else if (op == 0x6F && size == 2) __asm__ volatile("rep outsw" : "+S"(si), "+c"(count) : "d"(port) : "memory");
        else if (op == 0x6F) __asm__ volatile("rep outsl" : "+S"(si), "+c"(count) : "d"(port) : "memory");
        else if (op == 0x6C) __asm__ volatile("rep insb" : "+D"(di), "+c"(count) : "d"(port) : "memory");
        else if (size == 2) __asm__ volatile("rep insw" : "+D"(di), "+c"(count) : "d"(port) : "memory");
        else __asm__ volatile("rep insl" : "+D"(di), "+c"(count) : "d"(port) : "memory");
        if (down) __asm__ volatile("cld");
        frame->rsi = si;
        frame->rdi = di;
        if (rep) frame->rcx = count;
        break;
    }
    default:
        return 0;
    }
    frame->rip = ip;
    rt_emulated_port_io++;
    return 1;
}

void rt_cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    if (current_cpl() == 0) { cpuid(leaf, sub, a, b, c, d); return; }
    uint64_t ra = RT_SERVICE_CPUID, rb = leaf, rc = sub, rd = 0;
    __asm__ volatile("int $0x81" : "+a"(ra), "+b"(rb), "+c"(rc), "+d"(rd) :: "memory");
    *a = (uint32_t)ra; *b = (uint32_t)rb; *c = (uint32_t)rc; *d = (uint32_t)rd;
}

void rt_wait_for_interrupt(void) {
    uint64_t ra = RT_SERVICE_WAIT, rb = 0, rc = 0, rd = 0;
    if (current_cpl() == 0) { __asm__ volatile("sti; hlt; cli"); return; }
    __asm__ volatile("int $0x81" : "+a"(ra), "+b"(rb), "+c"(rc), "+d"(rd) :: "memory");
}

static void service(struct rt_frame *frame) {
    if (frame->rax == RT_SERVICE_WAIT) {
        __asm__ volatile("sti; hlt; cli" ::: "memory"); /* an interrupt handler runs, then we return */
    } else if (frame->rax == RT_SERVICE_CPUID) {
        uint32_t a, b, c, d;
        cpuid((uint32_t)frame->rbx, (uint32_t)frame->rcx, &a, &b, &c, &d);
        frame->rax = a; frame->rbx = b; frame->rcx = c; frame->rdx = d;
    } else {
        frame->rax = ~0ull;
    }
}

static void irq(unsigned line) {
    rt_irq_count[line]++;
    rt_irq_handler handler = irq_handlers[line];
    if (handler) handler(line);
    if (line >= 8) outb(0xA0, 0x20);
    outb(0x20, 0x20);
}

/* Called from the exception stubs at CPL 0. Returning resumes the interrupted code. */
void rt_exception(struct rt_frame *frame) {
    if (frame->vector >= IRQ_BASE && frame->vector < IRQ_BASE + 16) { irq((unsigned)(frame->vector - IRQ_BASE)); return; }
    /* Hardware raises #GP for an INT past the IDT limit; PVM delivers every CPL 3 INT n as #UD. */
    if ((frame->vector == 13 || frame->vector == 6) && (frame->cs & 3) == 3 &&
        user_byte(frame->rip) == 0xCD && user_byte(frame->rip + 1) == RT_SERVICE_VECTOR) {
        service(frame);
        frame->rip += 2;
        return;
    }
    if (frame->vector == 13 && frame->error == 0 && (frame->cs & 3) == 3 && complete_user_port_io(frame)) return;
    rt_printf("\nrt: exception %lu error 0x%lx at rip 0x%lx cs 0x%lx rflags 0x%lx rsp 0x%lx\n",
              frame->vector, frame->error, frame->rip, frame->cs, frame->rflags, frame->rsp);
    rt_exit(RT_EXIT_EXCEPTION);
}

__attribute__((noreturn)) void rt_exit(uint32_t value) {
    outl(SVMM_PORT_DEBUG_EXIT, value);
    for (;;) cpu_relax(); /* not reached: the VMM stops the VM on the write */
}

/* --- console --- */

#define UART_FIFO_SIZE 16

/* Writes up to one FIFO load: waits for THRE (transmitter FIFO empty), then one REP OUTSB. */
static void uart_write_chunk(const char *s, uint64_t n) {
    while (!(inb(SVMM_PORT_COM1 + 5) & 0x20)) cpu_relax(); /* LSR.THRE */
    __asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"(SVMM_PORT_COM1) : "memory");
}

void rt_putc(char c) {
    uart_write_chunk(&c, 1);
}

static volatile uint32_t console_lock;

/* Whole strings go out under a lock, so lines from different vCPUs do not interleave. */
void rt_puts(const char *s) {
    size_t n = strlen(s);
    while (__atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE)) cpu_relax();
    for (size_t done = 0; done < n; done += UART_FIFO_SIZE)
        uart_write_chunk(s + done, n - done < UART_FIFO_SIZE ? n - done : UART_FIFO_SIZE);
    __atomic_store_n(&console_lock, 0, __ATOMIC_RELEASE);
}

struct out { char *buf; size_t size, len; };

static void emit(struct out *o, char c) {
    if (o->len + 1 < o->size) o->buf[o->len] = c;
    o->len++;
}

static void emit_number(struct out *o, uint64_t value, unsigned base, int negative, int width, char pad) {
    char digits[24];
    int n = 0;
    do { digits[n++] = "0123456789abcdef"[value % base]; value /= base; } while (value);
    if (negative) digits[n++] = '-';
    while (width-- > n) emit(o, pad);
    while (n) emit(o, digits[--n]);
}

int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct out o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') { emit(&o, *fmt); continue; }
        fmt++;
        char pad = ' ';
        int width = 0, longs = 0;
        if (*fmt == '0') { pad = '0'; fmt++; }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') { longs++; fmt++; }
        switch (*fmt) {
        case 'd': {
            int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
            emit_number(&o, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, v < 0, width, pad);
            break;
        }
        case 'u': emit_number(&o, longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, 0, width, pad); break;
        case 'x': emit_number(&o, longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, 0, width, pad); break;
        case 'p': emit(&o, '0'); emit(&o, 'x'); emit_number(&o, (uint64_t)va_arg(ap, void *), 16, 0, width, pad); break;
        case 'c': emit(&o, (char)va_arg(ap, int)); break;
        case 's': { const char *s = va_arg(ap, const char *); if (!s) s = "(null)"; while (*s) emit(&o, *s++); break; }
        case '%': emit(&o, '%'); break;
        default: emit(&o, '%'); emit(&o, *fmt); break;
        }
    }
    if (size) buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int rt_snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = rt_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* The same function under the C library's name, for Guests/libc's programs. */
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((alias("rt_snprintf"), format(printf, 3, 4)));

int rt_printf(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = rt_vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    rt_puts(buf);
    return n;
}

static uint64_t tsc_hz;

/* TSC cycles across one 50 ms PIT channel 2 count (mode 0, polling OUT2 on port 0x61), as a
 * bracket: the count starts inside the exit of the OUT that writes its high byte (between the
 * TSC readings around it), and OUT2 rose between the last poll that read it low and the first
 * that read it high. *width is how uncertain the window is; a vCPU the host preempted at either
 * end shows it as a wide bracket. */
static uint64_t pit_window_cycles(uint16_t count, uint64_t *width) {
    outb(SVMM_PORT_SYSCTL_B, (inb(SVMM_PORT_SYSCTL_B) & ~0x02) | 0x01); /* gate on, speaker off */
    outb(SVMM_PORT_PIT + 3, 0xB0); /* channel 2, lo/hi, mode 0 */
    outb(SVMM_PORT_PIT + 2, (uint8_t)count);
    uint64_t start_low = rdtsc();
    outb(SVMM_PORT_PIT + 2, (uint8_t)(count >> 8));
    uint64_t start_high = rdtsc(), end_low = start_high, end_high;
    for (;;) {
        uint64_t before = rdtsc();
        uint8_t status = inb(SVMM_PORT_SYSCTL_B);
        uint64_t after = rdtsc();
        if (status & 0x20) { end_high = after; break; }
        end_low = before;
        cpu_relax();
    }
    uint64_t shortest = end_low > start_high ? end_low - start_high : 0, longest = end_high - start_low;
    *width = longest - shortest;
    return shortest + (longest - shortest) / 2;
}

uint64_t rt_tsc_hz(void) {
    if (tsc_hz) return tsc_hz;
    /* Five windows; the one with the narrowest bracket wins (a preempted one is wide). */
    const uint16_t count = 59659; /* 50 ms of the 1.193182 MHz PIT clock */
    uint64_t best = 0, best_width = ~0ull;
    for (int attempt = 0; attempt < 5; attempt++) {
        uint64_t width, cycles = pit_window_cycles(count, &width);
        if (width < best_width) { best = cycles; best_width = width; }
    }
    tsc_hz = best * SVMM_PIT_HZ / count;
    return tsc_hz;
}

static int timer_running;

static void timer_tick(unsigned irq) { (void)irq; }

void rt_timer_start(unsigned hz) {
    uint16_t reload = (uint16_t)((SVMM_PIT_HZ + hz / 2) / hz);
    outb(SVMM_PORT_PIT + 3, 0x34); /* channel 0, lo/hi, mode 2 */
    outb(SVMM_PORT_PIT, (uint8_t)reload);
    outb(SVMM_PORT_PIT, (uint8_t)(reload >> 8));
    rt_irq_enable(SVMM_IRQ_PIT, timer_tick);
    timer_running = 1;
}

void rt_sleep_ns(uint64_t ns) {
    /* ns * hz overflows 64 bits past about 7.5 s: whole seconds and the rest apart. */
    uint64_t hz = rt_tsc_hz();
    uint64_t end = rdtsc() + ns / 1000000000ull * hz + ns % 1000000000ull * hz / 1000000000ull;
    while (rdtsc() < end) {
        if (timer_running) rt_wait_for_interrupt();
        else cpu_relax();
    }
}

int rt_check_failures;

void rt_check(int ok, const char *what, const char *fmt, ...) {
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    rt_vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    rt_printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what, detail);
    if (!ok) rt_check_failures++;
}

/* --- command line --- */

const char *rt_cmdline(void) {
    return rt_boot_info && rt_boot_info->cmdline_addr ? (const char *)rt_boot_info->cmdline_addr : "";
}

int rt_cmdline_get(const char *key, char *buf, size_t size) {
    size_t keylen = strlen(key);
    const char *p = rt_cmdline();
    while (*p) {
        while (*p == ' ') p++;
        const char *word = p;
        while (*p && *p != ' ') p++;
        if ((size_t)(p - word) > keylen && strncmp(word, key, keylen) == 0 && word[keylen] == '=') {
            const char *value = word + keylen + 1;
            size_t len = (size_t)(p - value);
            if (size) {
                size_t copy = len < size - 1 ? len : size - 1;
                memcpy(buf, value, copy);
                buf[copy] = 0;
            }
            return (int)len;
        }
    }
    return -1;
}

uint64_t rt_cmdline_u64(const char *key, uint64_t fallback) {
    char text[32];
    if (rt_cmdline_get(key, text, sizeof text) <= 0) return fallback;
    const char *p = text;
    unsigned base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) { base = 16; p += 2; }
    uint64_t value = 0;
    int digits = 0;
    for (;; p++, digits++) {
        unsigned d;
        if (*p >= '0' && *p <= '9') d = (unsigned)(*p - '0');
        else if (base == 16 && *p >= 'a' && *p <= 'f') d = (unsigned)(*p - 'a' + 10);
        else if (base == 16 && *p >= 'A' && *p <= 'F') d = (unsigned)(*p - 'A' + 10);
        else break;
        value = value * base + d;
    }
    if (!digits) return fallback;
    switch (*p) {
    case 'k': case 'K': value <<= 10; break;
    case 'm': case 'M': value <<= 20; break;
    case 'g': case 'G': value <<= 30; break;
    }
    return value;
}

/* --- the C library functions the compiler may call --- */

void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++) if (*p != *q) return *p - *q;
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int strncmp(const char *a, const char *b, size_t n) {
    for (; n; n--, a++, b++) {
        if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
        if (!*a) return 0;
    }
    return 0;
}
