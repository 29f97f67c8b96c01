import Debugging
import KVM

/// Per-vCPU exit counters, owned by the vCPU's thread while it runs (no locking on the hot path).
public struct ExitStatistics: Sendable {
    /// Exits are counted by the kinds tracing and the debugger name (ExitEvent.Kind, one table).
    public typealias Reason = ExitEvent.Kind

    public var counts = [UInt64](repeating: 0, count: Reason.allCases.count)
    /// Accesses per port, and per MMIO address, when detail is on (`--stats`).
    public var ports: [UInt16: UInt64] = [:]
    public var mmioAddresses: [UInt64: UInt64] = [:]
    /// Accesses to ports and addresses beyond the first `distinctLimit` of each kind: a guest that
    /// walks all of its address space costs a bounded table, not one entry per address.
    public var otherPorts: UInt64 = 0
    public var otherMMIO: UInt64 = 0
    public static let distinctLimit = 1024
    public var unclaimedReads: UInt64 = 0
    public var unclaimedWrites: UInt64 = 0
    /// Emulation failures the PVM compatibility layer completed, by instruction.
    public var pvmCompletions: [String: UInt64] = [:]
    /// Seconds between the vCPU thread's first KVM_RUN and its end.
    public var runSeconds: Double = 0
    public let detailed: Bool
    /// The same counts, readable while the vCPU runs (shared by every copy of these statistics).
    public let live: LiveExitCounts?

    public init(detailed: Bool, live: LiveExitCounts? = nil) {
        self.detailed = detailed
        self.live = live
    }

    public var total: UInt64 { counts.reduce(0, &+) &- counts[Reason.interrupted.index] }

    @inline(__always)
    public mutating func record(_ reason: Reason) {
        counts[reason.index] &+= 1
        live?.record(reason)
    }

    @inline(__always)
    public mutating func recordPort(_ port: UInt16) {
        guard detailed else { return }
        if let count = ports[port] { ports[port] = count &+ 1 } else if ports.count < Self.distinctLimit { ports[port] = 1 } else { otherPorts &+= 1 }
    }

    @inline(__always)
    public mutating func recordMMIO(_ address: UInt64) {
        guard detailed else { return }
        if let count = mmioAddresses[address] {
            mmioAddresses[address] = count &+ 1
        } else if mmioAddresses.count < Self.distinctLimit {
            mmioAddresses[address] = 1
        } else {
            otherMMIO &+= 1
        }
    }

    /// The report `--stats` prints for one vCPU.
    public func report(vcpu: Int, top: Int = 5) -> String {
        var lines = ["vcpu\(vcpu): exits=\(total) run_s=\(formatted(runSeconds)) exits_per_s=\(runSeconds > 0 ? UInt64(Double(total) / runSeconds) : 0)"]
        let reasons = Reason.allCases.filter { counts[$0.index] > 0 }.map { "\($0.rawValue)=\(counts[$0.index])" }
        if !reasons.isEmpty { lines.append("  by reason: " + reasons.joined(separator: " ")) }
        if unclaimedReads + unclaimedWrites > 0 {
            lines.append("  unclaimed: reads=\(unclaimedReads) writes=\(unclaimedWrites)")
        }
        if !pvmCompletions.isEmpty {
            lines.append("  pvm_compat: " + pvmCompletions.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        let topPorts = ports.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(top)
        if !topPorts.isEmpty {
            lines.append("  top ports: " + topPorts.map { "0x\(String($0.key, radix: 16))=\($0.value)" }.joined(separator: " ")
                         + (otherPorts > 0 ? " other=\(otherPorts)" : ""))
        }
        let topMMIO = mmioAddresses.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(top)
        if !topMMIO.isEmpty {
            lines.append("  top mmio: " + topMMIO.map { "0x\(String($0.key, radix: 16))=\($0.value)" }.joined(separator: " ")
                         + (otherMMIO > 0 ? " other=\(otherMMIO)" : ""))
        }
        return lines.joined(separator: "\n")
    }

    private func formatted(_ value: Double) -> String {
        let micro = Int((value * 1_000_000).rounded())
        let fraction = String(micro % 1_000_000)
        return "\(micro / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }
}
