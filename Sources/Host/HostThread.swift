import CHost
import Glibc

/// Calls on the calling thread (or one named by its kernel id) that need the C shim.
public enum HostThread {
    /// The kernel thread id of the calling thread.
    public static var currentID: Int32 { chost_gettid() }

    /// Names the calling thread (visible in top/ps; at most 15 characters kept).
    public static func setName(_ name: String) {
        chost_set_thread_name(name)
    }

    /// Pins thread `tid` (0 = the caller) to `cpus`.
    public static func setAffinity(thread tid: Int32 = 0, cpus: [Int]) throws(HostError) {
        let list = cpus.map { Int32(truncatingIfNeeded: $0) }
        // Safe: the shim reads `count` ints from the array's storage, lent for the call.
        let result = list.withUnsafeBufferPointer { chost_set_affinity(tid, $0.baseAddress, Int32($0.count)) }
        if result != 0 { throw .call("sched_setaffinity", .current) }
    }

    /// The host CPUs thread `tid` (0 = the caller) may run on, ascending (at most 1024).
    public static func affinity(thread tid: Int32 = 0) throws(HostError) -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        // Safe: the shim writes at most `capacity` ints into the array's storage, lent for the call.
        let count = cpus.withUnsafeMutableBufferPointer { chost_get_affinity(tid, $0.baseAddress, Int32($0.count)) }
        guard count >= 0 else { throw .call("sched_getaffinity", .current) }
        return cpus.prefix(Int(count)).map(Int.init)
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
    public static func installKickHandler(signal: Int32) throws(HostError) {
        if chost_install_kick_handler(signal) != 0 { throw .call("sigaction", .current) }
    }
}
