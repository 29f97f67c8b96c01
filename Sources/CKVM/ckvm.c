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

pid_t ckvm_gettid(void) { return gettid(); }

int ckvm_set_affinity(pid_t tid, const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) { errno = EINVAL; return -1; }
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(tid, sizeof set, &set);
}

void ckvm_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

static void ckvm_kick_handler(int signal) { (void)signal; }

int ckvm_install_kick_handler(int signal) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = ckvm_kick_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; // no SA_RESTART: the interrupted KVM_RUN must return EINTR
    return sigaction(signal, &action, NULL);
}

void ckvm_set_immediate_exit(struct kvm_run *run, unsigned char value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_RELEASE);
}
