/* The guest runtime: CPL 0 setup, then the guest's main() at CPL 3 with IOPL 3.
 * Under a software-emulated ring 0 (this project's PVM hosts) only CPL 3 runs at native speed,
 * so guests keep ring 0 to setup and put their work in main(). */
#ifndef SWIFTVMM_RT_H
#define SWIFTVMM_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "abi.h"

#define RT_MAX_CPUS 64
/* Status the runtime exits with (V) when the guest takes an unexpected exception. */
#define RT_EXIT_EXCEPTION 0x7f

/* Provided by the guest: runs at CPL 3 on the boot vCPU; its return value V ends the VM with
 * process status (V << 1) | 1. */
int main(const struct svmm_boot_info *info);
/* Optional: what other vCPUs run at CPL 3 (default: spin with pause). */
void ap_main(const struct svmm_boot_info *info, unsigned cpu) __attribute__((weak));

extern const struct svmm_boot_info *rt_boot_info;

/* The interrupted context an exception handler sees (lowest address first). */
struct rt_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

/* Port I/O instructions completed by the #GP handler because the host did not honour IOPL 3 at
 * CPL 3 (PVM-style software-virtualised KVM); stays 0 on VT-x/AMD-V. */
extern volatile uint64_t rt_emulated_port_io;

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint64_t rdtsc(void) { uint32_t lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((uint64_t)hi << 32) | lo; }
static inline void cpu_relax(void) { __asm__ volatile("pause"); }
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline unsigned current_cpl(void) { uint16_t cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs)); return cs & 3; }

/* CPUID as the VMM configured it. CPL 3 code asks the CPL 0 runtime: on a host that virtualises
 * ring 0 in software (PVM), CPUID at CPL 3 runs on the host CPU and never reaches the VMM's table.
 * The request is "int $0x81", a vector past the IDT's limit: hardware raises #GP for it, PVM
 * delivers it as #UD; either handler sees the instruction at RIP and serves it. */
void rt_cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d);

#define RT_SERVICE_VECTOR 0x81
#define RT_SERVICE_CPUID 1
#define RT_SERVICE_WAIT 2

/* Interrupts. The runtime remaps the 8259 pair to vectors 0x20-0x2F with every line masked;
 * rt_irq_enable installs a handler (it runs at CPL 0 with interrupts off; keep it short: on a PVM
 * host every CPL 0 instruction is emulated) and unmasks the line. The runtime sends the EOI.
 * CPL 3 code runs with interrupts enabled. Needs the VMM's interrupt controllers (boot-info flag). */
typedef void (*rt_irq_handler)(unsigned irq);
void rt_irq_enable(unsigned irq, rt_irq_handler handler);
void rt_irq_disable(unsigned irq);
/* Sleeps (HLT at CPL 0) until the next interrupt has been handled. */
void rt_wait_for_interrupt(void);
/* Number of interrupts each IRQ line has delivered. */
extern volatile uint64_t rt_irq_count[16];

/* SMP: with interrupt controllers, vCPU 0 starts the others (INIT/SIPI) before main() runs;
 * each runs ap_main() at CPL 3. rt_cpus_online counts vCPUs that reached the runtime. */
extern volatile uint32_t rt_cpus_online;
static inline uint32_t atomic_add_u32(volatile uint32_t *p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t atomic_add_u64(volatile uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }

/* Serial console (COM1, polled). */
void rt_putc(char c);
void rt_puts(const char *s);
int rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int rt_snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* TSC ticks per second, measured once with PIT channel 2: five 50 ms windows, each bracketed by
 * TSC readings around its start and end; the narrowest bracket wins, so a vCPU the host preempted
 * mid-window does not skew it (about 250 ms; needs the PIT). */
uint64_t rt_tsc_hz(void);
/* Starts PIT channel 0 at `hz` (IRQ 0, counted in rt_irq_count[0]) so rt_sleep_ns can halt. */
void rt_timer_start(unsigned hz);
/* Waits `ns` nanoseconds: in HLT between timer ticks once rt_timer_start ran, else spinning. */
void rt_sleep_ns(uint64_t ns);

/* Steal time (KVM_FEATURE_STEAL_TIME, enabled on every vCPU when KVM offers it): nanoseconds the
 * vCPU was runnable but not running, as the host kernel counts them. */
int rt_steal_available(void);
uint64_t rt_steal_ns(unsigned cpu);
/* kvmclock (KVM_FEATURE_CLOCKSOURCE2, enabled on every vCPU when KVM offers it): nanoseconds of
 * the host's monotonic clock, as this vCPU's pvclock record converts the TSC. */
int rt_kvmclock_available(void);
uint64_t rt_kvmclock_ns(unsigned cpu);

/* Self-checks: prints "ok   WHAT: DETAIL" or "FAIL WHAT: DETAIL" and counts the failures. */
extern int rt_check_failures;
void rt_check(int ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Ends the VM through the debug-exit port: process status (value << 1) | 1. */
__attribute__((noreturn)) void rt_exit(uint32_t value);

/* The command line, and "key=value" lookups in it. */
const char *rt_cmdline(void);
/* Copies the value of `key` into buf; returns its length, or -1 when absent. */
int rt_cmdline_get(const char *key, char *buf, size_t size);
/* The value of `key` as an unsigned number (decimal, 0x-hex, K/M/G suffixes), or `fallback`. */
uint64_t rt_cmdline_u64(const char *key, uint64_t fallback);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

#endif
