import Glibc
import KVM
import Logging
import Synchronization
import VMMCore

/// Logs unclaimed accesses across vCPUs at a bounded rate: at most `perSecond` lines in each
/// second; the next line logged says how many were suppressed in between. Counting stays exact
/// in ExitStatistics.
final class UnclaimedAccessLog: Sendable {
    let perSecond: Int
    private let window = Atomic<Int>(-1)
    private let loggedInWindow = Atomic<Int>(0)
    private let suppressed = Atomic<Int>(0)
    let logger: Logger

    init(logger: Logger, perSecond: Int = 10) {
        self.logger = logger
        self.perSecond = perSecond
    }

    @inline(__always)
    func note(_ kind: String, address: UInt64, size: Int, value: UInt64?) {
        guard logger.logLevel <= .notice else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
        let second = Int(now.tv_sec)
        let current = window.load(ordering: .relaxed)
        if second != current, window.compareExchange(expected: current, desired: second, ordering: .relaxed).exchanged {
            loggedInWindow.store(0, ordering: .relaxed)
        }
        guard loggedInWindow.add(1, ordering: .relaxed).newValue <= perSecond else {
            suppressed.add(1, ordering: .relaxed)
            return
        }
        let skipped = suppressed.exchange(0, ordering: .relaxed)
        let data = value.map { " value=0x\(String($0, radix: 16))" } ?? ""
        let note = skipped > 0 ? " (\(skipped) similar lines suppressed)" : ""
        logger.notice("unclaimed \(kind) 0x\(String(address, radix: 16)) size=\(size)\(data)\(note)")
    }

    /// How many lines are waiting to be reported as suppressed.
    var pendingSuppressed: Int { suppressed.load(ordering: .relaxed) }
}

/// Runs one vCPU's exit loop on its own host thread: dispatches port and MMIO exits to the buses
/// and turns terminal exits into a RunOutcome.
final class VCPURunner: Sendable {
    let index: Int
    let vcpu: VCPU
    let pio: Bus
    let mmio: Bus
    let control: RunControl
    let unclaimed: UnclaimedAccessLog
    let detailedStats: Bool
    let kickSignal: Int32
    /// The vCPU thread's kernel thread id, once it runs (0 before).
    let threadID = Atomic<Int32>(0)
    private let statistics: Mutex<ExitStatistics>

    init(index: Int, vcpu: VCPU, pio: Bus, mmio: Bus, control: RunControl, unclaimed: UnclaimedAccessLog, detailedStats: Bool, kickSignal: Int32) {
        self.index = index
        self.vcpu = vcpu
        self.pio = pio
        self.mmio = mmio
        self.control = control
        self.unclaimed = unclaimed
        self.detailedStats = detailedStats
        self.kickSignal = kickSignal
        self.statistics = Mutex(ExitStatistics(detailed: detailedStats))
    }

    /// The counters; complete once the thread has ended.
    var stats: ExitStatistics { statistics.withLock { $0 } }

    /// The thread body: runs until this vCPU halts or the VM stops.
    func run() {
        HostThread.setName("vcpu\(index)")
        threadID.store(HostThread.currentID, ordering: .releasing)
        HostThread.unblock(signal: kickSignal)
        var stats = ExitStatistics(detailed: detailedStats)
        let start = monotonicSeconds()
        let outcome = loop(&stats)
        stats.runSeconds = monotonicSeconds() - start
        statistics.withLock { $0 = stats }
        control.vcpuFinished()
        switch outcome {
        case .halted: control.vcpuHalted()
        case .some(let result): control.finish(result)
        case .none: break
        }
    }

