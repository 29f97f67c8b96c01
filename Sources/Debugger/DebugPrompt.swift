import VMM
import VMMCore
import Debugging
import KVM

/// The interactive debugger behind `swiftvmm debug`: reads commands line by line (terminal, pipe
/// or script), drives a DebugSession and prints what happened. Every bad line is one error line.
public final class DebugPrompt {
    enum Breakpoint {
        case code(address: UInt64)
        case hardware(address: UInt64)
        case exit(ExitFilter.Rule)
    }

    let session: DebugSession
    let output: (String) -> Void
    private var breakpoints: [(number: Int, breakpoint: Breakpoint)] = []
    private var nextNumber = 1

    public init(session: DebugSession, output: @escaping (String) -> Void) {
        self.session = session
        self.output = output
    }

    /// Shows where the VM stopped at start, then runs commands until `quit` or the end of input.
    /// Returns how the VM ended (it is stopped at quit if still running).
    public func run(prompt: String?, echo: Bool, readLine: () -> String?) -> RunOutcome {
        if let stop = session.waitForStop() { report(stop) }
        while true {
            if let prompt { output(prompt) }
            guard let line = readLine() else {
                if prompt != nil { output("\n") }
                break
            }
            if echo { output(line + "\n") }
            do {
                let command = try DebugCommand.parse(line)
                if command == .quit { break }
                try execute(command)
            } catch let error as DebugCommandError {
                output("error: \(error)\n")
            } catch let error as DebugAccessError {
                output("error: \(error)\n")
            } catch {
                output("error: \(error)\n")
            }
        }
        if !session.hasEnded { session.kill() }
        return session.finish()
    }

    func execute(_ command: DebugCommand) throws {
        switch command {
        case .nothing, .quit: break
        case .help: output(DebugCommand.summary + "\n")
        case .step(let count):
            for _ in 0..<count { guard try resume(.stepExit) else { break } }
        case .stepInstruction(let count):
            for _ in 0..<count { guard try resume(.stepInstruction) else { break } }
        case .continue: _ = try resume(.run)
        case .breakpoint(let expression):
            let address = try session.resolve(expression)
            try session.insertSoftwareBreakpoint(address)
            add(.code(address: address), "breakpoint \(nextNumber) at \(session.describe(address))")
        case .hardwareBreakpoint(let expression):
            let address = try session.resolve(expression)
            try session.insertHardwareBreakpoint(address)
            add(.hardware(address: address), "hardware breakpoint \(nextNumber) at \(session.describe(address))")
        case .exitBreakpoint(let rule):
            session.exitBreakpoints.append(rule)
            add(.exit(rule), "exit breakpoint \(nextNumber): \(rule)")
        case .delete(let number):
            let doomed = breakpoints.filter { number == nil || $0.number == number }
            guard !doomed.isEmpty else { throw DebugCommandError.usage("delete N (see info breakpoints)") }
            for (doomedNumber, breakpoint) in doomed {
                switch breakpoint {
                case .code(let address): try session.removeSoftwareBreakpoint(address)
                case .hardware(let address): try session.removeHardwareBreakpoint(address)
                case .exit(let rule):
                    if let index = session.exitBreakpoints.firstIndex(of: rule) { session.exitBreakpoints.remove(at: index) }
                }
                breakpoints.removeAll { $0.number == doomedNumber }
            }
            output("deleted \(doomed.count) breakpoint\(doomed.count == 1 ? "" : "s")\n")
        case .infoBreakpoints:
            if breakpoints.isEmpty { output("no breakpoints\n") }
            for (number, breakpoint) in breakpoints {
                switch breakpoint {
                case .code(let address): output("\(number)  breakpoint       \(session.describe(address))\n")
                case .hardware(let address): output("\(number)  hw breakpoint    \(session.describe(address))\n")
                case .exit(let rule): output("\(number)  exit breakpoint  \(rule)\n")
                }
            }
        case .registers: try showRegisters()
        case .specialRegisters: try showSpecialRegisters()
        case .set(let name, let value):
            var registers = try session.registers()
            guard registers.set(name, to: value) else { throw DebugAccessError.unknownRegister(name) }
            try session.setRegisters(registers)
            output("\(name) = 0x\(String(value, radix: 16))\n")
        case .examine(let virtual, let count, let unit, let expression):
            let address = try session.resolve(expression)
            let bytes = virtual ? try session.readVirtual(address, count: count * unit)
                                : try session.readPhysical(address, count: count * unit)
            showMemory(bytes, at: address, unit: unit, virtual: virtual)
        case .selectVCPU(let index):
            guard index < session.vcpuCount else { throw DebugAccessError.noSuchVCPU(index) }
            session.current = index
            output("vcpu\(index) at \(session.describe(try session.registers().rip))\n")
        case .stats:
            for line in session.statistics() { output(line + "\n") }
        }
    }

    /// Numbers a breakpoint the session has just taken, and says so.
    private func add(_ breakpoint: Breakpoint, _ message: String) {
        breakpoints.append((nextNumber, breakpoint))
        output(message + "\n")
        nextNumber += 1
    }

