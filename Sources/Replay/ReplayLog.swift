import VMMCore

/// The record/replay log (docs/replay.md): a header, then checksummed chunks of records. Every
/// counted VM exit has one exit record (kind, port or address, size, data, RIP); after it come
/// the events that took effect at that exit: input from outside, virtual clock settings, the
/// interrupt injected. Plain Swift without KVM: a log is hostile input (a file, or a primary's
/// stream), so every read is checked and bounded.
public enum ReplayLog {
    public static let magic: [UInt8] = Array("SVMMRLOG".utf8)
    public static let version: UInt32 = 1
    /// A chunk's payload is at most this large (the writer seals one at `chunkTarget`).
    public static let maximumChunk = 1 << 20
    public static let chunkTarget = 32 * 1024
    /// The most input bytes one event carries.
    public static let maximumInput = 4096
    /// Header bytes at most.
    public static let maximumHeader = 64 * 1024
}

/// Why a log cannot be replayed.
public enum ReplayLogError: Error, Equatable, CustomStringConvertible {
    case unreadable(String)
    case notALog
    case version(UInt32)
    case corrupt(String)
    /// The log ends before its end record: after `exits` exit records.
    case truncated(exits: UInt64)

    public var description: String {
        switch self {
        case .unreadable(let why): return "cannot be read: \(why)"
        case .notALog: return "not a swiftvmm replay log (bad magic)"
        case .version(let found): return "log format version \(found), this swiftvmm reads version \(ReplayLog.version)"
        case .corrupt(let why): return "corrupt: \(why)"
        case .truncated(let exits): return "truncated: it ends after \(exits) exits, without its end record"
        }
    }
}

/// 64-bit FNV-1a: the log's chunk and header checksums and the digests (not cryptographic: it
/// tells a changed byte, not an attacker's collision).
public struct Digest: Sendable, Equatable {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325
    static let prime: UInt64 = 0x0000_0100_0000_01B3

    public init() {}

    public mutating func add(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { value = (value ^ UInt64(byte)) &* Self.prime }
    }

    public mutating func add(_ word: UInt64) {
        // Word at a time: eight bytes folded into one step, then mixed (guest RAM is hashed this way).
        value = (value ^ word) &* Self.prime
        value ^= value >> 32
    }

    /// Words of raw memory, 8 bytes at a time (the tail byte-wise).
    public mutating func add(memory: UnsafeRawBufferPointer) {
        let words = memory.count / 8
        for index in 0..<words { add(memory.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)) }
        add(memory[(words * 8)...])
    }

    public static func of(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var digest = Digest()
        digest.add(bytes)
        return digest.value
    }
}

/// One counted exit as the log keeps it: enough to tell where a replay went another way.
public struct ExitRecord: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable {
        case ioOut = 1, ioIn, mmioWrite, mmioRead, hlt, interruptWindow, shutdown
        /// An instruction the PVM compatibility layer completed (an emulation failure it handled).
        case completed
        case other

        var hasAccess: Bool { rawValue <= Kind.mmioRead.rawValue }
        var name: String {
            switch self {
            case .ioOut: "io-out"
            case .ioIn: "io-in"
            case .mmioWrite: "mmio-write"
            case .mmioRead: "mmio-read"
            case .hlt: "hlt"
            case .interruptWindow: "irq-window"
            case .shutdown: "shutdown"
            case .completed: "completed-instruction"
            case .other: "other"
            }
        }
    }

    public var kind: Kind
    /// Port or guest-physical address (accesses only).
    public var address: UInt64 = 0
    /// Bytes per element (accesses only; 1, 2, 4 or 8).
    public var size: UInt8 = 0
    /// Elements (string I/O has more than one).
    public var count: UInt64 = 1
    /// The data: the value written or read; for string I/O a digest of all elements.
    public var value: UInt64 = 0
    public var rip: UInt64 = 0

    public init(kind: Kind, address: UInt64 = 0, size: UInt8 = 0, count: UInt64 = 1, value: UInt64 = 0, rip: UInt64 = 0) {
        (self.kind, self.address, self.size, self.count, self.value, self.rip) = (kind, address, size, count, value, rip)
    }

    public var description: String {
        let at = "rip 0x\(String(rip, radix: 16))"
        guard kind.hasAccess else { return "\(kind.name) \(at)" }
        let place = kind == .ioIn || kind == .ioOut ? "port" : "address"
        let elements = count == 1 ? "" : " x\(count)"
        return "\(kind.name) \(place) 0x\(String(address, radix: 16)) size \(size)\(elements) value 0x\(String(value, radix: 16)) \(at)"
    }
}

