/*
 * steptrace: run a program under ptrace, single-stepping every thread, and
 * print each distinct instruction address it executed inside [LO, HI) as hex,
 * one per line, in first-execution order.
 *
 *   steptrace LO HI OUT -- PROGRAM ARGS...
 *
 * Used by tools/text-order.sh to find the code swiftvmm runs at start-up, so
 * the linker can place it together (see docs/benchmarks.md, "Start-up and
 * footprint"). A development tool: it is slow (one trap per instruction) and
 * is never part of the VMM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stddef.h>

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: steptrace LO HI OUT -- PROGRAM ARGS...\n");
        return 64;
    }
    uint64_t lo = strtoull(argv[1], NULL, 0), hi = strtoull(argv[2], NULL, 0);
    if (hi <= lo || hi - lo > (1ull << 32)) {
        fprintf(stderr, "steptrace: bad range\n");
        return 64;
    }
    FILE *out = fopen(argv[3], "w");
    if (!out) { perror("steptrace: output"); return 73; }
    /* One bit per byte address of the range: a 17 MB text is a 2 MB bitmap. */
    uint8_t *seen = calloc((hi - lo) / 8 + 1, 1);
    if (!seen) { perror("steptrace: bitmap"); return 70; }

    pid_t child = fork();
    if (child < 0) { perror("steptrace: fork"); return 71; }
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        raise(SIGSTOP);
        execvp(argv[5], &argv[5]);
        perror("steptrace: exec");
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    ptrace(PTRACE_SETOPTIONS, child, NULL,
           (void *)(PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC));
    ptrace(PTRACE_CONT, child, NULL, NULL);  /* run to the exec */

    int exec_seen = 0, exit_status = 0;
    uint64_t steps = 0, distinct = 0;
    for (;;) {
        pid_t tid = waitpid(-1, &status, __WALL);
        if (tid < 0) {
            if (errno == ECHILD) break;
            if (errno == EINTR) continue;
            perror("steptrace: waitpid");
            break;
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            if (tid == child)
                exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            continue;
        }
        if (!WIFSTOPPED(status)) continue;
        int sig = WSTOPSIG(status);
        int event = status >> 16;
        int deliver = 0;
        if (event == PTRACE_EVENT_EXEC) {
            exec_seen = 1;
        } else if (event == PTRACE_EVENT_CLONE) {
            /* the new thread reports its own SIGSTOP; it is stepped from there */
        } else if (sig == SIGTRAP) {
            if (exec_seen) {
                errno = 0;
                long rip = ptrace(PTRACE_PEEKUSER, tid, (void *)offsetof(struct user_regs_struct, rip), NULL);
                if (errno == 0) {
                    uint64_t a = (uint64_t)rip;
                    steps++;
                    if (a >= lo && a < hi) {
                        uint64_t o = a - lo;
                        if (!(seen[o >> 3] & (1u << (o & 7)))) {
                            seen[o >> 3] |= (uint8_t)(1u << (o & 7));
                            distinct++;
                            fprintf(out, "%lx\n", (unsigned long)a);
                        }
                    }
                }
            }
        } else if (sig == SIGSTOP && event == 0) {
            /* a new thread's first stop, or a group stop: swallow it */
        } else {
            deliver = sig;
        }
        if (exec_seen)
            ptrace(PTRACE_SINGLESTEP, tid, NULL, (void *)(long)deliver);
        else
            ptrace(PTRACE_CONT, tid, NULL, (void *)(long)deliver);
    }
    fclose(out);
    fprintf(stderr, "steptrace: %llu steps, %llu distinct addresses in range, status %d\n",
            (unsigned long long)steps, (unsigned long long)distinct, exit_status);
    return exit_status;
}
