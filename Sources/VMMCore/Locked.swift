import CHost
import Synchronization

/// A value behind a lock: Swift's Mutex, with the thread sanitizer told about each hand-over
/// (Mutex on Linux is a futex TSan cannot see, so `make sanitize` reported every device access
/// as a race). In ordinary builds the annotations are empty calls.
public struct Locked<Value>: ~Copyable, Sendable {
    private let mutex: Mutex<Value>

    public init(_ initialValue: consuming sending Value) { mutex = Mutex(initialValue) }

    public borrowing func withLock<Result, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result {
        try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            // The value's address is only a name for TSan's happens-before edge: nothing reads or
            // writes through the pointer, and it is not kept past the call.
            withUnsafeMutablePointer(to: &value) { chost_tsan_acquire(UnsafeMutableRawPointer($0)) }
            defer { withUnsafeMutablePointer(to: &value) { chost_tsan_release(UnsafeMutableRawPointer($0)) } }
            return try body(&value)
        }
    }
}
