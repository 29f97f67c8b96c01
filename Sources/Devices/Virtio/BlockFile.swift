import CHost
import Glibc
import VMMCore

/// Why a disk image cannot be opened.
public struct BlockFileError: Error, CustomStringConvertible {
    public let description: String
}

/// A raw disk image file: what `--disk PATH[,ro]` serves. Opened read-only for `ro` (the file is
/// never written), read-write otherwise; FIFOs, devices and directories are refused without
/// blocking in open.
public final class FileBlockBackend: BlockBackend {
    /// Zeroes are written in pieces of this size when the file system cannot zero a range.
    static let zeroChunk = 64 * 1024

    public let path: String
    public let size: UInt64
    public let readOnly: Bool
    public var supportsDiscard: Bool { !readOnly }
    private let fd: Int32

    public init(path: String, readOnly: Bool) throws(BlockFileError) {
        // O_NONBLOCK: a FIFO would otherwise hang the open; it is cleared again below.
        let fd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw BlockFileError(description: "disk \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw BlockFileError(description: "disk \(path): not a regular file (a raw image is needed)")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        let size = UInt64(max(0, info.st_size))
        guard size >= BlockModel.sectorSize else {
            close(fd)
            throw BlockFileError(description: "disk \(path): \(size) bytes, smaller than one 512-byte sector")
        }
        (self.path, self.size, self.readOnly, self.fd) = (path, size, readOnly, fd)
    }

    deinit { close(fd) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        // Safe: each piece lies inside `buffer`, which the caller's withRAM checked is guest RAM.
        whole(buffer.count, at: offset) { done, position in pread(fd, buffer.baseAddress! + done, buffer.count - done, position) }
    }

    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        guard !readOnly else { return false }
        // Safe: as in read, each piece lies inside checked guest RAM.
        return whole(buffer.count, at: offset) { done, position in pwrite(fd, buffer.baseAddress! + done, buffer.count - done, position) }
    }

    /// Repeats `call` (given the bytes done and the file position) until `count` bytes are done;
    /// false on an error or when nothing more moves (the file ended: it shrank).
    private func whole(_ count: Int, at offset: UInt64, _ call: (Int, off_t) -> Int) -> Bool {
        var done = 0
        while done < count {
            let result = call(done, off_t(clamping: offset.saturatingAdd(UInt64(done))))
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else { return false }
            done += result
        }
        return true
    }

    public func flush() -> Bool {
        while fdatasync(fd) != 0 {
            guard errno == EINTR else { return false }
        }
        return true
    }

    /// Punches a hole; a file system that cannot is left as it is (discard is a hint).
    public func discard(at offset: UInt64, length: UInt64) -> Bool {
        guard !readOnly else { return false }
        if allocate(chost_punch_hole, offset, length) { return true }
        return errno == EOPNOTSUPP || errno == ENOSYS
    }

    /// Zeroes a range: a hole when unmapping is allowed, else the file system's zero range, else
    /// written zeroes.
    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) -> Bool {
        guard !readOnly else { return false }
        if unmap, allocate(chost_punch_hole, offset, length) { return true }
        if allocate(chost_zero_range, offset, length) { return true }
        let zeroes = [UInt8](repeating: 0, count: Self.zeroChunk)
        var done: UInt64 = 0
        while done < length {
            let piece = Int(min(UInt64(Self.zeroChunk), length - done))
            let ok = zeroes.withUnsafeBytes { write(from: UnsafeRawBufferPointer(rebasing: $0[0..<piece]), at: offset + done) }
            guard ok else { return false }
            done += UInt64(piece)
        }
        return true
    }

    private func allocate(_ call: (Int32, Int64, Int64) -> Int32, _ offset: UInt64, _ length: UInt64) -> Bool {
        while true {
            if call(fd, Int64(clamping: offset), Int64(clamping: length)) == 0 { return true }
            if errno != EINTR { return false }
        }
    }
}
