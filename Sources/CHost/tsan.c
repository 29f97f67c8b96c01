// The thread sanitizer's annotations, weakly linked: present only in `make sanitize` builds.
#include "chost.h"

extern void __tsan_acquire(void *address) __attribute__((weak));
extern void __tsan_release(void *address) __attribute__((weak));

void chost_tsan_acquire(void *address) { if (__tsan_acquire) __tsan_acquire(address); }
void chost_tsan_release(void *address) { if (__tsan_release) __tsan_release(address); }
