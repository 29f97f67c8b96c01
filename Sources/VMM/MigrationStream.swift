import Glibc
import Host
import VMMCore

/// The live-migration stream (docs/migration.md): typed messages over one stream socket, each a
/// u8 kind, a u32 length and the payload. Both ends treat what they read as hostile: a length is
/// bounded before anything is allocated, an unknown kind or a message out of order ends the
/// migration, and a peer that goes silent for `idleSeconds` is given up on.
struct MigrationStream {
    enum Kind: UInt8 {
        /// source -> destination: magic, version, the machine's shape (a state file of CONF,
        /// MMAP, KVMS and CPID sections).
        case hello = 1
        /// destination -> source: compatible, send the memory; or why not (a string).
        case accept = 2, refuse = 3
        /// source -> destination: u64 guest-physical address, then whole pages of guest RAM.
        case pages = 4
        /// source -> destination: u64 address, u64 page count: pages that are zero now.
        case zeros = 5
        /// source -> destination: the machine's full state (a state file), after the last pages.
        case state = 6
        /// destination -> source: the machine is built and about to run; or why it failed.
        case started = 7, failed = 8
        /// source -> destination: the source gave up (a string); the destination discards all.
        case abort = 9
    }

    static let magic = Array("SVMMMIGR".utf8)
    static let version: UInt32 = 1
    static let pageSize = 4096
    /// Pages in one `pages` message, and the largest payload a reader accepts.
    static let pagesPerMessage = 256
    static let maximumPayload = 64 << 20
    static let idleSeconds = 30

    let fd: FileDescriptor

    // MARK: writing

    func send(_ kind: Kind, _ payload: [UInt8] = []) throws(MigrationError) {
        var header = StateWriter()
        header.u8(kind.rawValue)
        header.u32(UInt32(payload.count))
        try write(header.bytes)
        if !payload.isEmpty { try write(payload) }
    }

    func send(_ kind: Kind, text: String) throws(MigrationError) { try send(kind, Array(text.utf8.prefix(4096))) }

    /// Writes everything, waiting at most `idleSeconds` for the peer to take more.
    private func write(_ bytes: [UInt8]) throws(MigrationError) {
        var rest = bytes[...]
        while !rest.isEmpty {
            let ready: FileDescriptor.Events
            do { ready = try fd.poll(.writable, milliseconds: Self.idleSeconds * 1000) } catch { throw .link("poll: \(error)") }
            guard !ready.isEmpty else { throw .link("the peer took nothing for \(Self.idleSeconds) s") }
            let written: Int
            do { written = try fd.send(rest) } catch { throw .link(error.code == EPIPE ? "the peer closed the connection" : "send: \(error)") }
            guard written > 0 else { throw .link("the peer closed the connection") }
            rest = rest.dropFirst(written)
        }
    }

    // MARK: reading

    /// The next message, its payload at most `maximumPayload` bytes.
    func receive() throws(MigrationError) -> (kind: Kind, payload: [UInt8]) {
        let header = try read(5)
        guard let kind = Kind(rawValue: header[0]) else { throw .protocolViolation("unknown message kind \(header[0])") }
        let length = Int(LittleEndian.load(header, at: 1, size: 4))
        guard length <= Self.maximumPayload else { throw .protocolViolation("a message of \(length) bytes (at most \(Self.maximumPayload))") }
        return (kind, try read(length))
    }

    /// Exactly `count` bytes, waiting at most `idleSeconds` for each part; read straight into
    /// the array that is returned (no zeroing, no second copy: pages stream at link speed).
    private func read(_ count: Int) throws(MigrationError) -> [UInt8] {
        var failure: MigrationError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                do {
                    let ready = try fd.poll(.readable, milliseconds: Self.idleSeconds * 1000)
                    guard !ready.isEmpty else { failure = .link("the peer sent nothing for \(Self.idleSeconds) s"); break }
                } catch { failure = .link("poll: \(error)"); break }
                let read: Int
                do { read = try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[done...])) } catch {
                    failure = .link("read: \(error)")
                    break
                }
                guard read > 0 else { failure = .link("the peer closed the connection"); break }
                done += read
            }
            // Bytes not read are zeroed, so the array is always fully initialised (it is only
            // used when failure is nil, that is when every byte was read).
            if done < count { (buffer.baseAddress! + done).initialize(repeating: 0, count: count - done) }
            initialized = count
        }
        if let failure { throw failure }
        return bytes
    }

    // MARK: messages

    static func hello(_ shape: SnapshotFile) -> [UInt8] {
        var out = StateWriter()
        out.raw(magic)
        out.u32(version)
        out.raw(shape.encoded)
        return out.bytes
    }

    static func parseHello(_ payload: [UInt8]) throws(MigrationError) -> SnapshotFile {
        guard payload.count >= 12, Array(payload[0..<8]) == magic else { throw .protocolViolation("not a swiftvmm migration (bad magic)") }
        let version = UInt32(LittleEndian.load(payload, at: 8, size: 4))
        guard version == Self.version else { throw .incompatible("migration protocol version \(version); this swiftvmm speaks \(Self.version)") }
        do { return try SnapshotFile(decoding: Array(payload[12...])) } catch { throw .protocolViolation("the machine description: \(error)") }
    }
}

/// Why a migration did not complete. On the source the VM keeps running (or runs again); on the
/// destination nothing was started and the process exits with status 76.
public enum MigrationError: Error, Equatable, CustomStringConvertible {
    /// The connection failed, broke, or the peer went silent.
    case link(String)
    /// The peer sent something this protocol does not allow.
    case protocolViolation(String)
    /// The destination cannot run this machine (versions, memory layout, CPU features, KVM).
    case incompatible(String)
    /// The dirty set did not shrink to what fits the downtime within the timeout.
    case notConverging(String)
    /// The destination could not build or start the machine.
    case destinationFailed(String)
    /// A migration is already running, or the VM cannot be migrated now.
    case refused(String)

    public var description: String {
        switch self {
        case .link(let why): return "migration link: \(why)"
        case .protocolViolation(let why): return "migration stream: \(why)"
        case .incompatible(let why): return "destination incompatible: \(why)"
        case .notConverging(let why): return "migration abandoned: \(why)"
        case .destinationFailed(let why): return "destination failed: \(why)"
        case .refused(let why): return why
        }
    }
}
