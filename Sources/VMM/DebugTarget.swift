import KVM
import Loaders
import VMMCore

/// What a debugger front end may do with a machine built for one (`config.debug`), instead of
/// reaching into its fields: run it (vCPUs park at the gate before their first instruction),
/// stop it, read and write guest memory, and make register, translation and guest-debug calls
/// on a vCPU while every vCPU is parked (KVM serialises vCPU ioctls on the vCPU's own mutex, and
/// no KVM_RUN is in progress then).
public struct DebugTarget: Sendable {
    private let machine: Machine
    /// Where the vCPUs park for the debugger.
    public let gate: DebugGate

    init(machine: Machine, gate: DebugGate) { (self.machine, self.gate) = (machine, gate) }

    public var vcpuCount: Int { machine.vcpus.count }
    /// vCPU `index`, nil when there is none.
    public func vcpu(_ index: Int) -> VCPU? { machine.vcpus.indices.contains(index) ? machine.vcpus[index] : nil }
    public var memory: GuestMemory { machine.memory }
    /// The image's symbols (empty for an image without them).
    public var symbols: SymbolTable { machine.symbols }
    /// True once the run is ending (the guest ended it, or stop()).
    public var isStopping: Bool { machine.control.isStopping }

    /// Runs the machine until it ends, from the calling thread; signals and stdin stay the
    /// front end's.
    public func run() -> RunOutcome { machine.run(handleSignals: false, consoleInput: false) }
    public func stop() { machine.stop() }
    /// Each vCPU's exit counters as of its last park.
    public func statistics() -> [ExitStatistics] { machine.runnerStatistics() }
    /// The addresses where the debugger's int3s are (PVM reports an emulation failure at them).
    public func setSoftwareBreakpoints(_ addresses: Set<UInt64>) { gate.setSoftwareBreakpoints(addresses) }
}

extension Machine {
    /// The debugger's view of this machine; nil unless it was built with `config.debug`.
    public var debugTarget: DebugTarget? { debugGate.map { DebugTarget(machine: self, gate: $0) } }
}
