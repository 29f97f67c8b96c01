import CHost
import Synchronization

/// A value behind a lock: Swift's Mutex, with the thread sanitizer told about each hand-over
/// (Mutex on Linux is a futex TSan cannot see, so `make sanitize` reported every device access
/// as a race). In ordinary builds the annotations are empty calls.
public struct Locked<Value>: ~Copyable, Sendable {
    private let mutex: Mutex<Value>
    /// The address that names this lock to TSan: one byte of its own, allocated here and freed
    /// in deinit, never read or written (kept as an integer so the struct stays Sendable).
    /// It cannot be the value's address: taking that (`&value`) is itself an access TSan checks,
    /// and one taken before the acquire raced with the previous holder's taken for its release
    /// (reported between the fault-tolerance link's vCPU and serial-writer threads).
    private let tsanName: UInt

    public init(_ initialValue: consuming sending Value) {
        mutex = Mutex(initialValue)
        tsanName = UInt(bitPattern: UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1))
    }

    deinit { UnsafeMutableRawPointer(bitPattern: tsanName)?.deallocate() }

    public borrowing func withLock<Result, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result {
        try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            // Only a name for TSan's happens-before edge: nothing goes through the pointer.
            let name = UnsafeMutableRawPointer(bitPattern: tsanName)
            chost_tsan_acquire(name)
            defer { chost_tsan_release(name) }
            return try body(&value)
        }
    }
}
