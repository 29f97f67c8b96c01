import Glibc
import Sandbox

/// A joinable host thread running a Swift closure (vCPUs run on these, never on Swift Tasks).
public struct HostThreadHandle: @unchecked Sendable {
    // pthread_t is an opaque integer handle; it is only passed back to pthread calls.
    let thread: pthread_t

    /// Starts `body` on a new pthread named `name` (top and ps show it; 15 characters kept),
    /// which runs under the seccomp allow-list of `kind` when filtering is on.
    /// `prelude` runs in the new thread before its filter: what the filter will forbid, such as
    /// opening a file the thread reads later.
    public static func spawn(_ kind: ThreadKind, name: String, prelude: (@Sendable () -> Void)? = nil,
                             _ body: @escaping @Sendable () -> Void) throws(HostError) -> HostThreadHandle {
        final class Box: @unchecked Sendable { // handed to exactly one thread, then released
            let kind: ThreadKind, name: String, prelude: (@Sendable () -> Void)?, body: @Sendable () -> Void
            init(_ kind: ThreadKind, _ name: String, _ prelude: (@Sendable () -> Void)?, _ body: @escaping @Sendable () -> Void) {
                (self.kind, self.name, self.prelude, self.body) = (kind, name, prelude, body)
            }
        }
        let box = Unmanaged.passRetained(Box(kind, name, prelude, body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
            SignalWaiter.blockInCallingThread()
            HostThread.setName(box.name)
            box.prelude?()
            Seccomp.enterOrExit(box.kind)
            box.body()
            return nil
        }, box)
        guard result == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw .call("pthread_create", Errno(result))
        }
        return HostThreadHandle(thread: thread)
    }

    /// Waits for the thread to finish.
    public func join() {
        pthread_join(thread, nil)
    }

    /// Lets the thread's resources go when it ends, without a join.
    public func detach() {
        pthread_detach(thread)
    }

    /// CPU time the thread has used, in seconds (nil once it has been joined or on error).
    public func cpuSeconds() -> Double? {
        var clock = clockid_t()
        guard pthread_getcpuclockid(thread, &clock) == 0 else { return nil }
        var time = timespec()
        guard clock_gettime(clock, &time) == 0 else { return nil }
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Sends `signal` to the thread (used to kick a vCPU out of KVM_RUN).
    public func signal(_ signal: Int32) {
        pthread_kill(thread, signal)
    }
}
