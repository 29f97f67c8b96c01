import Devices
import Glibc

/// Writes UART output to a file descriptor, byte by byte as a serial line would.
public final class FileDescriptorOutput: SerialOutput {
    let fd: Int32
    let ownsDescriptor: Bool

    public init(fd: Int32, ownsDescriptor: Bool = false) {
        self.fd = fd
        self.ownsDescriptor = ownsDescriptor
    }

    /// Opens (creating or truncating) `path` for the guest's output.
    public convenience init(path: String) throws(VMMError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .serialOutput(path: path, reason: String(cString: strerror(errno))) }
        self.init(fd: fd, ownsDescriptor: true)
    }

    deinit { if ownsDescriptor { close(fd) } }

    public func write(_ byte: UInt8) {
        var value = byte
        while Glibc.write(fd, &value, 1) < 0 && errno == EINTR {}
    }

    /// Writes a whole string (used for log lines).
    public func write(text: String) {
        writeAll(text, to: fd)
    }
}

/// Drops UART output (`--serial none`).
public struct DiscardOutput: SerialOutput {
    public init() {}
    public func write(_ byte: UInt8) {}
}