    /// The exit loop. Returns nil when stopped from outside, `.halted` when this vCPU halted.
    private func loop(_ stats: inout ExitStatistics) -> RunOutcome? {
        while !control.isStopping {
            switch vcpu.run() {
            case .ioOut(let port, let data):
                stats.record(.ioOut)
                stats.recordPort(port)
                for element in 0..<data.count {
                    let value = data.value(at: element)
                    if !pio.write(UInt64(port), size: data.size, value: value) {
                        stats.unclaimedWrites &+= 1
                        unclaimed.note("port write", address: UInt64(port), size: data.size, value: value)
                    }
                }
            case .ioIn(let port, let data):
                stats.record(.ioIn)
                stats.recordPort(port)
                for element in 0..<data.count {
                    if let value = pio.read(UInt64(port), size: data.size) {
                        data.setValue(value, at: element)
                    } else {
                        stats.unclaimedReads &+= 1
                        unclaimed.note("port read", address: UInt64(port), size: data.size, value: nil)
                        data.setValue(Bus.mask(data.size), at: element)
                    }
                }
            case .mmioWrite(let address, let data):
                stats.record(.mmioWrite)
                stats.recordMMIO(address)
                let value = data.value()
                if !mmio.write(address, size: data.size, value: value) {
                    stats.unclaimedWrites &+= 1
                    unclaimed.note("mmio write", address: address, size: data.size, value: value)
                }
            case .mmioRead(let address, let data):
                stats.record(.mmioRead)
                stats.recordMMIO(address)
                if let value = mmio.read(address, size: data.size) {
                    data.setValue(value)
                } else {
                    stats.unclaimedReads &+= 1
                    unclaimed.note("mmio read", address: address, size: data.size, value: nil)
                    data.setValue(Bus.mask(data.size))
                }
            case .hlt:
                stats.record(.hlt)
                // Without a userspace interrupt source nothing can wake a halted vCPU.
                return .halted
            case .interrupted:
                stats.record(.interrupted)
                vcpu.requestImmediateExit(false)
                if control.isPauseRequested {
                    control.parkWhilePaused()
                    vcpu.requestImmediateExit(false)
                }
            case .shutdown:
                stats.record(.shutdown)
                return failure(.tripleFault, "KVM_EXIT_SHUTDOWN")
            case .failEntry(let reason, let cpu):
                stats.record(.failEntry)
                return failure(.failedEntry, "hardware entry failure reason 0x\(String(reason, radix: 16)) on host cpu \(cpu)")
            case .internalError(let suberror, let data):
                stats.record(.internalError)
                let words = data.map { "0x\(String($0, radix: 16))" }.joined(separator: " ")
                return failure(.internalError, "suberror \(suberror)\(internalErrorName(suberror)) data [\(words)]")
            case .debug(let exception, let pc, _, _):
                stats.record(.debug)
                return failure(.unhandledExit, "debug exit (exception \(exception)) at 0x\(String(pc, radix: 16))")
            case .systemEvent(let type):
                stats.record(.systemEvent)
                return failure(.unhandledExit, "system event \(type)")
            case .runFailed(let code):
                return .vmmFailure("vcpu\(index): KVM_RUN failed: \(String(cString: strerror(code)))")
            case .unknown(let reason):
                stats.record(.other)
                return failure(.unhandledExit, "exit reason \(reason)")
            }
        }
        return nil
    }

    private func failure(_ kind: RunOutcome.GuestFailure, _ detail: String) -> RunOutcome {
        .guestFailure(kind, vcpu: index, detail: detail, registers: registerDump())
    }

    private func internalErrorName(_ suberror: UInt32) -> String {
        switch suberror {
        case 1: return " (emulation failure)"
        case 2: return " (simultaneous exceptions)"
        case 3: return " (delivery event failure)"
        default: return ""
        }
    }

    /// rip, rsp, flags, control registers, EFER and segment bases, for post-mortems on stderr.
    func registerDump() -> String {
        guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else {
            return "(registers unavailable)"
        }
        func h(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        func seg(_ name: String, _ s: Segment) -> String { "\(name)=\(h(UInt64(s.selector)))@\(h(s.base))" }
        return [
            "rip=\(h(regs.rip)) rsp=\(h(regs.rsp)) rflags=\(h(regs.rflags)) rax=\(h(regs.rax)) rbx=\(h(regs.rbx)) rcx=\(h(regs.rcx)) rdx=\(h(regs.rdx)) rsi=\(h(regs.rsi)) rdi=\(h(regs.rdi))",
            "cr0=\(h(sregs.cr0)) cr2=\(h(sregs.cr2)) cr3=\(h(sregs.cr3)) cr4=\(h(sregs.cr4)) efer=\(h(sregs.efer))",
            [seg("cs", sregs.cs), seg("ds", sregs.ds), seg("es", sregs.es), seg("ss", sregs.ss),
             seg("fs", sregs.fs), seg("gs", sregs.gs), seg("tr", sregs.tr),
             "gdt=\(h(sregs.gdt.base))/\(sregs.gdt.limit)", "idt=\(h(sregs.idt.base))/\(sregs.idt.limit)"].joined(separator: " "),
        ].joined(separator: "\n")
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
