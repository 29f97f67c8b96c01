import Host
import Debugging
import Devices
import Glibc
import KVM
import Placement
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
        let second = Clocks.coarseSeconds()
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
/// and turns terminal exits into a RunOutcome. With a tracer it reports every selected exit; with
/// a debug gate it parks where the debugger wants it (breakpoints, steps, exit breakpoints).
final class VCPURunner: Sendable {
    let index: Int
    let vcpu: VCPU
    let pio: Bus
    let mmio: Bus
    /// Guest RAM, for the PVM compatibility layer's memory operands.
    let memory: GuestMemory
    let control: RunControl
    let unclaimed: UnclaimedAccessLog
    let detailedStats: Bool
    let kickSignal: Int32
    let tracer: ExitTracer?
    let gate: DebugGate?
    /// Time zero of trace lines (the VM's start).
    let startTime: Double
    /// The vCPU thread's kernel thread id, once it runs (0 before).
    let threadID = Atomic<Int32>(0)
    /// MSR_KVM_STEAL_TIME as this thread last read it: the guest's steal-time record address,
    /// bit 0 set once the guest enabled it (0 before). KVM handles the MSR itself and never
    /// exits for it, so the thread reads it back at its own exits: each of the first 1024
    /// until the guest enabled it, then every 4096th (a guest may move or disable it).
    let stealTimeMSR = Atomic<UInt64>(0)
    /// The thread's schedstat as it ended (its /proc entry goes with it): run and wait time.
    let finalSchedStat = Locked<ThreadSchedStat?>(nil)
    /// /proc/thread-self/schedstat, opened before the thread's filter (which forbids opening
    /// files) and read once as it ends; -1 when it could not be opened.
    private let schedStatFile = Atomic<Int32>(-1)