    /// Resumes in `mode`, waits for the stop and reports it. False once the VM has ended.
    private func resume(_ mode: ResumePlan.Mode) throws -> Bool {
        guard !session.hasEnded else {
            output("the guest has ended\n")
            return false
        }
        try session.resume(mode)
        guard let stop = session.waitForStop() else { return false }
        report(stop)
        return !session.hasEnded
    }

    func report(_ stop: DebugStop) {
        switch stop {
        case .ended:
            output("guest ended: \(session.finishedDescription())\n")
        case .stopped(let vcpu, let reason):
            let rip = (try? session.registers(vcpu: vcpu).rip) ?? 0
            let place = session.describe(rip)
            switch reason {
            case .requested: output("vcpu\(vcpu) stopped at \(place)\n")
            case .singleStep: output("vcpu\(vcpu) at \(place)\n")
            case .softwareBreakpoint(let address), .hardwareBreakpoint(let address):
                let number = breakpoints.first {
                    switch $0.breakpoint {
                    case .code(address), .hardware(address): return true
                    default: return false
                    }
                }?.number
                output("vcpu\(vcpu) hit breakpoint \(number.map(String.init) ?? "(guest int3)") at \(place)\n")
            case .exitStep(let event):
                output("vcpu\(vcpu) exit: \(Self.exitText(event))\n")
            case .exitBreakpoint(let event):
                let number = breakpoints.first { if case .exit(let rule) = $0.breakpoint { return rule.matches(event) }; return false }?.number
                output("vcpu\(vcpu) hit exit breakpoint \(number.map(String.init) ?? "?"): \(Self.exitText(event))\n")
            case .debugException(let exception, let address):
                output("vcpu\(vcpu) debug exception \(exception) at \(session.describe(address))\n")
            }
        }
    }

    /// A trace line without its timestamp and vCPU.
    static func exitText(_ event: ExitEvent) -> String {
        event.traceLine.split(separator: " ").dropFirst(2).joined(separator: " ")
    }

    private func showRegisters() throws {
        let r = try session.registers()
        func h(_ value: UInt64) -> String {
            let digits = String(value, radix: 16)
            return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
        }
        let names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
        let values = [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15]
        for row in stride(from: 0, to: names.count, by: 4) {
            output((row..<(row + 4)).map { names[$0].padding(4) + h(values[$0]) }.joined(separator: "  ") + "\n")
        }
        output("rip " + session.describe(r.rip) + "  rflags 0x" + String(r.rflags, radix: 16) + "\n")
    }

    private func showSpecialRegisters() throws {
        let s = try session.specialRegisters()
        func h(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        for (name, segment) in [("cs", s.cs), ("ds", s.ds), ("es", s.es), ("fs", s.fs), ("gs", s.gs), ("ss", s.ss), ("tr", s.tr), ("ldt", s.ldt)] {
            output("\(name.padding(4))selector=\(h(UInt64(segment.selector))) base=\(h(segment.base)) limit=\(h(UInt64(segment.limit))) type=\(segment.type) dpl=\(segment.dpl)\(segment.l ? " long" : "")\(segment.present ? "" : " not-present")\n")
        }
        output("cr0=\(h(s.cr0)) cr2=\(h(s.cr2)) cr3=\(h(s.cr3)) cr4=\(h(s.cr4)) cr8=\(h(s.cr8)) efer=\(h(s.efer))\n")
        output("gdt=\(h(s.gdt.base))/\(s.gdt.limit) idt=\(h(s.idt.base))/\(s.idt.limit) apic_base=\(h(s.apicBase))\n")
    }

    private func showMemory(_ bytes: [UInt8], at address: UInt64, unit: Int, virtual: Bool) {
        let perLine = max(16 / unit, 1)
        var index = 0
        while index * unit < bytes.count {
            let lineAddress = address &+ UInt64(index * unit)
            var line = (virtual ? session.describe(lineAddress) : "0x" + String(lineAddress, radix: 16)) + ":"
            for item in index..<min(index + perLine, bytes.count / unit) {
                let value = LittleEndian.load(bytes[(item * unit)..<(item * unit + unit)])
                let digits = String(value, radix: 16)
                line += " 0x" + String(repeating: "0", count: unit * 2 - digits.count) + digits
            }
            output(line + "\n")
            index += perLine
        }
    }
}

extension DebugSession {
    /// How the VM ended, for the prompt (only meaningful once it has).
    func finishedDescription() -> String {
        let outcome = finish()
        return "\(outcome.summary) (status \(outcome.exitCode))"
    }
}

extension RunOutcome {
    /// A short phrase: "all vCPUs halted", "debug exit 0x1", ...
    public var summary: String {
        switch self {
        case .halted: return "all vCPUs halted"
        case .poweredOff: return "powered off"
        case .reboot: return "reset by the guest"
        case .debugExit(let status): return "debug exit 0x\(String(status >> 1, radix: 16))"
        case .guestFailure(let kind, let vcpu, let detail, _): return "\(kind.rawValue) on vcpu\(vcpu): \(detail)"
        case .signal(let number): return "signal \(number)"
        case .vmmFailure(let message): return "VMM failure: \(message)"
        case .stopped: return "stopped"
        case .migrated: return "migrated to another VMM"
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}
