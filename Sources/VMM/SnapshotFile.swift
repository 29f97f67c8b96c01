import Glibc
import Host
import VMMCore

/// A snapshot's state file (docs/snapshot.md): a header, then sections, each with a tag, an
/// index, a length and a CRC-32 of its payload. Reading treats the file as hostile: every length
/// is bounded before anything is allocated, every checksum is checked before a byte is used, and
/// a file that fails any check is refused whole.
public struct SnapshotFile: Sendable, Equatable {
    public static let magic = Array("SVMMSNAP".utf8)
    public static let version: UInt32 = 1
    public static let headerSize = 24
    public static let sectionHeaderSize = 20
    /// Bounds a reader enforces: no real machine's state comes near them.
    public static let maximumSections = 1024
    public static let maximumSectionSize = 64 << 20
    public static let maximumFileSize = 256 << 20

    public struct Section: Sendable, Equatable {
        public var tag: String
        public var index: UInt32
        public var payload: [UInt8]

        public init(_ tag: String, index: UInt32 = 0, _ payload: [UInt8]) {
            self.tag = tag
            self.index = index
            self.payload = payload
        }
    }

    public var sections: [Section] = []

    public init(sections: [Section] = []) { self.sections = sections }

    /// The one section with `tag` (and `index`); throws when it is missing or repeated.
    public func section(_ tag: String, index: UInt32 = 0) throws(StateError) -> [UInt8] {
        let matches = sections.filter { $0.tag == tag && $0.index == index }
        guard matches.count == 1 else {
            throw .invalid(matches.isEmpty ? "section \(tag) \(index) is missing" : "section \(tag) \(index) appears \(matches.count) times")
        }
        return matches[0].payload
    }

    // MARK: encoding

    public var encoded: [UInt8] {
        var out = StateWriter()
        out.raw(Self.magic)
        out.u32(Self.version)
        out.u32(UInt32(sections.count))
        out.u32(0) // flags
        out.u32(CRC32.checksum(out.bytes))
        for section in sections {
            var head = StateWriter()
            head.raw(Self.tagBytes(section.tag))
            head.u32(section.index)
            head.u64(UInt64(section.payload.count))
            out.raw(head.bytes)
            out.u32(Self.checksum(head: head.bytes, payload: section.payload))
            out.raw(section.payload)
        }
        return out.bytes
    }

    /// A section's CRC-32 covers its tag, index and length as well as its payload.
    static func checksum(head: [UInt8], payload: [UInt8]) -> UInt32 {
        CRC32.checksum(payload, continuing: CRC32.checksum(head))
    }

    static func tagBytes(_ tag: String) -> [UInt8] {
        Array((Array(tag.utf8) + [UInt8](repeating: 0x20, count: 4)).prefix(4))
    }

    /// Parses and checks a whole state file's bytes.
    public init(decoding bytes: [UInt8]) throws(StateError) {
        guard bytes.count <= Self.maximumFileSize else { throw .invalid("the state file is \(bytes.count) bytes, more than \(Self.maximumFileSize)") }
        var input = StateReader(bytes, context: "state file")
        let magic = try input.raw("header", count: 8)
        guard magic == Self.magic else { throw .invalid("not a swiftvmm snapshot (bad magic)") }
        let version = try input.u32("version")
        guard version == Self.version else { throw .invalid("snapshot format version \(version); this swiftvmm reads version \(Self.version)") }
        let count = try input.count("section count", maximum: Self.maximumSections)
        _ = try input.u32("flags")
        let headerCRC = try input.u32("header checksum")
        guard headerCRC == CRC32.checksum(bytes.prefix(Self.headerSize - 4)) else { throw .invalid("the header's checksum does not match") }
        for _ in 0..<count {
            let head = try input.raw("section header", count: 16)
            var fields = StateReader(head, context: "section header")
            let tag = String(decoding: try fields.raw("section tag", count: 4), as: UTF8.self).trimmingTrailingSpaces
            let index = try fields.u32("section index")
            let length = try fields.u64("section length")
            guard length <= UInt64(Self.maximumSectionSize) else { throw .invalid("section \(tag) is \(length) bytes, more than \(Self.maximumSectionSize)") }
            let crc = try input.u32("section checksum")
            let payload = try input.raw("section \(tag) \(index)", count: Int(length))
            guard Self.checksum(head: head, payload: payload) == crc else { throw .invalid("section \(tag) \(index) is corrupted (checksum mismatch)") }
            sections.append(Section(tag, index: index, payload))
        }
        try input.finish()
    }

    // MARK: files

    /// Writes the state file to `PATH.partial` and syncs it; `commit` renames it into place, so
    /// a reader never sees half a file and a failed write leaves an older snapshot as it was.
    public func writePartial(to path: String, bytes: [UInt8]? = nil) throws(SnapshotError) -> PartialFile {
        let partial = PartialFile(path: path)
        let fd = open(partial.temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .file(partial.temporary, Errno.current.description) }
        let file = FileDescriptor(rawValue: fd)
        defer { file.close() }
        do throws(Errno) {
            try file.writeAll(bytes ?? encoded)
            guard fsync(fd) == 0 else { throw Errno.current }
        } catch {
            partial.discard()
            throw .file(partial.temporary, error.description)
        }
        return partial
    }

    /// Reads and checks a state file (at most `maximumFileSize` bytes).
    public static func read(from path: String) throws(SnapshotError) -> SnapshotFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .file(path, Errno.current.description) }
        let file = FileDescriptor(rawValue: fd)
        defer { file.close() }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { throw .file(path, "not a regular file") }
        guard info.st_size <= off_t(maximumFileSize) else { throw .file(path, "\(info.st_size) bytes, more than a state file can be") }
        let bytes: [UInt8]
        do { bytes = try file.readAll(count: Int(info.st_size), at: 0) } catch { throw .file(path, error.description) }
        guard bytes.count == Int(info.st_size) else { throw .file(path, "shorter than its size") }
        do { return try SnapshotFile(decoding: bytes) } catch { throw .state(path, error) }
    }
}

/// Why a snapshot could not be made or restored: one line each, exit status 76 (66 for a file
/// that cannot be opened or read).
public enum SnapshotError: Error, Equatable, CustomStringConvertible {
    case file(String, String)
    case state(String, StateError)
    case incompatible(String)
    case notPaused
    case failed(String)

    public var description: String {
        switch self {
        case .file(let path, let why): return "snapshot \(path): \(why)"
        case .state(let path, let error): return "snapshot \(path): \(error)"
        case .incompatible(let why): return "snapshot cannot be restored here: \(why)"
        case .notPaused: return "the VM must be paused for a snapshot"
        case .failed(let why): return "snapshot failed: \(why)"
        }
    }

    public var exitCode: Int32 {
        switch self {
        case .file: return ExitCode.badImage
        default: return ExitCode.snapshotFailed
        }
    }
}

/// A file written next to its final path (`PATH.partial`), renamed into place once complete.
public struct PartialFile: Sendable {
    public let path: String
    public var temporary: String { path + ".partial" }

    public init(path: String) { self.path = path }

    public func commit() throws(SnapshotError) {
        guard rename(temporary, path) == 0 else {
            let error = Errno.current
            discard()
            throw .file(path, "rename: \(error)")
        }
    }

    public func discard() { unlink(temporary) }
}

extension String {
    fileprivate var trimmingTrailingSpaces: String {
        var text = Substring(self)
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
