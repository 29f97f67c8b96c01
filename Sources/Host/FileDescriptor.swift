import Glibc
import VMMCore

/// A descriptor number with the calls the VMM makes on it. Every call that can be interrupted
/// by a signal (the vCPU kick, a termination signal on its way to the signal thread) retries
/// EINTR here, and only here; partial reads and writes are the caller's to loop over, or
/// `readAll`/`writeAll` loop for it. The struct does not own the descriptor: `close()` is explicit.
public struct FileDescriptor: Sendable, Hashable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let standardInput = FileDescriptor(rawValue: STDIN_FILENO)
    public static let standardOutput = FileDescriptor(rawValue: STDOUT_FILENO)
    public static let standardError = FileDescriptor(rawValue: STDERR_FILENO)

    public var description: String { "fd \(rawValue)" }

    /// Runs `call` until it returns something other than -1 with EINTR.
    @inline(__always)
    static func retrying<Result: BinaryInteger>(_ call: () -> Result) throws(Errno) -> Result {
        while true {
            let result = call()
            if result >= 0 { return result }
            if errno != EINTR { throw Errno.current }
        }
    }

    /// One read(2) into raw memory the caller owns (at most its count); the bytes read.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        // Safe: read writes at most buffer.count bytes into the caller's buffer, lent for the call.
        return try Self.retrying { Glibc.read(rawValue, base, buffer.count) }
    }

    /// One read(2) into `buffer` (at most its count); the bytes read (0: end of file).
    public func read(into buffer: inout [UInt8]) throws(Errno) -> Int {
        // Safe: read writes at most buffer.count bytes into the array's own storage, lent for the call.
        try Self.retrying { buffer.withUnsafeMutableBytes { Glibc.read(rawValue, $0.baseAddress, $0.count) } }
    }

    /// pread(2) until `count` bytes from `offset` are read or the file ends (then fewer).
    public func readAll(count: Int, at offset: Int64 = 0) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(0, count))
        var done = 0
        while done < bytes.count {
            let position = offset &+ Int64(done)
            // Safe: pread writes at most the remaining count into the array's own storage.
            let read = try Self.retrying {
                bytes.withUnsafeMutableBytes { pread(rawValue, $0.baseAddress! + done, $0.count - done, off_t(position)) }
            }
            if read == 0 { bytes.removeLast(bytes.count - done); break }
            done += read
        }
        return bytes
    }

    /// One write(2) of (a prefix of) `bytes`; how many were written.
    public func write(_ bytes: ArraySlice<UInt8>) throws(Errno) -> Int {
        // Safe: write reads at most bytes.count bytes of the slice, lent for the call.
        try Self.retrying { bytes.withUnsafeBytes { Glibc.write(rawValue, $0.baseAddress, $0.count) } }
    }

    /// One send(2) with MSG_NOSIGNAL: a peer that went away is EPIPE, never SIGPIPE.
    public func send(_ bytes: ArraySlice<UInt8>) throws(Errno) -> Int {
        // Safe: send reads at most bytes.count bytes of the slice, lent for the call.
        try Self.retrying { bytes.withUnsafeBytes { Glibc.send(rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
    }

    /// Writes every byte (socket: sends, without SIGPIPE), looping over partial writes. A
    /// descriptor that takes nothing (a write of 0) is EIO.
    public func writeAll(_ bytes: [UInt8], socket: Bool = false) throws(Errno) {
        var rest = bytes[...]
        while !rest.isEmpty {
            let written = socket ? try send(rest) : try write(rest)
            guard written > 0 else { throw Errno(EIO) }
            rest = rest.dropFirst(written)
        }
    }

    /// What poll(2) can wait for and report.
    public struct Events: OptionSet, Sendable {
        public let rawValue: Int16
        public init(rawValue: Int16) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: Int16(POLLIN))
        public static let writable = Events(rawValue: Int16(POLLOUT))
        public static let error = Events(rawValue: Int16(POLLERR))
        public static let hangUp = Events(rawValue: Int16(POLLHUP))
        public static let invalid = Events(rawValue: Int16(POLLNVAL))
    }

    /// Waits up to `milliseconds` (negative: without a limit) for `events`; what was reported
    /// (empty: the time passed). A signal does not end the wait early: the time left is waited.
    public func poll(_ events: Events, milliseconds: Int) throws(Errno) -> Events {
        let deadline = milliseconds < 0 ? nil : Clocks.monotonicNanoseconds().saturatingAdd(UInt64(milliseconds) &* 1_000_000)
        while true {
            var left: Int32 = -1
            if let deadline {
                let now = Clocks.monotonicNanoseconds()
                left = Int32(clamping: now >= deadline ? 0 : (deadline - now + 999_999) / 1_000_000)
            }
            var entry = pollfd(fd: rawValue, events: events.rawValue, revents: 0)
            let ready = Glibc.poll(&entry, 1, left)
            if ready >= 0 { return Events(rawValue: entry.revents) }
            if errno != EINTR { throw Errno.current }
        }
    }

    /// accept(2) on a listening socket: the connection, close-on-exec.
    public func accept() throws(Errno) -> FileDescriptor {
        let connection = try Self.retrying { Glibc.accept(rawValue, nil, nil) }
        _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
        return FileDescriptor(rawValue: connection)
    }

    /// close(2); EINTR is not retried (Linux has released the descriptor either way).
    public func close() { _ = Glibc.close(rawValue) }
}
