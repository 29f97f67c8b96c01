import CKVM

/// The system calls each kind of thread may make, found by tracing every test's runs
/// (`strace -f`) and kept as narrow as the code allows. docs/security.md says why each is there.
public enum AllowLists {
    /// One rule per call: where lists overlap, an unconditional allow wins over a narrower one.
    public static func rules(for kind: ThreadKind) -> [SyscallRule] {
        var merged: [SyscallRule] = []
        for rule in listed(for: kind) {
            if let index = merged.firstIndex(where: { $0.name == rule.name }) {
                if rule.action == .allow { merged[index] = rule }
            } else {
                merged.append(rule)
            }
        }
        // The filter walks its rules in order for every call: the calls of the exit loop and the
        // device paths go first (KVM_RUN is one ioctl per exit).
        let hot = ["ioctl", "futex", "write", "read", "tgkill", "getpid", "madvise", "poll"]
        return merged.filter { hot.contains($0.name) }.sorted { hot.firstIndex(of: $0.name)! < hot.firstIndex(of: $1.name)! }
            + merged.filter { !hot.contains($0.name) }
    }

    static func listed(for kind: ThreadKind) -> [SyscallRule] {
        switch kind {
        // pread64: its own schedstat as it ends, from a file opened before the filter.
        case .vcpu: common + [.allow("pread64"), .allow("ioctl", argument: 1, in: vcpuIoctls + [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        case .vcpuSharing: listed(for: .vcpu) + shareFiles
        case .timer: common + [.allow("ioctl", argument: 1, in: [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        // Threads that reach devices raise their interrupts: console input (the UART), clients
        // and the controller (the balloon's configuration change), as vCPUs and timers do.
        case .io: common + ["read", "poll", "ppoll"].map(SyscallRule.allow) + [.allow("ioctl", argument: 1, in: terminalIoctls + [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        // A disk's worker: the image, opened before the filter, read and written at offsets,
        // synced, holes punched and ranges zeroed; its completions raise the device's interrupt.
        case .disk: common + ["pread64", "pwrite64", "fdatasync", "fallocate"].map(SyscallRule.allow)
            + [.allow("ioctl", argument: 1, in: [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        // A network interface's worker: the tap and its wake-up eventfd, both opened before the
        // filter, polled, read and written; delivered frames raise the device's interrupt.
        case .net: common + ["read", "poll", "ppoll"].map(SyscallRule.allow)
            + [.allow("ioctl", argument: 1, in: [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        case .signals: common + [.allow("rt_sigtimedwait")]
        // sched_setaffinity: the API pins vCPU threads (PUT /swiftvmm/vcpus/N/affinity).
        // Snapshots are written on the API's worker: the state calls and the files. A migration
        // it starts runs on a thread of this kind: it connects to the destination (a Unix or
        // IP socket) and turns dirty logging on and off on the memory slots.
        case .api: common + threads + files + sockets + events + snapshotFiles + [.allow("unlink"), .allow("sched_setaffinity"),
                                                                                  .allow("socket", argument: 0, in: [1, 2, 10]), .allow("connect"),
                                                                  .allow("ioctl", argument: 1, in: vcpuIoctls + stateIoctls + migrationIoctls + [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        case .controller: common + files + ["sched_setaffinity", "sched_getaffinity", "getdents64"].map(SyscallRule.allow)
            + [.allow("ioctl", argument: 1, in: [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)])]
        case .vmm:
            // Everything its threads need (they inherit this filter), and what building the
            // next machine takes on --on-reboot restart: /dev/kvm, the image, KVM's VM ioctls.
            common + threads + files + sockets + events + snapshotFiles + shareFiles
                + ["rt_sigtimedwait", "rt_sigaction", "poll", "ppoll", "sched_setaffinity", "sched_getaffinity", "unlink",
                   "eventfd2", "ftruncate", "fallocate"].map(SyscallRule.allow)
                + [.allow("socket", argument: 0, in: [1, 2, 10]), .allow("connect")]
                + [.allow("ioctl", argument: 1, in: vmIoctls + vcpuIoctls + stateIoctls + migrationIoctls + [ioctl(CKVM_IRQ_LINE), ioctl(CKVM_IRQ_LINE_STATUS)] + terminalIoctls + tapIoctls)]
        }
    }

    /// Every thread: memory (the allocator, guest-page release, pc-testdev's remap), locks,
    /// clocks, signal masks and returns, kicks (tgkill), logging to stderr, a thread's own end.
    static let common: [SyscallRule] = [
        "mmap", "munmap", "mprotect", "madvise", "mremap", "brk",
        "futex", "sched_yield", "nanosleep", "clock_nanosleep", "clock_gettime", "gettimeofday",
        "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "getpid", "gettid", "tgkill",
        "write", "writev", "close", "getrandom", "set_robust_list", "rseq", "exit", "exit_group", "fstat",
    ].map(SyscallRule.allow) + [
        // stdio's first write to a stream looks at its descriptor: fstat of an fd, never a path.
        .allow("newfstatat", argument: 3, allOf: 0x1000), // AT_EMPTY_PATH
    ]

    /// Starting threads: clone only with CLONE_VM | CLONE_THREAD (never a process); clone3,
    /// whose flags sit in memory a filter cannot read, says ENOSYS and glibc falls back to clone.
    /// A new thread inherits its creator's filter, then names itself (prctl PR_SET_NAME) and
    /// adds its own (prctl PR_SET_NO_NEW_PRIVS, seccomp): a filter can only narrow what is allowed.
    static let threads: [SyscallRule] = [
        .allow("clone", argument: 0, allOf: 0x100 | 0x10000),
        .fail("clone3", errno: 38),
        .allow("prctl", argument: 0, in: [15, 38]),
        .allow("seccomp", argument: 0, in: [1]),
    ]

    /// Reading files: /proc (memory and CPU views), images, configs.
    static let files: [SyscallRule] = ["openat", "read", "pread64", "lseek", "newfstatat", "fstat", "statx", "mincore", "fcntl"]
        .map(SyscallRule.allow)

    /// Serving clients on sockets already bound: accept, talk, time out, close.
    static let sockets: [SyscallRule] = ["accept", "accept4", "read", "recvfrom", "sendto", "sendmsg", "recvmsg", "poll", "ppoll",
                                         "setsockopt", "getsockopt", "shutdown", "fcntl"].map(SyscallRule.allow)

    /// The HTTP API's event loop (SwiftNIO): epoll, its wake-up eventfd and timerfd, and the
    /// address calls of each accepted connection. NIO counts the CPUs it may use once.
    /// Its shutdown completes on a libdispatch queue, whose worker threads set their own nice
    /// value from their QoS (setpriority on the calling thread only: who = 0).
    static let events: [SyscallRule] = ["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2", "timerfd_create",
                                        "timerfd_settime", "getsockname", "getpeername", "sched_getaffinity"].map(SyscallRule.allow)
        + [.allow("setpriority", argument: 1, in: [0])]

    static func ioctl(_ request: UInt) -> UInt32 { UInt32(truncatingIfNeeded: request) }

    /// A vCPU's own requests; the debugger and gdb stub make the state ones from their threads.
    static let vcpuIoctls: [UInt32] = [
        CKVM_RUN, CKVM_GET_REGS, CKVM_SET_REGS, CKVM_GET_SREGS, CKVM_SET_SREGS, CKVM_GET_FPU, CKVM_SET_FPU,
        CKVM_GET_XSAVE, CKVM_SET_XSAVE, CKVM_GET_VCPU_EVENTS, CKVM_SET_VCPU_EVENTS, CKVM_GET_LAPIC, CKVM_SET_LAPIC,
        CKVM_TRANSLATE, CKVM_SET_GUEST_DEBUG, CKVM_GET_MSRS,
        CKVM_INTERRUPT, // deterministic mode: interrupts from the userspace 8259 pair
        CKVM_SET_MP_STATE, // waking from S3: the APs back to waiting for INIT/SIPI
    ].map(ioctl)

    /// Building a VM.
    static let vmIoctls: [UInt32] = [
        CKVM_GET_API_VERSION, CKVM_CREATE_VM, CKVM_CHECK_EXTENSION, CKVM_GET_VCPU_MMAP_SIZE, CKVM_GET_SUPPORTED_CPUID,
        CKVM_SET_USER_MEMORY_REGION, CKVM_SET_TSS_ADDR, CKVM_SET_IDENTITY_MAP_ADDR, CKVM_CREATE_VCPU, CKVM_SET_CPUID2,
        CKVM_CREATE_IRQCHIP, CKVM_CREATE_PIT2,
    ].map(ioctl)

    /// Saving and restoring a machine's state (snapshots): vCPU, VM and system requests.
    static let stateIoctls: [UInt32] = [
        CKVM_GET_SREGS2, CKVM_SET_SREGS2, CKVM_GET_XSAVE2, CKVM_GET_XCRS, CKVM_SET_XCRS, CKVM_GET_DEBUGREGS, CKVM_SET_DEBUGREGS,
        CKVM_GET_MP_STATE, CKVM_SET_MP_STATE, CKVM_SET_MSRS, CKVM_GET_MSR_INDEX_LIST, CKVM_GET_IRQCHIP, CKVM_SET_IRQCHIP,
        CKVM_GET_PIT2, CKVM_SET_PIT2, CKVM_GET_CLOCK, CKVM_SET_CLOCK, CKVM_GET_TSC_KHZ, CKVM_SET_TSC_KHZ,
    ].map(ioctl)

    /// A migration's dirty logging: the memory slots set again with the flag, their logs read.
    static let migrationIoctls: [UInt32] = [CKVM_SET_USER_MEMORY_REGION, CKVM_GET_DIRTY_LOG].map(ioctl)

    /// Writing a snapshot's files: the state file next to its name, synced, renamed into place;
    /// the memory file sized, written sparse, holes punched.
    static let snapshotFiles: [SyscallRule] = ["pwrite64", "ftruncate", "fsync", "fdatasync", "rename", "fallocate", "unlink", "lseek"]
        .map(SyscallRule.allow)

    /// TCGETS, TCSETS, TCSETSW, TCSETSF: a terminal's raw mode, entered and restored.
    /// The file hypercalls of a share (`--share`), on the vCPU threads that serve them: paths
    /// resolved with openat2 beneath the share, changes made with the *at calls in a resolved
    /// parent, directory listings.
    static let shareFiles: [SyscallRule] = ["openat2", "read", "pread64", "pwrite64", "lseek", "fstat", "fsync", "getdents64",
                                            "unlinkat", "mkdirat", "renameat"].map(SyscallRule.allow)

    static let terminalIoctls: [UInt32] = [0x5401, 0x5402, 0x5403, 0x5404]
    /// TUNSETIFF, SIOCGIFFLAGS, SIOCSIFFLAGS: a machine built again on `--on-reboot restart`
    /// opens its taps and brings one it created up.
    static let tapIoctls: [UInt32] = [0x4004_54CA, 0x8913, 0x8914]
}
