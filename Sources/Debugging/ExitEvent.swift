import VMMCore
/// One VM exit as tracing and the debugger see it, KVM-free: what the guest did, where, with what.
public struct ExitEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case ioIn = "io-in", ioOut = "io-out", mmioRead = "mmio-read", mmioWrite = "mmio-write"
        case hlt, shutdown, debug
        case systemEvent = "system_event", failEntry = "fail_entry", internalError = "internal_error"
        case interrupted = "intr", other
        /// KVM_EXIT_IRQ_WINDOW_OPEN (deterministic mode's userspace interrupt controller).
        case interruptWindow = "irq_window"

        /// The filter family this kind belongs to ("io", "mmio", or its own name).
        public var family: String {
            switch self {
            case .ioIn, .ioOut: return "io"
            case .mmioRead, .mmioWrite: return "mmio"
            default: return rawValue
            }
        }

        /// The kind's position in allCases, for counters indexed by kind (statistics).
        public var index: Int {
            switch self {
            case .ioIn: 0
            case .ioOut: 1
            case .mmioRead: 2
            case .mmioWrite: 3
            case .hlt: 4
            case .shutdown: 5
            case .debug: 6
            case .systemEvent: 7
            case .failEntry: 8
            case .internalError: 9
            case .interrupted: 10
            case .other: 11
            case .interruptWindow: 12
            }
        }

        var isIO: Bool { self == .ioIn || self == .ioOut }
        var isMMIO: Bool { self == .mmioRead || self == .mmioWrite }
    }

    public var vcpu: Int
    /// Seconds since the VM started running.
    public var seconds: Double
    public var kind: Kind
    /// Port (io) or guest-physical address (mmio); 0 otherwise.
    public var address: UInt64
    /// Bytes per element.
    public var size: Int
    /// The data: written values, or for reads what the VMM answered. String I/O has several.
    public var values: [UInt64]
    /// The vCPU's rip when KVM reported the exit (after port I/O KVM has usually moved past it).
    public var rip: UInt64
    /// Extra words for debug, failure and unknown exits.
    public var detail: String

    public init(vcpu: Int, seconds: Double, kind: Kind, address: UInt64 = 0, size: Int = 0, values: [UInt64] = [],
                rip: UInt64 = 0, detail: String = "") {
        self.vcpu = vcpu
        self.seconds = seconds
        self.kind = kind
        self.address = address
        self.size = size
        self.values = values
        self.rip = rip
        self.detail = detail
    }

    /// One trace line: time, vCPU, reason, port or address, size, direction, data and rip.
    ///
    ///     0.004211 vcpu0 io out port=0x3f8 size=1 data=0x48 rip=0x100a2c
    public var traceLine: String {
        var line = Self.fixed(seconds) + " vcpu\(vcpu) "
        switch kind {
        case .ioIn, .ioOut:
            line += "io \(kind == .ioIn ? "in" : "out") port=0x\(hex(address)) size=\(size) data=\(dataText)"
        case .mmioRead, .mmioWrite:
            line += "mmio \(kind == .mmioRead ? "read" : "write") addr=0x\(hex(address)) size=\(size) data=\(dataText)"
        default:
            line += kind.rawValue
            if !detail.isEmpty { line += " " + detail }
        }
        return line + " rip=0x\(hex(rip))"
    }

    /// Seconds with microseconds, right-aligned in 10 columns ("  0.004211").
    static func fixed(_ seconds: Double) -> String {
        let micros = UInt64(max(0, seconds * 1e6).rounded())
        let fraction = String(micros % 1_000_000)
        let text = "\(micros / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
        return String(repeating: " ", count: max(0, 10 - text.count)) + text
    }

    private var dataText: String {
        values.isEmpty ? "-" : values.map { "0x" + hex($0) }.joined(separator: ",")
    }
}

