import Glibc
import Host
import Replay
import VMMCore

/// Writes a record/replay log: the header at once, then each chunk as it fills (on the vCPU
/// thread: one write(2) per 32 KiB of records), and the rest at the end.
final class ReplayRecorder: @unchecked Sendable {
    // @unchecked: used by the one vCPU thread of a deterministic machine, and by the machine
    // after that thread ended.
    let path: String
    /// Writes bytes on; the error's words when it could not.
    private let sink: ([UInt8]) -> String?
    private var encoder = ReplayLogEncoder()
    private(set) var bytesWritten: UInt64 = 0
    /// The first write that failed (the log is then incomplete; the run says so at the end).
    private(set) var failure: String?

    /// A log file at `path` (created, or truncated, with mode 0600).
    convenience init(path: String, header: ReplayHeader) throws(VMMError) {
        let raw = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0o600)
        guard raw >= 0 else { throw .outputPath(path: path, reason: Errno.current.description) }
        let fd = FileDescriptor(rawValue: raw)
        let owner = DescriptorOwner(fd)
        self.init(name: path, header: header) { bytes in
            do throws(Errno) { try owner.fd.writeAll(bytes) } catch { return error.description }
            return nil
        }
        if let failure { throw .outputPath(path: path, reason: failure) }
    }

    /// A log going to `sink` (a fault-tolerant primary's link); the header goes at once.
    init(name: String, header: ReplayHeader, sink: @escaping ([UInt8]) -> String?) {
        (path, self.sink) = (name, sink)
        write(header.encoded)
    }

    var exits: UInt64 { encoder.exits }

    func append(_ record: ReplayRecord) {
        encoder.append(record)
        if encoder.chunkIsFull { flush() }
    }

    /// Writes what is encoded so far as a chunk.
    func flush() {
        guard encoder.hasPending else { return }
        write(encoder.seal())
    }

    private func write(_ bytes: [UInt8]) {
        guard failure == nil else { return }
        if let failure = sink(bytes) {
            self.failure = failure
            return
        }
        bytesWritten &+= UInt64(bytes.count)
    }

    /// Whether records wait in the current chunk.
    var hasPending: Bool { encoder.hasPending }
}

/// Closes a descriptor when the last reference to it goes.
final class DescriptorOwner: Sendable {
    let fd: FileDescriptor
    init(_ fd: FileDescriptor) { self.fd = fd }
    deinit { fd.close() }
}

/// Where a replay's chunks come from: a log file, or a primary's stream (fault tolerance).
protocol ReplayChunkSource: AnyObject, Sendable {
    /// The next chunk's (length, checksum, payload); nil at the end (of the file, or of the
    /// stream: the primary is gone).
    func nextChunk(afterExit exits: UInt64) throws(ReplayLogError) -> (length: UInt32, checksum: UInt64, payload: [UInt8])?
    /// Whether the end of this source means the recording went on elsewhere (a stream), not
    /// that the log is cut short (a file).
    var isStream: Bool { get }
}

/// A log file, read chunk by chunk at its offset.
final class ReplayFileSource: ReplayChunkSource, @unchecked Sendable {
    // @unchecked: read by the one vCPU thread of a replaying machine (and before it starts).
    private let fd: FileDescriptor
    private var offset: Int64
    private var ended = false
    var isStream: Bool { false }

    /// Opens `path`; the header is read with `readHeader`.
    init(path: String) throws(ReplayLogError) {
        let raw = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard raw >= 0 else { throw .unreadable(Errno.current.description) }
        var info = stat()
        guard fstat(raw, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(raw)
            throw .unreadable("not a regular file")
        }
        (fd, offset) = (FileDescriptor(rawValue: raw), 0)
    }

    deinit { fd.close() }

    func readHeader() throws(ReplayLogError) -> ReplayHeader {
        var position: Int64 = 0
        let (header, size) = try ReplayHeader.read { count in
            defer { position += Int64(count) }
            return try? fd.readAll(count: count, at: position)
        }
        offset = Int64(size)
        return header
    }

    func nextChunk(afterExit exits: UInt64) throws(ReplayLogError) -> (length: UInt32, checksum: UInt64, payload: [UInt8])? {
        guard !ended else { return nil }
        guard let frame = try? fd.readAll(count: 12, at: offset), !frame.isEmpty else {
            ended = true
            return nil
        }
        guard frame.count == 12 else { throw .truncated(exits: exits) }
        let length = Int(LittleEndian.load(frame, at: 0, size: 4)), checksum = LittleEndian.load(frame, at: 4, size: 8)
        guard length >= 1, length <= ReplayLog.maximumChunk else { throw .corrupt("a chunk of \(length) bytes after exit \(exits)") }
        guard let payload = try? fd.readAll(count: length, at: offset + 12), payload.count == length else {
            throw .truncated(exits: exits)
        }
        offset += Int64(12 + length)
        return (UInt32(length), checksum, payload)
    }
}

/// Reads a record/replay log record by record from its chunks, checking each chunk.
final class ReplayPlayer: @unchecked Sendable {
    // @unchecked: used by the one vCPU thread of a replaying machine, and before and after it.
    let path: String
    let header: ReplayHeader
    let source: any ReplayChunkSource
    private var decoder = ReplayLogDecoder()
    private var lookahead: ReplayRecord?

    init(path: String, header: ReplayHeader, source: any ReplayChunkSource) {
        (self.path, self.header, self.source) = (path, header, source)
    }

    /// Opens the log file at `path` and reads its header.
    convenience init(path: String) throws(ReplayLogError) {
        let file = try ReplayFileSource(path: path)
        self.init(path: path, header: try file.readHeader(), source: file)
    }

    /// Exit records read so far.
    var exits: UInt64 { decoder.exits }

    /// The next record without taking it; nil at the end of the source (a truncated file: an
    /// intact one ends with its end record; a stream whose primary is gone).
    func peek() throws(ReplayLogError) -> ReplayRecord? {
        if let lookahead { return lookahead }
        while true {
            if let record = try decoder.next() {
                lookahead = record
                return record
            }
            guard let chunk = try source.nextChunk(afterExit: decoder.exits) else { return nil }
            try decoder.feed(length: chunk.length, checksum: chunk.checksum, payload: chunk.payload)
        }
    }

    /// Takes the record `peek` returned.
    @discardableResult
    func take() throws(ReplayLogError) -> ReplayRecord? {
        let record = try peek()
        lookahead = nil
        return record
    }
}
