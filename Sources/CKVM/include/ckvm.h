// C shim for swiftvmm: the linux/kvm.h request numbers Swift cannot import (they are
// function-like macros), non-variadic ioctl wrappers, and GNU-only calls.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <pthread.h>
#include <sys/types.h>

static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_IRQ_LINE_STATUS = KVM_IRQ_LINE_STATUS;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_SET_GUEST_DEBUG = KVM_SET_GUEST_DEBUG;
static const unsigned long CKVM_TRANSLATE = KVM_TRANSLATE;
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
// Saving and restoring state (snapshots, migration).
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
static const unsigned long CKVM_GET_SREGS2 = KVM_GET_SREGS2;
static const unsigned long CKVM_SET_SREGS2 = KVM_SET_SREGS2;
static const unsigned long CKVM_GET_XSAVE2 = KVM_GET_XSAVE2;
static const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2;
static const unsigned long CKVM_SET_PIT2 = KVM_SET_PIT2;
static const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK;
static const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
static const unsigned long CKVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
// Dirty page logging (live migration).
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const unsigned int CKVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;
// Interrupts from a userspace interrupt controller (deterministic mode).
static const unsigned long CKVM_INTERRUPT = KVM_INTERRUPT;

/// ioctl with no argument (or an integer argument).
static inline int ckvm_ioctl_val(int fd, unsigned long request, unsigned long arg) {
    return ioctl(fd, request, arg);
}

/// ioctl with a pointer argument.
static inline int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg) {
    return ioctl(fd, request, arg);
}

/// Offset of kvm_run.mmio.data (Swift key paths cannot see through the anonymous union).
static inline unsigned long ckvm_run_mmio_data_offset(void) {
    return (unsigned long)__builtin_offsetof(struct kvm_run, mmio.data);
}

/// Allocates a kvm_cpuid2 with room for `entries` entries (zeroed, nent set). Free with free().
struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t entries);
/// Pointer to entry `index` of a kvm_cpuid2 (flexible array members are not imported by Swift).
static inline struct kvm_cpuid_entry2 *ckvm_cpuid2_entry(struct kvm_cpuid2 *cpuid, uint32_t index) {
    return &cpuid->entries[index];
}

/// Sets an interrupt line with KVM_IRQ_LINE_STATUS: the ioctl's result; `status` gets KVM's
/// delivery status (> 0 delivered, 0 coalesced with one still pending, < 0 masked or ignored).
int ckvm_irq_line_status(int vm_fd, uint32_t irq, uint32_t level, int32_t *status);

/// Reads one MSR of a vCPU (KVM_GET_MSRS with one entry): the ioctl's result, 1 when it was read.
int ckvm_get_msr(int vcpu_fd, uint32_t index, uint64_t *value);

/// Writes one MSR of a vCPU (KVM_SET_MSRS with one entry): the ioctl's result, 1 when it was set.
int ckvm_set_msr(int vcpu_fd, uint32_t index, uint64_t value);

/// The MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST on /dev/kvm): up to `capacity`
/// indexes into `indices`; returns how many KVM has (which may exceed `capacity`), or -1.
int ckvm_msr_index_list(int kvm_fd, uint32_t *indices, uint32_t capacity);

/// Fetches (and, without manual protection, clears) slot `slot`'s dirty bitmap into `bitmap`,
/// one bit per page, which must hold the slot's pages rounded up to 64 bits.
int ckvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap);

/// Sets kvm_run.immediate_exit with an atomic store: any thread may kick a vCPU while the vCPU
/// thread itself clears the flag, and KVM reads it on entry.
void ckvm_set_immediate_exit(struct kvm_run *run, unsigned char value);

/// kvm_run's fields for a userspace interrupt controller: ask for an exit once the guest can
/// take an interrupt, and whether it can now (KVM's ready flag and the guest's IF).
static inline void ckvm_set_request_interrupt_window(struct kvm_run *run, unsigned char on) {
    run->request_interrupt_window = on;
}
static inline int ckvm_ready_for_interrupt(const struct kvm_run *run) {
    return run->ready_for_interrupt_injection && run->if_flag;
}

/// KVM_CAP_SYNC_REGS: KVM copies the general registers into kvm_run at every exit.
static inline void ckvm_sync_registers(struct kvm_run *run, int on) {
    run->kvm_valid_regs = on ? KVM_SYNC_X86_REGS : 0;
}
static inline unsigned long long ckvm_synced_rip(const struct kvm_run *run) {
    return run->s.regs.regs.rip;
}

#endif
