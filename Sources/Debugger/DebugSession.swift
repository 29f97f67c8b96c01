import VMM
import Host
import VMMCore
import Debugging
import KVM
import Loaders
import Synchronization

/// Why a debugger's memory or breakpoint request failed, worded for a prompt or an `E` reply.
public enum DebugAccessError: Error, Equatable, CustomStringConvertible {
    case unmapped(virtual: UInt64)
    case outsideRAM(physical: UInt64)
    case noSuchVCPU(Int)
    case tooManyHardwareBreakpoints
    case noBreakpoint(UInt64)
    case unknownSymbol(String)
    case unknownRegister(String)
    case notStopped
    case kvm(String)

    public var description: String {
        switch self {
        case .unmapped(let address): return "guest-virtual address 0x\(String(address, radix: 16)) is not mapped"
        case .outsideRAM(let address): return "guest-physical address 0x\(String(address, radix: 16)) is not RAM"
        case .noSuchVCPU(let index): return "no vcpu \(index)"
        case .tooManyHardwareBreakpoints: return "all \(GuestDebug.maxHardwareBreakpoints) debug registers are in use"
        case .noBreakpoint(let address): return "no breakpoint at 0x\(String(address, radix: 16))"
        case .unknownSymbol(let name): return "no symbol '\(name)' in the image (and not a number)"
        case .unknownRegister(let name): return "unknown register '\(name)'"
        case .notStopped: return "the guest is running"
        case .kvm(let message): return message
        }
    }
}

/// What both debugger front ends (the prompt and the gdb stub) do to a VM built with
/// `config.debug`: run it on its own thread, stop and resume its vCPUs, read and write registers
/// and memory, and keep breakpoints. Used from one front-end thread.
public final class DebugSession: @unchecked Sendable {
    // @unchecked: the mutable fields are touched only by the front-end thread that owns the session.
    public let target: DebugTarget
    public let gate: DebugGate
    public let symbols: SymbolTable
    /// The vCPU register and memory commands apply to.
    public var current = 0
    public var exitBreakpoints: [ExitFilter.Rule] = []
    private(set) var softwareBreakpoints: [UInt64: (physical: UInt64, original: UInt8)] = [:] {
        didSet { target.setSoftwareBreakpoints(Set(softwareBreakpoints.keys)) }
    }
    public private(set) var hardwareBreakpoints: [UInt64] = []
    private var armed: [Int: GuestDebug] = [:]
    /// A stop that happened inside `resume` (stepping off a breakpoint), reported by the next wait.
    private var pendingStop: DebugStop?
    private var machineThread: HostThreadHandle?
    private let outcome = Locked<RunOutcome?>(nil)
    public private(set) var hasEnded = false

    public init(machine: Machine) throws(VMMError) {
        guard let target = machine.debugTarget else { throw .debugger("the machine was not built for debugging") }
        self.target = target
        self.gate = target.gate
        self.symbols = target.symbols
    }

    public var vcpuCount: Int { target.vcpuCount }

    /// Starts the VM on its own thread; every vCPU parks before its first instruction.
    public func start() throws(VMMError) {
        machineThread = try VMMError.host { () throws(HostError) in
            try HostThreadHandle.spawn(.vmm, name: "machine") { [self] in
                let result = target.run()
                outcome.withLock { $0 = result }
            }
        }
    }

    /// Waits for the next stop (all vCPUs parked) or the end; nil after `timeout` seconds.
    public func waitForStop(timeout: Double? = nil) -> DebugStop? {
        if let pending = pendingStop {
            pendingStop = nil
            return note(pending)
        }
        return gate.waitForStop(timeout: timeout).map(note)
    }

    private func note(_ stop: DebugStop) -> DebugStop {
        switch stop {
        case .ended: hasEnded = true
        case .stopped(let vcpu, let reason):
            if reason != .requested { current = vcpu }
            if case .softwareBreakpoint(let address) = reason { rewindPastInt3(vcpu: vcpu, breakpoint: address) }
        }
        return stop
    }

    /// After an int3 the vCPU's rip may point past it (trap semantics) or at it (VT-x reports
    /// the intercepted #BP before delivery); either way the debugger shows it at the breakpoint.
    private func rewindPastInt3(vcpu index: Int, breakpoint: UInt64) {
        guard softwareBreakpoints[breakpoint] != nil, var regs = try? target.vcpu(index)?.registers(),
              regs.rip == breakpoint &+ 1 else { return }
        regs.rip = breakpoint
        try? target.vcpu(index)?.setRegisters(regs)
    }

    /// Asks running vCPUs to stop; `waitForStop` then reports it.
    public func interrupt() { gate.requestStop() }