/// How the recorded run ended.
public struct ReplayEnd: Sendable, Equatable {
    /// Exit records before the end.
    public var exits: UInt64
    /// The process exit status of the recording.
    public var status: Int32
    /// True when the guest ended it at its last exit (the digests then compare); false when it
    /// was stopped from outside between exits (a signal, the API): the replay stops after the
    /// same exit, but the guest had run on for a moment the log cannot place.
    public var atExit: Bool
    public var memoryDigest: UInt64
    public var registerDigest: UInt64
    /// The outcome's words ("debug exit status 1").
    public var outcome: String

    public init(exits: UInt64, status: Int32, atExit: Bool, memoryDigest: UInt64, registerDigest: UInt64, outcome: String) {
        (self.exits, self.status, self.atExit, self.memoryDigest, self.registerDigest, self.outcome) =
            (exits, status, atExit, memoryDigest, registerDigest, outcome)
    }
}

/// One record of the log.
public enum ReplayRecord: Sendable, Equatable {
    case exit(ExitRecord)
    /// Bytes the UART received at this exit (console input).
    case input([UInt8])
    /// The virtual clock was set to this time (ns) at this exit: a HLT that input ended early.
    case clock(UInt64)
    /// The balloon's target (pages) changed at this exit (the API).
    case balloonTarget(UInt32)
    /// The balloon's statistics interval (ns) changed at this exit (the API).
    case balloonStatsInterval(UInt64)
    /// This vector was injected at this exit.
    case interrupt(UInt8)
    case end(ReplayEnd)

    static let inputTag: UInt8 = 0x80, clockTag: UInt8 = 0x81, balloonTag: UInt8 = 0x82, statsIntervalTag: UInt8 = 0x83, interruptTag: UInt8 = 0x90, endTag: UInt8 = 0xF0
}

/// Little-endian base-128 integers (LEB128), the records' field encoding.
enum VarInt {
    static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    static func read(_ bytes: [UInt8], _ offset: inout Int) -> UInt64? {
        var value: UInt64 = 0, shift: UInt64 = 0
        while offset < bytes.count, shift < 64 {
            let byte = bytes[offset]
            offset += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    static func zigzag(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }
    static func unzigzag(_ value: UInt64) -> Int64 { Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1) }
}

/// Encodes records into chunks; `flush` hands each sealed chunk (length, checksum, payload) on.
public struct ReplayLogEncoder: Sendable {
    private var payload: [UInt8] = []
    private var lastRIP: UInt64 = 0
    public private(set) var exits: UInt64 = 0
    public private(set) var bytesEncoded: UInt64 = 0

    public init() { payload.reserveCapacity(ReplayLog.chunkTarget + 64) }

    /// Whether the current chunk is full enough to seal.
    public var chunkIsFull: Bool { payload.count >= ReplayLog.chunkTarget }
    public var hasPending: Bool { !payload.isEmpty }

    public mutating func append(_ record: ReplayRecord) {
        let before = payload.count
        switch record {
        case .exit(let exit):
            exits &+= 1
            let sizeCode: UInt8 = switch exit.size { case 2: 1; case 4: 2; case 8: 3; default: 0 }
            payload.append(exit.kind.rawValue | sizeCode << 4 | (exit.count == 1 ? 0 : 0x40))
            if exit.kind.hasAccess {
                VarInt.append(exit.address, to: &payload)
                if exit.count != 1 { VarInt.append(exit.count, to: &payload) }
                VarInt.append(exit.value, to: &payload)
            }
            VarInt.append(VarInt.zigzag(Int64(bitPattern: exit.rip &- lastRIP)), to: &payload)
            lastRIP = exit.rip
        case .input(let bytes):
            payload.append(ReplayRecord.inputTag)
            VarInt.append(UInt64(bytes.count), to: &payload)
            payload += bytes
        case .clock(let nanoseconds):
            payload.append(ReplayRecord.clockTag)
            VarInt.append(nanoseconds, to: &payload)
        case .balloonTarget(let pages):
            payload.append(ReplayRecord.balloonTag)
            VarInt.append(UInt64(pages), to: &payload)
        case .balloonStatsInterval(let nanoseconds):
            payload.append(ReplayRecord.statsIntervalTag)
            VarInt.append(nanoseconds, to: &payload)
        case .interrupt(let vector):
            payload += [ReplayRecord.interruptTag, vector]
        case .end(let end):
            payload.append(ReplayRecord.endTag)
            var writer = StateWriter()
            writer.u64(end.exits)
            writer.u32(UInt32(bitPattern: end.status))
            writer.bool(end.atExit)
            writer.u64(end.memoryDigest)
            writer.u64(end.registerDigest)
            writer.string(end.outcome)
            payload += writer.bytes
        }
        bytesEncoded &+= UInt64(payload.count - before)
    }

