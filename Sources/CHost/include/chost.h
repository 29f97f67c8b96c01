#ifndef CHOST_H
#define CHOST_H
// The host calls Swift cannot make itself: prctl and seccomp are variadic or have no libc
// wrapper, and the SIGSYS reporter must be async-signal-safe C.
#include <stdint.h>
#include <linux/filter.h>
#include <sys/types.h>

/// The kernel thread id of the calling thread.
pid_t chost_gettid(void);
/// Pins thread `tid` (0 = caller) to the CPUs listed in `cpus`. Returns 0 or -1 with errno.
int chost_set_affinity(pid_t tid, const int *cpus, int count);
/* The CPUs thread `tid` may run on, at most `capacity` of them, ascending; -1 and errno on failure. */
int chost_get_affinity(pid_t tid, int *cpus, int capacity);
/// Names the calling thread (at most 15 characters are kept).
void chost_set_thread_name(const char *name);
/// Installs a no-op handler for `signal` without SA_RESTART, so a blocked KVM_RUN returns EINTR.
int chost_install_kick_handler(int signal);

struct chost_syscall {
    const char *name;
    int number;
};
/// Every x86-64 system call by name (syscall_table.c, generated).
extern const struct chost_syscall chost_syscalls[];
extern const int chost_syscall_count;
/// Entry `index` of chost_syscalls (Swift does not import arrays of unknown size).
struct chost_syscall chost_syscalls_entry(int index);

/// Sets no_new_privs and installs `count` classic-BPF instructions as a seccomp filter on the
/// calling thread (and the threads it starts later). Returns 0, or -1 with errno set.
int chost_install_seccomp(const struct sock_filter *program, unsigned short count);

/// Installs the process's SIGSYS handler: a call a filter traps makes it write one line to
/// stderr naming the thread's kind (set by chost_set_thread_kind) and the call, then end the
/// process with status 159 (128 + SIGSYS). Returns 0, or -1 with errno set.
int chost_install_violation_reporter(void);

/// The kind the calling thread's filter was built for (kept in thread-local storage; at most
/// 31 bytes are kept).
void chost_set_thread_kind(const char *kind);

/// The calling thread's kind: "unfiltered" until chost_set_thread_kind.
const char *chost_thread_kind(void);

/// Happens-before edges for the thread sanitizer around a lock it cannot see (Swift's Mutex on
/// Linux is a raw futex): no-ops unless the TSan runtime is linked in.
void chost_tsan_acquire(void *address);
void chost_tsan_release(void *address);

/// Files: punching a hole (fallocate PUNCH_HOLE | KEEP_SIZE), zeroing a range (ZERO_RANGE |
/// KEEP_SIZE), and lseek to the next data or hole (SEEK_DATA / SEEK_HOLE), GNU-only in the C
/// library. -1 with errno on failure.
/// Tap devices (virtio-net): opens /dev/net/tun non-blocking and attaches to (or creates, as a
/// non-persistent device that goes away with the descriptor) tap `name`, without packet
/// information; brings an interface up. -1 with errno on failure.
int chost_tap_open(const char *name);
int chost_link_set_up(const char *name);
/// A non-blocking, close-on-exec eventfd (a worker's wake-up), or -1.
int chost_wake_event(void);

int chost_punch_hole(int fd, long long offset, long long length);
int chost_zero_range(int fd, long long offset, long long length);
long long chost_seek_data(int fd, long long offset);
long long chost_seek_hole(int fd, long long offset);

/// openat2(2) (no C library wrapper): `path` resolved from `dirfd` with `resolve`
/// (RESOLVE_* bits). The new descriptor, or -errno.
int chost_openat2(int dirfd, const char *path, unsigned long long flags, unsigned long long mode,
                  unsigned long long resolve);
/// getdents64(2) into `buffer`: bytes of linux_dirent64 records, 0 at the end, or -errno.
long chost_getdents64(int fd, void *buffer, unsigned long length);

#endif