    /// Resumes: `.run` lets every vCPU go, the step modes move only the current vCPU. A vCPU
    /// sitting on one of our breakpoints first steps off it with that breakpoint lifted.
    public func resume(_ mode: ResumePlan.Mode) throws(DebugAccessError) {
        guard !hasEnded else { return }
        let rip = try registers().rip
        if softwareBreakpoints[rip] != nil || hardwareBreakpoints.contains(rip) {
            let stop = try stepOff(rip)
            guard case .stopped(current, .singleStep)? = stop, mode != .stepInstruction else {
                pendingStop = stop ?? .ended
                return
            }
        }
        try arm(stepping: mode == .stepInstruction ? current : nil)
        let plan = ResumePlan(mode: mode, exitBreakpoints: exitBreakpoints)
        if mode == .run {
            gate.release(Dictionary(uniqueKeysWithValues: (0..<vcpuCount).map { ($0, plan) }))
        } else {
            gate.release([current: plan])
        }
    }

    /// Single-steps the current vCPU over the instruction at `address` with our breakpoint there
    /// lifted, then puts it back.
    private func stepOff(_ address: UInt64) throws(DebugAccessError) -> DebugStop? {
        let software = softwareBreakpoints[address]
        let hardware = hardwareBreakpoints
        if let software { try writePhysical(software.physical, [software.original]) }
        hardwareBreakpoints.removeAll { $0 == address }
        defer {
            hardwareBreakpoints = hardware
            if let software { try? writePhysical(software.physical, [0xCC]) }
        }
        try arm(stepping: current)
        gate.release([current: ResumePlan(mode: .stepInstruction)])
        return gate.waitForStop().map(note)
    }

    /// Sets each vCPU's guest-debug state to match the breakpoints (and single-step for one).
    private func arm(stepping: Int?) throws(DebugAccessError) {
        for index in 0..<target.vcpuCount where !gate.finishedVCPUs.contains(index) {
            guard let vcpu = target.vcpu(index) else { continue }
            let wanted = GuestDebug(singleStep: index == stepping, softwareBreakpoints: !softwareBreakpoints.isEmpty,
                                    hardwareBreakpoints: hardwareBreakpoints)
            guard armed[index] != wanted else { continue }
            do { try vcpu.setGuestDebug(wanted) } catch { throw .kvm(error.description) }
            armed[index] = wanted
        }
    }

    /// Waits for the VM thread and returns how the run ended.
    public func finish() -> RunOutcome {
        machineThread?.join()
        machineThread = nil
        return outcome.withLock { $0 } ?? .stopped
    }

    /// Ends the VM (status 72) and wakes everything parked.
    public func kill() { target.stop() }

    /// Removes every breakpoint, disarms debugging and lets the guest run on freely.
    public func detach() {
        for address in Array(softwareBreakpoints.keys) { try? removeSoftwareBreakpoint(address) }
        hardwareBreakpoints.removeAll()
        exitBreakpoints.removeAll()
        try? arm(stepping: nil)
        gate.release(Dictionary(uniqueKeysWithValues: (0..<vcpuCount).map { ($0, ResumePlan(mode: .run)) }))
    }

    // MARK: registers

    /// Runs a KVM call, turning its error into the debugger's.
    private func kvm<T>(_ body: () throws(KVMError) -> T) throws(DebugAccessError) -> T {
        do { return try body() } catch { throw .kvm(error.description) }
    }

    func vcpu(_ index: Int? = nil) throws(DebugAccessError) -> VCPU {
        let index = index ?? current
        guard let vcpu = target.vcpu(index) else { throw .noSuchVCPU(index) }
        return vcpu
    }

    public func registers(vcpu index: Int? = nil) throws(DebugAccessError) -> Registers {
        let target = try vcpu(index)
        return try kvm { () throws(KVMError) in try target.registers() }
    }

    public func setRegisters(_ registers: Registers, vcpu index: Int? = nil) throws(DebugAccessError) {
        let target = try vcpu(index)
        try kvm { () throws(KVMError) in try target.setRegisters(registers) }
    }

    public func specialRegisters(vcpu index: Int? = nil) throws(DebugAccessError) -> SpecialRegisters {
        let target = try vcpu(index)
        return try kvm { () throws(KVMError) in try target.specialRegisters() }
    }

    public func fpu(vcpu index: Int? = nil) throws(DebugAccessError) -> FPUState {
        let target = try vcpu(index)
        return try kvm { () throws(KVMError) in try target.fpu() }
    }

    // MARK: memory

    /// Guest-virtual to guest-physical through the vCPU's page tables.
    public func translate(_ address: UInt64, vcpu index: Int? = nil) throws(DebugAccessError) -> UInt64 {
        let target = try vcpu(index)
        let translation = try kvm { () throws(KVMError) in try target.translate(address) }
        guard translation.valid else { throw .unmapped(virtual: address) }
        return translation.physicalAddress
    }

    /// Reads guest-virtual memory page by page, showing original bytes under our int3s.
    public func readVirtual(_ address: UInt64, count: Int, vcpu index: Int? = nil) throws(DebugAccessError) -> [UInt8] {
        var bytes: [UInt8] = []
        try forEachPage(address, count: count, vcpu: index) { virtual, physical, length throws(DebugAccessError) in
            var chunk = try readPhysical(physical, count: length)
            for offset in 0..<length {
                if let breakpoint = softwareBreakpoints[virtual + UInt64(offset)] { chunk[offset] = breakpoint.original }
            }
            bytes += chunk
        }
        return bytes
    }

