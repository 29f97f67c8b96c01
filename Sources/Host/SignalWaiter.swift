import Glibc
import Sandbox

/// The one thread that takes the process's termination signals. Every thread the VMM starts
/// blocks them (`blockInCallingThread`, and HostThreadHandle.spawn for its threads), so the
/// kernel can deliver them only to this thread's sigwait: a device or client thread never dies
/// of SIGTERM's default action, and the handler runs as ordinary code (it may take locks).
public final class SignalWaiter: Sendable {
    /// SIGINT, SIGTERM and SIGHUP.
    public static let terminationSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP]
    /// Sent only by `stop()`, to end the wait.
    public static let wakeSignal: Int32 = SIGUSR2

    /// What the handler wants after a signal.
    public enum Next: Sendable { case keepWaiting, stop }

    let thread: HostThreadHandle

    /// Blocks the termination signals and the wake signal in the calling thread; threads it
    /// starts later inherit the mask.
    public static func blockInCallingThread() {
        var set = signalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func signalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in terminationSignals + [wakeSignal] { sigaddset(&set, signal) }
        return set
    }

    /// Blocks the signals in the calling thread and starts the waiting thread, which calls
    /// `handler` with each termination signal until it answers `.stop` or `stop()` is called.
    public init(name: String = "signals", _ handler: @escaping @Sendable (Int32) -> Next) throws(HostError) {
        Self.blockInCallingThread()
        thread = try HostThreadHandle.spawn(.signals, name: name) {
            var set = SignalWaiter.signalSet()
            var received: Int32 = 0
            while true {
                guard sigwait(&set, &received) == 0 else { continue }
                if received == SignalWaiter.wakeSignal || handler(received) == .stop { return }
            }
        }
    }

    /// Ends the wait (if the handler has not) and joins the thread. Call once.
    public func stop() {
        thread.signal(Self.wakeSignal)
        thread.join()
    }

    /// Lets the thread wait until the process ends (a process-wide waiter nobody stops).
    public func detach() { thread.detach() }
}
