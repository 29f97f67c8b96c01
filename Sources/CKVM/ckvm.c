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