    /// Writes guest-virtual memory; bytes under our int3s update the saved originals instead.
    public func writeVirtual(_ address: UInt64, _ bytes: [UInt8], vcpu index: Int? = nil) throws(DebugAccessError) {
        var consumed = 0
        try forEachPage(address, count: bytes.count, vcpu: index) { virtual, physical, length throws(DebugAccessError) in
            var chunk = Array(bytes[consumed..<(consumed + length)])
            for offset in 0..<length {
                if let breakpoint = softwareBreakpoints[virtual + UInt64(offset)] {
                    softwareBreakpoints[virtual + UInt64(offset)] = (breakpoint.physical, chunk[offset])
                    chunk[offset] = 0xCC
                }
            }
            try writePhysical(physical, chunk)
            consumed += length
        }
    }

    private func forEachPage(_ address: UInt64, count: Int, vcpu index: Int?,
                             _ body: (UInt64, UInt64, Int) throws(DebugAccessError) -> Void) throws(DebugAccessError) {
        var virtual = address, remaining = count
        while remaining > 0 {
            let length = min(remaining, Int(0x1000 - (virtual & 0xFFF)))
            try body(virtual, try translate(virtual, vcpu: index), length)
            virtual &+= UInt64(length)
            remaining -= length
        }
    }

    public func readPhysical(_ address: UInt64, count: Int) throws(DebugAccessError) -> [UInt8] {
        guard count == 0 || target.memory.contains(address, length: count) else { throw .outsideRAM(physical: address) }
        return (try? target.memory.read(address, length: count)) ?? []
    }

    public func writePhysical(_ address: UInt64, _ bytes: [UInt8]) throws(DebugAccessError) {
        guard target.memory.contains(address, length: bytes.count) else { throw .outsideRAM(physical: address) }
        do { try target.memory.write(bytes, at: address) } catch { throw .outsideRAM(physical: address) }
    }

    // MARK: breakpoints

    public var softwareBreakpointAddresses: [UInt64] { softwareBreakpoints.keys.sorted() }

    public func insertSoftwareBreakpoint(_ address: UInt64) throws(DebugAccessError) {
        guard softwareBreakpoints[address] == nil else { return }
        let physical = try translate(address)
        let original = try readPhysical(physical, count: 1)[0]
        try writePhysical(physical, [0xCC])
        softwareBreakpoints[address] = (physical, original)
    }

    public func removeSoftwareBreakpoint(_ address: UInt64) throws(DebugAccessError) {
        guard let breakpoint = softwareBreakpoints.removeValue(forKey: address) else { throw .noBreakpoint(address) }
        try writePhysical(breakpoint.physical, [breakpoint.original])
    }

    public func insertHardwareBreakpoint(_ address: UInt64) throws(DebugAccessError) {
        guard !hardwareBreakpoints.contains(address) else { return }
        guard hardwareBreakpoints.count < GuestDebug.maxHardwareBreakpoints else { throw .tooManyHardwareBreakpoints }
        hardwareBreakpoints.append(address)
    }

    public func removeHardwareBreakpoint(_ address: UInt64) throws(DebugAccessError) {
        guard hardwareBreakpoints.contains(address) else { throw .noBreakpoint(address) }
        hardwareBreakpoints.removeAll { $0 == address }
    }

    // MARK: symbols

    /// A number (decimal or 0x-hex), a symbol, or symbol+offset.
    public func resolve(_ expression: String) throws(DebugAccessError) -> UInt64 {
        if let number = parseNumber(expression) { return number }
        if expression.hasPrefix("$") {
            let name = String(expression.dropFirst())
            let registers = try registers()
            let names = GDBRegisterLayout.generalNames
            if let index = names.firstIndex(of: name) { return registers.generalInGDBOrder[index] }
            if name == "rip" || name == "pc" { return registers.rip }
            throw .unknownRegister(name)
        }
        let parts = expression.split(separator: "+", maxSplits: 1).map(String.init)
        guard let symbol = symbols[parts[0]] else { throw .unknownSymbol(expression) }
        guard parts.count == 2 else { return symbol.address }
        guard let offset = parseNumber(parts[1]) else { throw .unknownSymbol(expression) }
        return symbol.address &+ offset
    }

    /// "0x100123 <main+3>" (or just the number without a nearby symbol).
    public func describe(_ address: UInt64) -> String {
        let number = "0x" + String(address, radix: 16)
        return symbols.describe(address).map { "\(number) <\($0)>" } ?? number
    }

    /// Exit counters per vCPU as of their last park.
    public func statistics() -> [String] {
        target.statistics().enumerated().map { $1.report(vcpu: $0) }
    }
}
