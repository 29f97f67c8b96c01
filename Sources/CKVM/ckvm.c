// GNU-only calls, compiled with _GNU_SOURCE (Swift's C library module is built without it).
#define _GNU_SOURCE
#include "ckvm.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t entries) {
    size_t size = sizeof(struct kvm_cpuid2) + (size_t)entries * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *cpuid = calloc(1, size);
    if (cpuid) cpuid->nent = entries;
    return cpuid;
}

void ckvm_set_immediate_exit(struct kvm_run *run, unsigned char value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_RELEASE);
}

int ckvm_get_msr(int vcpu_fd, uint32_t index, uint64_t *value) {
    struct {
        struct kvm_msrs header;
        struct kvm_msr_entry entry;
    } request = { .header = { .nmsrs = 1 }, .entry = { .index = index } };
    int result = ioctl(vcpu_fd, KVM_GET_MSRS, &request);
    if (result == 1) *value = request.entry.data;
    return result;
}

int ckvm_irq_line_status(int vm_fd, uint32_t irq, uint32_t level, int32_t *status) {
    struct kvm_irq_level line = { .irq = irq, .level = level };
    int result = ioctl(vm_fd, KVM_IRQ_LINE_STATUS, &line);
    if (result == 0) *status = line.status;
    return result;
}

int ckvm_set_msr(int vcpu_fd, uint32_t index, uint64_t value) {
    struct {
        struct kvm_msrs header;
        struct kvm_msr_entry entry;
    } request = { .header = { .nmsrs = 1 }, .entry = { .index = index, .data = value } };
    return ioctl(vcpu_fd, KVM_SET_MSRS, &request);
}

int ckvm_msr_index_list(int kvm_fd, uint32_t *indices, uint32_t capacity) {
    struct kvm_msr_list *list = calloc(1, sizeof(struct kvm_msr_list) + (size_t)capacity * sizeof(uint32_t));
    if (!list) return -1;
    list->nmsrs = capacity;
    int result = ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list);
    int count = (int)list->nmsrs;
    if (result == 0) memcpy(indices, list->indices, (size_t)(count < (int)capacity ? count : (int)capacity) * sizeof(uint32_t));
    free(list);
    if (result < 0 && errno != E2BIG) return -1;
    return count;
}

int ckvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap) {
    struct kvm_dirty_log log = { .slot = slot };
    log.dirty_bitmap = bitmap;
    return ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log);
}