    /// Runs in the vCPU thread before its seccomp filter.
    func openSchedStat() {
        schedStatFile.store(open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC), ordering: .releasing)
    }

    /// Run and wait time of this thread so far, from the file opened before the filter.
    private func readOwnSchedStat() -> ThreadSchedStat? {
        let fd = schedStatFile.exchange(-1, ordering: .acquiringAndReleasing)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let bytes = try? FileDescriptor(rawValue: fd).readAll(count: 128, at: 0) else { return nil }
        return ThreadSchedStat.parse(schedstat: String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self), stat: "")
    }
    private let statistics: Locked<ExitStatistics>
    private let dispatcher: ExitDispatcher

    /// What the guest's CPUID offers of the instructions the PVM layer answers with #UD without.
    private let features: PVMCompat.Features
    /// Whether `in` of port 0x5658 is the VMware backdoor (`--vmware-backdoor`).
    private let vmwareBackdoor: Bool
    /// What this vCPU does when the machine wakes from S3 (set by the machine before it runs).
    let sleep: SleepState?
    /// Deterministic mode (vCPU 0 only): counts, records or checks every exit, injects interrupts.
    let deterministic: ReplayDriver?

    init(index: Int, vcpu: VCPU, pio: Bus, mmio: Bus, memory: GuestMemory, control: RunControl, unclaimed: UnclaimedAccessLog, detailedStats: Bool,
         kickSignal: Int32, tracer: ExitTracer? = nil, gate: DebugGate? = nil, startTime: Double = Clocks.monotonicSeconds(),
         features: PVMCompat.Features = PVMCompat.Features(), vmwareBackdoor: Bool = false, sleep: SleepState? = nil,
         deterministic: ReplayDriver? = nil) {
        self.deterministic = deterministic
        self.features = features
        self.vmwareBackdoor = vmwareBackdoor
        self.sleep = sleep
        self.index = index
        self.vcpu = vcpu
        self.pio = pio
        self.mmio = mmio
        self.memory = memory
        self.control = control
        self.unclaimed = unclaimed
        self.detailedStats = detailedStats
        self.kickSignal = kickSignal
        self.tracer = tracer
        self.gate = gate
        self.startTime = startTime
        self.statistics = Locked(ExitStatistics(detailed: detailedStats, live: liveExits))
        self.dispatcher = ExitDispatcher(pio: pio, mmio: mmio, unclaimed: unclaimed)
    }

    /// The counters; complete once the thread has ended, current up to the last park under a debugger.
    /// Exit counts by reason, current at any moment.
    let liveExits = LiveExitCounts()

    var stats: ExitStatistics { statistics.withLock { $0 } }

    /// The thread body: runs until this vCPU halts or the VM stops.
    func run() {
        threadID.store(HostThread.currentID, ordering: .releasing)
        HostThread.unblock(signal: kickSignal)
        var stats = ExitStatistics(detailed: detailedStats, live: liveExits)
        let start = Clocks.monotonicSeconds()
        deterministic?.prepare(vcpu)
        let outcome = loop(&stats, start: start)
        stats.runSeconds = Clocks.monotonicSeconds() - start
        if let deterministic {
            deterministic.finish(outcome: outcome ?? control.result ?? .stopped, vcpu: vcpu)
        }
        readStealTimeMSR()
        let schedstat = readOwnSchedStat()
        finalSchedStat.withLock { $0 = schedstat }
        statistics.withLock { $0 = stats }
        control.vcpuFinished()
        gate?.vcpuFinished(index)
        switch outcome {
        case .halted: control.vcpuHalted()
        case .some(let result): control.finish(result)
        case .none: break
        }
    }

    /// The exit loop. Returns nil when stopped from outside, `.halted` when this vCPU halted.
    ///
    /// Every kick (stop, pause, debugger hold) sets its request, then immediate_exit, then
    /// signals. The loop clears immediate_exit only after an interrupted KVM_RUN or a debugger
    /// park, and looks at all three requests before every KVM_RUN: a request that arrives in
    /// between is either seen here or ends the next KVM_RUN at once, never lost.
    private func loop(_ stats: inout ExitStatistics, start: Double) -> RunOutcome? {
        var plan = ResumePlan(mode: .run)
        var sincePublished = 0
        var stealTimeReads = 0
        var sinceRun = false // an exit was handled and KVM_RUN not yet entered again
        var wakesApplied = sleep?.wakeCount ?? 0
        while !control.isStopping {
            if control.mustPark {
                // The last exit's port or MMIO access is finished first, so the state a
                // snapshot reads while the vCPU is parked is complete (KVM's API says so).
                if sinceRun { completePendingAccess() }
                publish(&stats, start: start)
                control.parkWhilePaused()
                sinceRun = false
                continue
            }
            if let sleep, sleep.wakeCount != wakesApplied {
                // Woken from S3: this vCPU starts again as firmware would leave it.
                wakesApplied = sleep.wakeCount
                do { try sleep.applyWake(to: vcpu, index: index) } catch {
                    return .vmmFailure("vcpu\(index): waking from S3: \(error)")
                }
            }
            if let gate, gate.isHolding {
                publish(&stats, start: start)
                plan = park(gate, .requested)
                continue
            }
            let exit = vcpu.run()
            sinceRun = true
            sincePublished &+= 1
            if sincePublished == 4096 {
                publish(&stats, start: start)
                sincePublished = 0
            } else if stealTimeReads < 1024 && stealTimeMSR.load(ordering: .relaxed) & 1 == 0 {
                stealTimeReads += 1
                readStealTimeMSR()
            }
            if let outcome = handle(exit, plan: &plan, stats: &stats, start: start) { return outcome }
        }
        return nil
    }

    /// Makes the counters so far visible to the debugger's `stats` and the final report:
    /// before parking, and every 4096 exits while running.
    private func publish(_ stats: inout ExitStatistics, start: Double) {
        stats.runSeconds = Clocks.monotonicSeconds() - start
        statistics.withLock { [stats] in $0 = stats }
        readStealTimeMSR()
    }

    private func readStealTimeMSR() {
        guard let value = try? vcpu.modelSpecificRegister(StealTimeRecord.msr) else { return }
        stealTimeMSR.store(value, ordering: .releasing)
    }

    /// Parks this vCPU for the debugger; the plan it is resumed with.
    private func park(_ gate: DebugGate, _ reason: StopReason) -> ResumePlan {
        let plan = control.holding { gate.park(vcpu: index, reason: reason) }
        vcpu.requestImmediateExit(false)
        return plan
    }

    /// One exit: the debugger's stop before a write, the dispatch, then tracing and the
    /// debugger's stop after it. The run's outcome when the exit ends it.
    private func handle(_ exit: VCPUExit, plan: inout ResumePlan, stats: inout ExitStatistics, start: Double) -> RunOutcome? {
        // Writes stop the debugger before a device sees them (a write can end the VM, like the
        // debug-exit port); reads stop after, so the event shows the value the guest got.
        var stoppedBefore = false
        var written: ExitEvent? // a write's event, described once for the debugger and the trace
        if let gate, exit.isWrite, let event = describe(exit) {
            written = event
            if let reason = stopReason(before: event, plan: plan) {
                publish(&stats, start: start)
                plan = park(gate, reason)
                stoppedBefore = true
            }
        }
        var terminal: RunOutcome?
        let disposition: ExitDisposition
        if vmwareBackdoor, case .ioIn(VMwareBackdoor.port, let data) = exit, data.size == 4, data.count == 1, serveBackdoor(data) {
            stats.record(.ioIn)
            stats.recordPort(VMwareBackdoor.port)
            disposition = .resume
        } else {
            disposition = dispatcher.dispatch(exit, stats: &stats)
        }
        switch disposition {
        case .resume: break
        case .interrupted:
            vcpu.requestImmediateExit(false)
            // After the park, immediate_exit is left as it is: a pause asked for again while
            // this vCPU was waking has set it, and clearing it here would lose that.
            if control.mustPark {
                publish(&stats, start: start)
                control.parkWhilePaused()
            }
        case .halted: terminal = .halted
        case .guestFailure(let kind, let detail): terminal = failure(kind, detail)
        case .internalError(let suberror, let data):
            guard let failure = handleInternalError(suberror, data, plan: &plan, stats: &stats, start: start) else {
                return deterministicStep(exit, halted: false, ending: false) // handled: not traced (the guest did not see it)
            }
            terminal = failure
        case .debug(let exception, let pc):
            if gate == nil { terminal = failure(.unhandledExit, "debug exit (exception \(exception)) at 0x\(hex(pc))") }
        case .runFailed(let code):
            return .vmmFailure("vcpu\(index): KVM_RUN failed: \(String(cString: strerror(code)))")
        }
        if deterministic != nil && disposition != .interrupted {
            let halted = terminal == .halted
            if halted { terminal = nil }
            terminal = deterministicStep(exit, halted: halted, ending: terminal != nil || control.isStopping) ?? terminal
        }
        if tracer != nil || gate != nil, let event = written ?? describe(exit) {
            if let tracer, tracer.filter.matches(event) { tracer.record(event) }
            if let gate, let reason = stopReason(after: exit, event: event, plan: plan, stoppedBefore: stoppedBefore) {
                if event.kind.family == "io" || event.kind.family == "mmio" { completePendingAccess() }
                publish(&stats, start: start)
                plan = park(gate, reason)
            }
        }
        return terminal
    }

    /// Deterministic mode's part of a counted exit (after its dispatch): the outcome when the
    /// run ends at it (the guest halted for good, a replay diverged).
    private func deterministicStep(_ exit: VCPUExit, halted: Bool, ending: Bool) -> RunOutcome? {
        guard let deterministic else { return nil }
        switch deterministic.atExit(exit, vcpu: vcpu, halted: halted, ending: ending) {
        case .resume: return nil
        case .end(let outcome): return outcome
        }
    }

    /// An internal error the vCPU may get past: a debugger's int3 (PVM reports an emulation
    /// failure at it), or an instruction the PVM compatibility layer completes. Nil when
    /// handled (the exit is not traced: the guest did not see it); otherwise the failure.
    private func handleInternalError(_ suberror: UInt32, _ data: [UInt64], plan: inout ResumePlan,
                                     stats: inout ExitStatistics, start: Double) -> RunOutcome? {
        if let gate, suberror == 1, let rip = try? vcpu.registers().rip, gate.hasSoftwareBreakpoint(at: rip) {
            // PVM's instruction emulator cannot emulate int3 in guest kernel mode and reports an
            // emulation failure at it instead of a #BP debug exit: at one of the debugger's
            // int3s, that is the breakpoint being hit.
            publish(&stats, start: start)
            plan = park(gate, .softwareBreakpoint(address: rip))
            return nil
        }
        if suberror == 1, let completion = PVMCompat.complete(data, on: vcpu, memory: memory, features: features) {
            stats.pvmCompletions[completion.rawValue, default: 0] &+= 1
            return nil
        }
        return failure(.internalError, ExitDispatcher.internalErrorDetail(suberror: suberror, data: data))
    }

    /// The exit as tracing and the debugger see it (nil for KVM_RUN failures). The data and rip
    /// are only gathered when a tracer's filter selects the exit or a debugger is attached, so a
    /// filter that selects nothing costs one match per exit.
    private func describe(_ exit: VCPUExit) -> ExitEvent? {
        var event = ExitEvent(vcpu: index, seconds: 0, kind: .other)
        var data: ExitData?
        switch exit {
        case .ioOut(let port, let d): (event.kind, event.address, event.size, data) = (.ioOut, UInt64(port), d.size, d)
        case .ioIn(let port, let d): (event.kind, event.address, event.size, data) = (.ioIn, UInt64(port), d.size, d)
        case .mmioWrite(let address, let d): (event.kind, event.address, event.size, data) = (.mmioWrite, address, d.size, d)
        case .mmioRead(let address, let d): (event.kind, event.address, event.size, data) = (.mmioRead, address, d.size, d)
        case .hlt: event.kind = .hlt
        case .shutdown: event.kind = .shutdown
        case .debug(let exception, _, let dr6, _):
            event.kind = .debug
            event.detail = "exception=\(exception) dr6=0x\(String(dr6, radix: 16))"
        case .systemEvent(let type): (event.kind, event.detail) = (.systemEvent, "type=\(type)")
        case .failEntry(let reason, _): (event.kind, event.detail) = (.failEntry, "reason=0x\(String(reason, radix: 16))")
        case .internalError(let suberror, _): (event.kind, event.detail) = (.internalError, "suberror=\(suberror)")
        case .interrupted: event.kind = .interrupted
        case .interruptWindow: event.kind = .interruptWindow
        case .unknown(let reason): event.detail = "reason=\(reason)"
        case .runFailed: return nil
        }
        guard (tracer?.filter.matches(event) ?? false) || gate != nil else { return event }
        event.seconds = Clocks.monotonicSeconds() - startTime
        if let data { event.values = (0..<data.count).map { data.value(at: $0) } }
        event.rip = (try? vcpu.registers().rip) ?? 0
        return event
    }

    /// Whether the debugger wants this vCPU parked at a write exit before it is dispatched.
    private func stopReason(before event: ExitEvent, plan: ResumePlan) -> StopReason? {
        if plan.mode == .stepExit { return .exitStep(event) }
        return plan.exitBreakpoints.contains { $0.matches(event) } ? .exitBreakpoint(event) : nil
    }

    /// Whether the debugger wants this vCPU parked after `exit`, and why. A write already
    /// reported before dispatch only ends an instruction step.
    private func stopReason(after exit: VCPUExit, event: ExitEvent, plan: ResumePlan, stoppedBefore: Bool) -> StopReason? {
        if stoppedBefore {
            return plan.mode == .stepInstruction ? .singleStep : nil
        }
        if exit.isWrite && plan.mode != .stepInstruction { return nil } // checked before dispatch
        if case .debug(let exception, let pc, let dr6, _) = exit {
            switch exception {
            case 3: return .softwareBreakpoint(address: pc)
            case 1 where dr6 & 0xF != 0: return .hardwareBreakpoint(address: pc)
            case 1 where dr6 & 0x4000 != 0 || plan.mode == .stepInstruction: return .singleStep
            default: return .debugException(exception: exception, address: pc)
            }
        }
        if event.kind == .interrupted { return nil }
        switch plan.mode {
        case .stepExit: return .exitStep(event)
        // An instruction that exits to the VMM has run once its access is completed: on VT-x KVM
        // then reports the step as a debug exit, on PVM it does not; either way the step is done.
        case .stepInstruction where event.kind.family == "io" || event.kind.family == "mmio": return .singleStep
        default: break
        }
        return plan.exitBreakpoints.contains { $0.matches(event) } ? .exitBreakpoint(event) : nil
    }

    /// The VMware backdoor's `in`: its registers set through KVM_SET_REGS, EAX also through the
    /// exit's data, which KVM's completion of the `in` writes at the next KVM_RUN (the
    /// instruction emulator of a PVM host takes EAX from the registers instead; both carry the
    /// same value). False without the magic in EAX: the port then reads as unclaimed.
    private func serveBackdoor(_ data: ExitData) -> Bool {
        guard var regs = try? vcpu.registers() else { return false }
        let input = VMwareBackdoor.Registers(eax: UInt32(truncatingIfNeeded: regs.rax), ebx: UInt32(truncatingIfNeeded: regs.rbx),
                                             ecx: UInt32(truncatingIfNeeded: regs.rcx), edx: UInt32(truncatingIfNeeded: regs.rdx))
        guard let output = VMwareBackdoor.call(input) else { return false }
        (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (UInt64(output.eax), UInt64(output.ebx), UInt64(output.ecx), UInt64(output.edx))
        guard (try? vcpu.setRegisters(regs)) != nil else { return false }
        data.setValue(UInt64(output.eax))
        return true
    }

    /// Lets KVM finish the port or MMIO access this exit reported without running further guest
    /// code (immediate_exit, as KVM's API documents), so registers read while parked are final.
    private func completePendingAccess() {
        vcpu.requestImmediateExit(true)
        _ = vcpu.run()
        vcpu.requestImmediateExit(false)
    }

    private func failure(_ kind: RunOutcome.GuestFailure, _ detail: String) -> RunOutcome {
        .guestFailure(kind, vcpu: index, detail: detail, registers: registerDump())
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

extension VCPUExit {
    /// A port or MMIO write: the exits the debugger stops at before dispatching.
    var isWrite: Bool {
        switch self {
        case .ioOut, .mmioWrite: return true
        default: return false
        }
    }
}

