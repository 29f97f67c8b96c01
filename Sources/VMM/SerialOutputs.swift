import Host
import Devices
import Glibc
import KVM
import Synchronization
import VMMCore

/// Writes text (log lines, trace lines) to a file descriptor, retrying short writes and EINTR.
public final class FileDescriptorOutput: Sendable {
    let fd: Int32
    let ownsDescriptor: Bool

    public init(fd: Int32, ownsDescriptor: Bool = false) {
        self.fd = fd
        self.ownsDescriptor = ownsDescriptor
    }

    /// Opens (creating or truncating) `path` for writing.
    public convenience init(path: String) throws(VMMError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .outputPath(path: path, reason: String(cString: strerror(errno))) }
        self.init(fd: fd, ownsDescriptor: true)
    }

    deinit { if ownsDescriptor { close(fd) } }

    /// Writes a whole string.
    public func write(text: String) {
        writeAll(text, to: FileDescriptor(rawValue: fd))
    }
}

/// UART output to a file descriptor through a bounded buffer and a writer thread of its own.
///
/// The UART calls `write` under its device lock on a vCPU thread, so that call never blocks: a
/// reader that stops reading (a full pipe, a stopped terminal) fills the buffer, and what does
/// not fit is dropped and counted instead of stalling the guest, the other vCPUs or shutdown.
public final class BufferedSerialOutput: SerialOutput, @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    public static let capacity = 1 << 20
    /// Bytes the writer hands to write(2) at once: a pipe reported writable takes this many
    /// without blocking (PIPE_BUF).
    static let chunk = 4096

    private let fd: Int32
    private let ownsDescriptor: Bool
    private let lock = ConditionLock()
    /// Bytes write(2) has taken so far (a fault-tolerant primary reports it to its backup).
    private let written = Atomic<UInt64>(0)
    /// Called by the writer after each write(2) with the total written (guarded by `lock`).
    private var afterWrite: (@Sendable (UInt64) -> Void)?

    /// Has the writer call `body` with the total written after each write(2).
    func setAfterWrite(_ body: @escaping @Sendable (UInt64) -> Void) { lock.withLock { afterWrite = body } }
    private var buffer: [UInt8] = []
    private var start = 0
    private var closing = false
    /// Set by finish(): the writer gives up on a reader that takes nothing after this (ns).
    private var closeDeadline = UInt64.max
    private var writerDone = false
    private var droppedBytes: UInt64 = 0
    private var writeFailed = false
    private var writer: HostThreadHandle?

    /// Writes to `fd` (stdout), which stays open.
    public init(fd: Int32) throws(VMMError) {
        self.fd = fd
        ownsDescriptor = false
        try startWriter()
    }

    /// Opens (creating or truncating) `path` for the guest's output; `append` keeps what it holds
    /// and appends (the two members of a fault-tolerant pair share the file).
    public init(path: String, append: Bool = false) throws(VMMError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0o644)
        guard fd >= 0 else { throw .serialOutput(path: path, reason: String(cString: strerror(errno))) }
        self.fd = fd
        ownsDescriptor = true
        do { try startWriter() } catch {
            close(fd)
            throw error
        }
    }

    deinit { if ownsDescriptor { close(fd) } }

    /// The descriptor written to.
    var descriptor: Int32 { fd }

    /// Bytes written out so far.
    var bytesWritten: UInt64 { written.load(ordering: .acquiring) }

    private func startWriter() throws(VMMError) {
        writer = try VMMError.host { () throws(HostError) in try HostThreadHandle.spawn(.io, name: "serial-out") { [self] in self.drain() } }
    }

    public func write(_ byte: UInt8) {
        lock.withLock {
            guard buffer.count - start < Self.capacity, !writeFailed else {
                droppedBytes &+= 1
                return
            }
            let wasEmpty = buffer.count == start
            buffer.append(byte)
            if wasEmpty { lock.broadcast() } // the writer only sleeps on an empty buffer
        }
    }

    /// Writes what is buffered, waiting at most `timeout` seconds for a reader that does not
    /// take it, then stops the writer. Returns the bytes dropped over the whole run.
    @discardableResult
    public func finish(timeout: Double = 2) -> UInt64 {
        let deadline = Clocks.monotonicNanoseconds().saturatingAdd(UInt64(saturating: timeout * 1e9))
        let (lost, done) = lock.withLock {
            closing = true
            closeDeadline = deadline
            lock.broadcast()
            while !writerDone && Clocks.monotonicNanoseconds() < deadline { lock.wait(until: deadline) }
            return (droppedBytes &+ UInt64(buffer.count - start), writerDone)
        }
        // A writer stuck in write(2) (a terminal stopped with Ctrl-S) is left to end by itself.
        if done { writer?.join() } else { writer?.detach() }
        writer = nil
        return lost
    }

    private func drain() {
        lock.lock()
        while true {
            while buffer.count == start && !closing { lock.wait() }
            if buffer.count == start || writeFailed { break } // closing with nothing left
            let end = min(buffer.count, start + Self.chunk)
            let bytes = Array(buffer[start..<end])
            lock.unlock()
            let written = writeWhenReady(bytes)
            lock.lock()
            if written < 0 { writeFailed = true; continue }
            let total = self.written.add(UInt64(written), ordering: .releasing).newValue
            if let afterWrite {
                lock.unlock()
                afterWrite(total) // outside the lock: it may wait on a socket
                lock.lock()
            }
            start += written
            if start == buffer.count || start >= Self.capacity { // compact now and then
                buffer.removeFirst(start)
                start = 0
            }
        }
        writerDone = true
        lock.broadcast()
        lock.unlock()
    }

    /// Waits until the descriptor takes data, then writes; -1 when it never will (EPIPE, a
    /// closed descriptor) or finish()'s deadline passed. Waits in short polls, so the writer
    /// notices that deadline.
    private func writeWhenReady(_ bytes: [UInt8]) -> Int {
        let descriptor = FileDescriptor(rawValue: fd)
        while true {
            guard let ready = try? descriptor.poll(.writable, milliseconds: 100) else { return -1 }
            if ready.isEmpty {
                // A reader that is slow but reading gets until finish()'s deadline.
                if Clocks.monotonicNanoseconds() >= lock.withLock({ closeDeadline }) { return -1 }
                continue
            }
            if !ready.isDisjoint(with: [.error, .invalid]) { return -1 }
            do {
                let count = try descriptor.write(bytes[...])
                return count > 0 ? count : -1
            } catch where error.wouldBlock {
                continue
            } catch {
                return -1
            }
        }
    }
}

/// Drops UART output (`--serial none`).
public struct DiscardOutput: SerialOutput {
    public init() {}
    public func write(_ byte: UInt8) {}
}