    /// The current chunk, framed (u32 length, u64 FNV-1a of the payload, payload); empties it.
    public mutating func seal() -> [UInt8] {
        var writer = StateWriter()
        writer.u32(UInt32(payload.count))
        writer.u64(Digest.of(payload))
        writer.raw(payload)
        payload.removeAll(keepingCapacity: true)
        return writer.bytes
    }
}

/// Decodes records from chunks, checking each chunk's checksum and every field.
public struct ReplayLogDecoder: Sendable {
    private var payload: [UInt8] = []
    private var offset = 0
    private var lastRIP: UInt64 = 0
    public private(set) var exits: UInt64 = 0
    public private(set) var chunks = 0

    public init() {}

    public var needsChunk: Bool { offset >= payload.count }

    /// Takes the next chunk's payload, checked against its frame's checksum.
    public mutating func feed(length: UInt32, checksum: UInt64, payload bytes: [UInt8]) throws(ReplayLogError) {
        chunks += 1
        guard Int(length) == bytes.count, Digest.of(bytes) == checksum else {
            throw .corrupt("chunk \(chunks) (after exit \(exits)) does not match its checksum")
        }
        (payload, offset) = (bytes, 0)
    }

    /// The next record of the current chunk (nil when it is used up).
    public mutating func next() throws(ReplayLogError) -> ReplayRecord? {
        guard offset < payload.count else { return nil }
        let tag = payload[offset]
        offset += 1
        func varint(_ what: String) throws(ReplayLogError) -> UInt64 {
            guard let value = VarInt.read(payload, &offset) else { throw .corrupt("\(what) after exit \(exits) is cut off") }
            return value
        }
        switch tag {
        case ReplayRecord.inputTag:
            let count = try varint("an input's length")
            guard count >= 1, count <= UInt64(ReplayLog.maximumInput), Int(count) <= payload.count - offset else {
                throw .corrupt("an input of \(count) bytes after exit \(exits)")
            }
            defer { offset += Int(count) }
            return .input(Array(payload[offset..<(offset + Int(count))]))
        case ReplayRecord.clockTag:
            return .clock(try varint("a clock setting"))
        case ReplayRecord.balloonTag:
            let pages = try varint("a balloon target")
            guard pages <= UInt64(UInt32.max) else { throw .corrupt("balloon target \(pages) pages after exit \(exits)") }
            return .balloonTarget(UInt32(pages))
        case ReplayRecord.statsIntervalTag:
            return .balloonStatsInterval(try varint("a balloon statistics interval"))
        case ReplayRecord.interruptTag:
            guard offset < payload.count else { throw .corrupt("an interrupt after exit \(exits) is cut off") }
            defer { offset += 1 }
            return .interrupt(payload[offset])
        case ReplayRecord.endTag:
            var reader = StateReader(Array(payload[offset...]), context: "end record")
            do {
                let end = ReplayEnd(exits: try reader.u64("exits"), status: Int32(bitPattern: try reader.u32("status")),
                                    atExit: try reader.bool("at exit"), memoryDigest: try reader.u64("memory digest"),
                                    registerDigest: try reader.u64("register digest"), outcome: try reader.string("outcome", maximum: 1024))
                offset += reader.offset
                guard end.exits == exits else { throw ReplayLogError.corrupt("the end record counts \(end.exits) exits, the log has \(exits)") }
                return .end(end)
            } catch let error as ReplayLogError { throw error } catch { throw .corrupt("\(error)") }
        default:
            guard let kind = ExitRecord.Kind(rawValue: tag & 0x0F), tag & 0x80 == 0 else {
                throw .corrupt("unknown record 0x\(String(tag, radix: 16)) after exit \(exits)")
            }
            var exit = ExitRecord(kind: kind)
            if kind.hasAccess {
                exit.size = UInt8(1) << ((tag >> 4) & 3)
                exit.address = try varint("an exit's address")
                if tag & 0x40 != 0 { exit.count = try varint("an exit's count") }
                exit.value = try varint("an exit's value")
            } else if tag & 0x70 != 0 {
                throw .corrupt("record 0x\(String(tag, radix: 16)) after exit \(exits)")
            }
            exit.rip = lastRIP &+ UInt64(bitPattern: VarInt.unzigzag(try varint("an exit's rip")))
            lastRIP = exit.rip
            exits &+= 1
            return .exit(exit)
        }
    }
}
