import CKVM
import Glibc

/// Host-thread helpers that need GNU-only calls (reached through the C shim).
public enum HostThread {
    /// The kernel thread id of the calling thread.
    public static var currentID: Int32 { ckvm_gettid() }

    /// Names the calling thread (visible in top/ps; at most 15 characters kept).
    public static func setName(_ name: String) {
        ckvm_set_thread_name(name)
    }

    /// Pins thread `tid` (0 = the caller) to `cpus`.
    public static func setAffinity(thread tid: Int32 = 0, cpus: [Int]) throws(KVMError) {
        let list = cpus.map { Int32(truncatingIfNeeded: $0) }
        let result = list.withUnsafeBufferPointer { ckvm_set_affinity(tid, $0.baseAddress, Int32($0.count)) }
        if result != 0 { throw KVMError("sched_setaffinity", errno: errno) }
    }

    /// Unblocks `signal` for the calling thread. A process can inherit a mask that blocks it (a
    /// parent spawning from a thread that blocks SIGUSR1 passes that on), which would make the
    /// vCPU kick unreachable.
    public static func unblock(signal: Int32) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Installs the no-op handler that lets `signal` interrupt a blocked KVM_RUN.
    public static func installKickHandler(signal: Int32) throws(KVMError) {
        if ckvm_install_kick_handler(signal) != 0 { throw KVMError("sigaction", errno: errno) }
    }
}
