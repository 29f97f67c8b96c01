import VMMCore
/// A gdb remote packet, decoded. Thread ids are vCPU index + 1 (gdb reserves 0 for "any" and
/// -1 for "all").
public enum GDBRequest: Equatable, Sendable {
    public enum ThreadSelector: Equatable, Sendable {
        case any, all
        case thread(Int)
    }

    /// A vCont action: step or continue, for one thread or (nil) for every thread not named before.
    public struct ResumeAction: Equatable, Sendable {
        public enum Kind: Equatable, Sendable { case step, `continue` }
        public let kind: Kind
        public let thread: ThreadSelector?

        public init(kind: Kind, thread: ThreadSelector?) {
            self.kind = kind
            self.thread = thread
        }
    }

    public enum BreakpointKind: Int, Equatable, Sendable {
        case software = 0, hardware = 1, writeWatch = 2, readWatch = 3, accessWatch = 4
    }

    case supported(features: [String])
    case haltReason
    case readRegisters
    case writeRegisters([UInt8])
    case readRegister(Int)
    case writeRegister(Int, [UInt8])
    case readMemory(address: UInt64, length: Int)
    case writeMemory(address: UInt64, bytes: [UInt8])
    /// `c [addr]` / `s [addr]`: resume, optionally from a new rip.
    case resume(step: Bool, address: UInt64?)
    case vContQuery
    case vCont([ResumeAction])
    case insertBreakpoint(BreakpointKind, address: UInt64, kind: Int)
    case removeBreakpoint(BreakpointKind, address: UInt64, kind: Int)
    case setThread(operation: Character, ThreadSelector)
    case threadAlive(ThreadSelector)
    case threadInfoFirst
    case threadInfoNext
    case currentThread
    case attached
    case readFeature(annex: String, offset: Int, length: Int)
    case detach
    case kill
    /// Anything this stub does not implement: answered with an empty packet, as the protocol asks.
    case unsupported(String)
    /// A packet this stub recognises but whose arguments are malformed: answered `E01`.
    case malformed(String)

    public static func parse(_ payload: [UInt8]) -> GDBRequest {
        guard let first = payload.first else { return .unsupported("") }
        let text = String(decoding: payload, as: UTF8.self)
        let rest = text.dropFirst()
        switch Character(UnicodeScalar(first)) {
        case "?": return .haltReason
        case "g": return .readRegisters
        case "G": return hexDecode(rest).map { .writeRegisters($0) } ?? .malformed(text)
        case "p": return hexNumber(rest).map { .readRegister(smallInt($0)) } ?? .malformed(text)
        case "P":
            let parts = rest.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let number = hexNumber(parts[0]), let bytes = hexDecode(parts[1]) else { return .malformed(text) }
            return .writeRegister(smallInt(number), bytes)
        case "m":
            guard let (address, length) = addressAndLength(rest), length <= GDBPacketReader.maxPacket / 2 else { return .malformed(text) }
            return .readMemory(address: address, length: length)
        case "M":
            let parts = rest.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let (address, length) = addressAndLength(parts[0]), let bytes = hexDecode(parts[1]),
                  bytes.count == length else { return .malformed(text) }
            return .writeMemory(address: address, bytes: bytes)
        case "c", "s":
            let step = first == UInt8(ascii: "s")
            if rest.isEmpty { return .resume(step: step, address: nil) }
            return hexNumber(rest).map { .resume(step: step, address: $0) } ?? .malformed(text)
        case "Z", "z":
            let fields = rest.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count >= 3, let type = Int(fields[0]), let address = hexNumber(fields[1]),
                  let kindField = fields[2].split(separator: ";").first, let kind = hexNumber(kindField) else { return .malformed(text) }
            guard let breakpoint = BreakpointKind(rawValue: type) else { return .unsupported(text) }
            return first == UInt8(ascii: "Z") ? .insertBreakpoint(breakpoint, address: address, kind: smallInt(kind))
                                              : .removeBreakpoint(breakpoint, address: address, kind: smallInt(kind))
        case "H":
            guard let operation = rest.first, let selector = threadSelector(rest.dropFirst()) else { return .malformed(text) }
            return .setThread(operation: operation, selector)
        case "T": return threadSelector(rest).map { .threadAlive($0) } ?? .malformed(text)
        case "D": return .detach
        case "k": return .kill
        case "q":
            if text.hasPrefix("qSupported") {
                let features = text.split(separator: ":", maxSplits: 1).dropFirst().first.map { $0.split(separator: ";").map(String.init) } ?? []
                return .supported(features: features)
            }
            if text == "qfThreadInfo" { return .threadInfoFirst }
            if text == "qsThreadInfo" { return .threadInfoNext }
            if text == "qC" { return .currentThread }
            if text.hasPrefix("qAttached") { return .attached }
            if text.hasPrefix("qXfer:features:read:") {
                let fields = text.dropFirst("qXfer:features:read:".count).split(separator: ":", maxSplits: 1)
                guard fields.count == 2, let (offset, length) = addressAndLength(fields[1]) else { return .malformed(text) }
                return .readFeature(annex: String(fields[0]), offset: smallInt(offset), length: length)
            }
            return .unsupported(text)
        case "v":
            if text == "vCont?" { return .vContQuery }
            if text.hasPrefix("vCont;") { return parseVCont(text) }
            if text.hasPrefix("vKill") { return .kill }
            return .unsupported(text)
        default:
            return .unsupported(text)
        }
    }

    /// A client's number as an Int that stays far from overflow when the server adds to it: a
    /// value past Int32.max names no register, breakpoint kind or thread, and is refused as such.
    private static func smallInt(_ value: UInt64) -> Int { Int(min(value, UInt64(Int32.max))) }

    private static func addressAndLength(_ text: some StringProtocol) -> (UInt64, Int)? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = hexNumber(parts[0]), let length = hexNumber(parts[1]), length <= 0x10_0000 else { return nil }
        return (address, Int(length))
    }

    private static func threadSelector(_ text: some StringProtocol) -> ThreadSelector? {
        // "p1.2" (multiprocess form) names thread 2 of process 1.
        let thread = String(text).split(separator: ".").last.map(String.init) ?? String(text)
        if thread == "-1" { return .all }
        guard let value = hexNumber(thread.hasPrefix("p") ? String(thread.dropFirst()) : thread) else { return nil }
        return value == 0 ? .any : .thread(smallInt(value))
    }

    private static func parseVCont(_ text: String) -> GDBRequest {
        var actions: [ResumeAction] = []
        for item in text.split(separator: ";").dropFirst() {
            // Empty pieces are kept: an item of ":" alone splits into ["", ""], never into nothing.
            let parts = item.split(separator: Character(":"), maxSplits: 1, omittingEmptySubsequences: false)
            let kind: ResumeAction.Kind
            switch parts.first?.first {
            case "s", "S": kind = .step
            case "c", "C": kind = .continue
            default: return .unsupported(text) // range stepping, stop requests: not offered in vCont?
            }
            var thread: ThreadSelector?
            if parts.count == 2 {
                guard let selector = threadSelector(parts[1]) else { return .malformed(text) }
                thread = selector
            }
            actions.append(ResumeAction(kind: kind, thread: thread))
        }
        return actions.isEmpty ? .malformed(text) : .vCont(actions)
    }
}
