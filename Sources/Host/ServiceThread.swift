import Sandbox

/// A thread that serves until told to stop, sleeping on `lock` between jobs: the API's worker, the
/// metrics timer. Its owner keeps its own state under the same lock; `stop()` raises the flag
/// under it, wakes the thread and joins it.
public final class ServiceThread: @unchecked Sendable {
    // @unchecked: `stopping` and `handle` are touched with `lock` held.
    public let lock = ConditionLock()
    private var stopping = false
    private var handle: HostThreadHandle?

    public init() {}

    /// Starts `body` on a thread of `kind`.
    public func start(_ kind: ThreadKind, name: String, _ body: @escaping @Sendable () -> Void) throws(HostError) {
        let thread = try HostThreadHandle.spawn(kind, name: name, body)
        lock.withLock { handle = thread }
    }

    /// Whether `stop()` was called; read with `lock` held.
    public var stopRequested: Bool { stopping }

    /// Asks the thread to end, wakes it, and waits until it has.
    public func stop() {
        let thread = lock.withLock { () -> HostThreadHandle? in
            stopping = true
            lock.broadcast()
            defer { handle = nil }
            return handle
        }
        thread?.join()
    }
}
