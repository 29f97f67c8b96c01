#include "chost.h"
#include <errno.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct chost_syscall chost_syscalls_entry(int index) {
    if (index < 0 || index >= chost_syscall_count) { struct chost_syscall none = {"", -1}; return none; }
    return chost_syscalls[index];
}

int chost_install_seccomp(const struct sock_filter *program, unsigned short count) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    struct sock_fprog fprog = { .len = count, .filter = (struct sock_filter *)program };
    // Without SECCOMP_FILTER_FLAG_TSYNC: the filter is this thread's (and its future children's).
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog);
}

static __thread char thread_kind[32] = "unfiltered";

void chost_set_thread_kind(const char *kind) {
    size_t length = strlen(kind);
    if (length >= sizeof(thread_kind)) length = sizeof(thread_kind) - 1;
    memcpy(thread_kind, kind, length);
    thread_kind[length] = 0;
}

const char *chost_thread_kind(void) { return thread_kind; }

// Async-signal-safe: only write(2) and _exit(2), both on every allow-list.
static void append(char *buffer, size_t *used, size_t size, const char *text) {
    while (*text && *used + 1 < size) buffer[(*used)++] = *text++;
}

static void append_number(char *buffer, size_t *used, size_t size, long value) {
    char digits[24];
    int count = 0;
    unsigned long magnitude = value < 0 ? (unsigned long)-value : (unsigned long)value;
    do { digits[count++] = (char)('0' + magnitude % 10); magnitude /= 10; } while (magnitude && count < 23);
    if (value < 0) digits[count++] = '-';
    while (count > 0 && *used + 1 < size) buffer[(*used)++] = digits[--count];
}

static void report_violation(int signal, siginfo_t *info, void *context) {
    (void)signal; (void)context;
    char line[256];
    size_t used = 0;
    const char *name = "unknown";
    for (int index = 0; index < chost_syscall_count; index++) {
        if (chost_syscalls[index].number == info->si_syscall) { name = chost_syscalls[index].name; break; }
    }
    append(line, &used, sizeof line, "swiftvmm: seccomp: the ");
    append(line, &used, sizeof line, thread_kind);
    append(line, &used, sizeof line, " thread made system call ");
    append(line, &used, sizeof line, name);
    append(line, &used, sizeof line, " (");
    append_number(line, &used, sizeof line, info->si_syscall);
    append(line, &used, sizeof line, "), which its allow-list forbids; see docs/security.md (--no-seccomp turns filtering off)\n");
    ssize_t ignored = write(STDERR_FILENO, line, used);
    (void)ignored;
    _exit(159);
}

int chost_install_violation_reporter(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = report_violation;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL);
}
