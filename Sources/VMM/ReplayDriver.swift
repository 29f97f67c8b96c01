import Devices
import Glibc
import Host
import KVM
import Replay
import VMMCore

/// How a deterministic run ended as record/replay sees it.
public enum ReplayVerdict: Sendable, Equatable {
    /// A recording finished: its end record.
    case recorded(ReplayEnd, logBytes: UInt64)
    /// A replay reached the recording's end with the same exits, status and digests.
    case identical(ReplayEnd)
    /// A replay went another way; the line says where.
    case diverged(String)
    /// The log could not be read on.
    case badLog(String)
    /// Deterministic mode without a log.
    case unrecorded
}

/// Deterministic mode at the exits of its one vCPU: counts them, keeps the virtual clock,
/// takes outside input, fires timers, injects the 8259's interrupts, and records all of it in
/// the log (`--record`) or checks it against the log (`replay`). docs/replay.md is the model.
///
/// An exit, in this order: the dispatched exit's record (written, or compared); input taken at
/// it (console bytes, balloon requests: written, or taken from the log); the clock's step and
/// the timers due; a HLT's wait (to the next deadline or the next input); the interrupt
/// injected, if the guest can take one (else an interrupt window is asked for).
final class ReplayDriver: @unchecked Sendable {
    // @unchecked: every field is used by the vCPU thread only, except `verdict` (locked).
    enum Mode {
        case free
        case record(ReplayRecorder)
        case replay(ReplayPlayer)
    }

    enum Step: Equatable {
        case resume
        case end(RunOutcome)
    }

    let platform: DeterministicPlatform
    let serial: Serial16550<MachineInterruptLine, AnySerialOutput>
    let balloon: BalloonControl?
    let control: RunControl
    let memory: GuestMemory
    private(set) var mode: Mode
    /// Fault tolerance: the primary's link to its backup (its log goes through `mode`'s recorder).
    let primaryLink: FTPrimaryLink?
    /// Fault tolerance: the gate on the UART's output, and the output behind it.
    let gate: FTSerialGate?
    let serialOutput: BufferedSerialOutput?
    /// Without interrupt controllers (`--irqchip none`) a HLT ends the vCPU, as outside this mode.
    let interruptControllers: Bool
    private(set) var exits: UInt64 = 0
    /// The run ended at an exit the guest made (set at that exit).
    private var endedAtExit = false
    private let result = Locked<ReplayVerdict?>(nil)

    init(platform: DeterministicPlatform, serial: Serial16550<MachineInterruptLine, AnySerialOutput>, balloon: BalloonControl?,
         control: RunControl, memory: GuestMemory, mode: Mode, interruptControllers: Bool,
         primaryLink: FTPrimaryLink? = nil, gate: FTSerialGate? = nil, serialOutput: BufferedSerialOutput? = nil) {
        (self.platform, self.serial, self.balloon, self.control, self.memory, self.mode) = (platform, serial, balloon, control, memory, mode)
        self.interruptControllers = interruptControllers
        (self.primaryLink, self.gate, self.serialOutput) = (primaryLink, gate, serialOutput)
    }

    /// Whether this is a backup replaying its primary's stream (not yet taken over).
    var isFollowingStream: Bool {
        if case .replay(let player) = mode { return player.source.isStream }
        return false
    }

    /// A backup's stream ended: the primary is gone. The replay goes live from here: the clock,
    /// timers and input are this process's now, and the output the primary had not written goes
    /// out first. Not while the run is stopping (the backup itself is being stopped).
    private func takeOverIfStreamEnded(_ player: ReplayPlayer) {
        guard player.source.isStream, !control.isStopping else { return }
        mode = .free
        let how = gate?.takeOver(ownOutput: serialOutput.map { OutputIdentity.of(fd: $0.descriptor) }) ?? ""
        writeStandardError("swiftvmm: ft: the primary went away after exit \(exits); the backup takes over (output \(how))\n")
    }

    var verdict: ReplayVerdict? { result.withLock { $0 } }

    private func settle(_ verdict: ReplayVerdict) {
        result.withLock { if $0 == nil { $0 = verdict } }
    }

    private func diverge(_ why: String) -> Step {
        settle(.diverged("replay diverged at exit \(exits): \(why)"))
        return .end(.vmmFailure("replay diverged at exit \(exits)"))
    }

    private func badLog(_ error: ReplayLogError) -> Step {
        let player: ReplayPlayer? = if case .replay(let player) = mode { player } else { nil }
        settle(.badLog("replay log \(player?.path ?? ""): \(error)"))
        return .end(.vmmFailure("bad replay log"))
    }

    private var clock: VirtualClock { platform.clock }

    /// Before the first run: KVM keeps the registers in kvm_run (RIP for every exit record).
    func prepare(_ vcpu: VCPU) { vcpu.syncRegistersAtExits(true) }

    // MARK: one exit

    /// After `exit` was dispatched. `halted`: it was a HLT; `ending`: the run ends at it.
    func atExit(_ exit: VCPUExit, vcpu: VCPU, halted: Bool, ending: Bool) -> Step {
        exits &+= 1
        platform.exits.value.store(exits, ordering: .relaxed)
        let record = Self.record(of: exit, rip: vcpu.syncedRIP)
        do throws(ReplayLogError) {
            switch mode {
            case .free: break
            case .record(let recorder): recorder.append(.exit(record))
            case .replay(let player):
                let next = try player.peek()
                if next == nil && player.source.isStream {
                    takeOverIfStreamEnded(player)
                    break
                }
                guard case .exit(let expected)? = next else { return try unexpected(record, player) }
                try player.take()
                guard expected == record else { return diverge("expected \(expected), got \(record)") }
            }
            if ending {
                endedAtExit = true
                return .resume
            }
            try takeInputs()
            platform.timers.advance(clock, to: clock.nanoseconds().saturatingAdd(platform.nanosecondsPerExit))
            if halted, let step = try waitWhileHalted(vcpu) { return step }
            if let step = try inject(vcpu) { return step }
            if case .replay(let player) = mode, case .end(let end)? = try player.peek() {
                guard !end.atExit else { return diverge("the recording ended here (\(end.outcome)); the replay did not") }
                settle(.identical(end))
                return .end(.stopped)
            }
            if let primaryLink, primaryLink.isAlive { holdToTheOutputRule(primaryLink) }
        } catch {
            return badLog(error)
        }
        return .resume
    }

    // MARK: the output rule (fault-tolerant primary)

    /// Output waits for the backup's acknowledgement: the chunk holding its exit goes soon after
    /// (at most `flushAfter` later), and a guest whose held output passed the limit waits here,
    /// between exits, until the backup catches up.
    private func holdToTheOutputRule(_ link: FTPrimaryLink) {
        guard let gate, case .record(let recorder) = mode else { return }
        let held = gate.heldCount
        guard held > 0 else { return }
        let now = Clocks.monotonicNanoseconds()
        if now.saturatingSubtract(link.lastFlush) >= FTLimits.flushAfter || held > FTLimits.heldOutput { sendToBackup(recorder, link, now: now) }
        while gate.heldCount > FTLimits.heldOutput && link.isAlive && !control.isStopping { usleep(200) }
    }

    private func sendToBackup(_ recorder: ReplayRecorder, _ link: FTPrimaryLink, now: UInt64) {
        recorder.flush()
        link.sendWritten(serialOutput?.bytesWritten ?? 0, exits: exits)
        link.lastFlush = now
    }

    /// A primary whose guest waits in HLT sends what it has and, now and then, a heartbeat.
    private func keepBackupCurrent() {
        guard let primaryLink, primaryLink.isAlive, case .record(let recorder) = mode else { return }
        let now = Clocks.monotonicNanoseconds()
        if recorder.hasPending { sendToBackup(recorder, primaryLink, now: now) }
        if now.saturatingSubtract(primaryLink.lastHeartbeat) >= FTLimits.heartbeat {
            primaryLink.sendWritten(serialOutput?.bytesWritten ?? 0, exits: exits)
            primaryLink.sendHeartbeat(exits: exits)
            primaryLink.lastHeartbeat = now
        }
    }

    /// A replay's exit where the log has something else: the end (the replay ran on), or the
    /// end of the file.
    private func unexpected(_ record: ExitRecord, _ player: ReplayPlayer) throws(ReplayLogError) -> Step {
        switch try player.peek() {
        case .end(let end)?: return diverge("the recording ended before this exit (\(end.outcome)); the replay went on with \(record)")
        case nil: throw .truncated(exits: player.exits)
        case let other?: return diverge("expected \(other), got \(record)")
        }
    }

    /// The exit as the log keeps it.
    static func record(of exit: VCPUExit, rip: UInt64) -> ExitRecord {
        func access(_ kind: ExitRecord.Kind, _ address: UInt64, _ data: ExitData) -> ExitRecord {
            var value: UInt64
            if data.count == 1 {
                value = data.value(at: 0)
            } else {
                var digest = Digest()
                for index in 0..<data.count { digest.add(data.value(at: index)) }
                value = digest.value
            }
            return ExitRecord(kind: kind, address: address, size: UInt8(data.size), count: UInt64(data.count), value: value, rip: rip)
        }
        switch exit {
        case .ioOut(let port, let data): return access(.ioOut, UInt64(port), data)
        case .ioIn(let port, let data): return access(.ioIn, UInt64(port), data)
        case .mmioWrite(let address, let data): return access(.mmioWrite, address, data)
        case .mmioRead(let address, let data): return access(.mmioRead, address, data)
        case .hlt: return ExitRecord(kind: .hlt, rip: rip)
        case .interruptWindow: return ExitRecord(kind: .interruptWindow, rip: rip)
        case .shutdown: return ExitRecord(kind: .shutdown, rip: rip)
        case .internalError: return ExitRecord(kind: .completed, rip: rip)
        default: return ExitRecord(kind: .other, rip: rip)
        }
    }

    // MARK: input

    /// Input that takes effect at this exit: what arrived (recorded), or what the log says.
    private func takeInputs() throws(ReplayLogError) {
        switch mode {
        case .replay(let player):
            while let record = try player.peek() {
                switch record {
                case .input(let bytes):
                    guard serial.receive(bytes) == bytes.count else { throw .corrupt("the UART cannot take the input logged at exit \(exits)") }
                case .balloonTarget(let pages): balloon?.applyTarget(pages: pages)
                case .balloonStatsInterval(let nanoseconds): balloon?.applyStatsInterval(nanoseconds: nanoseconds)
                default: return
                }
                try player.take()
            }
        case .record, .free:
            guard platform.inputs.hasPending else { return }
            let taken = platform.inputs.take(consoleRoom: serial.receiveRoom)
            if !taken.console.isEmpty {
                let accepted = serial.receive(taken.console)
                log(.input(Array(taken.console.prefix(accepted))))
            }
            if let pages = taken.balloonTarget {
                balloon?.applyTarget(pages: pages)
                log(.balloonTarget(pages))
            }
            if let nanoseconds = taken.statsInterval {
                balloon?.applyStatsInterval(nanoseconds: nanoseconds)
                log(.balloonStatsInterval(nanoseconds))
            }
        }
    }

    private func log(_ record: ReplayRecord) {
        if case .record(let recorder) = mode { recorder.append(record) }
    }

    // MARK: HLT

    /// A HLT with interrupts enabled waits for the next timer deadline (the clock jumps there)
    /// or, recording, for input (the clock moves by the real time waited, and the log says so).
    /// HLT with interrupts disabled, or with nothing that could ever wake it, halts for good.
    private func waitWhileHalted(_ vcpu: VCPU) throws(ReplayLogError) -> Step? {
        var waitedReal: UInt64 = 0
        func haltForGood() -> Step {
            endedAtExit = true
            return .end(.halted)
        }
        guard interruptControllers else { return haltForGood() }
        while !platform.pic.hasPendingInterrupt {
            guard vcpu.isReadyForInterrupt else { return haltForGood() }
            let deadline = platform.timers.nextDeadline()
            let now = clock.nanoseconds()
            if case .replay(let player) = mode {
                let next = try player.peek()
                if next == nil && player.source.isStream {
                    takeOverIfStreamEnded(player)
                    continue
                }
                if case .end(let end)? = next {
                    // Recorded: stopped from outside while halted here, or halted for good.
                    if !end.atExit {
                        settle(.identical(end))
                        return .end(.stopped)
                    }
                    if deadline == nil { return haltForGood() }
                }
                if case .clock(let time)? = next {
                    try player.take()
                    platform.timers.advance(clock, to: time)
                    try takeInputs()
                } else if let deadline {
                    platform.timers.advance(clock, to: deadline)
                } else {
                    return diverge("the guest halted with nothing to wake it; the recording went on")
                }
                continue
            }
            if control.isStopping { return .resume }
            if control.mustPark {
                control.parkWhilePaused()
                continue
            }
            keepBackupCurrent()
            // Input that the UART cannot take yet (its FIFO is full) does not end the wait.
            let takeable = platform.inputs.hasPending && platform.inputs.hasTakeable(consoleRoom: serial.receiveRoom)
            if takeable {
                let time = now.saturatingAdd(waitedReal)
                platform.timers.advance(clock, to: deadline.map { min(time, $0) } ?? time)
                log(.clock(clock.nanoseconds()))
                try takeInputs()
                waitedReal = 0
                continue
            }
            guard deadline != nil || !platform.inputs.consoleClosed else { return haltForGood() }
            let remaining = deadline.map { $0.saturatingSubtract(now).saturatingSubtract(waitedReal) } ?? .max
            if remaining == 0, let deadline {
                platform.timers.advance(clock, to: deadline)
                waitedReal = 0
                continue
            }
            let start = Clocks.monotonicNanoseconds()
            platform.inputs.wait(until: start.saturatingAdd(min(remaining, ReplayLimits.waitSliceNanoseconds)), evenIfPending: platform.inputs.hasPending)
            waitedReal = waitedReal.saturatingAdd(Clocks.monotonicNanoseconds().saturatingSubtract(start))
        }
        return nil
    }

    // MARK: interrupts

    /// Injects the 8259's interrupt when the guest can take it, or asks KVM for the exit at
    /// which it can. A replay checks the log injected the same vector here.
    private func inject(_ vcpu: VCPU) throws(ReplayLogError) -> Step? {
        var injected: UInt8?
        if platform.pic.hasPendingInterrupt {
            if vcpu.isReadyForInterrupt {
                let vector = platform.pic.acknowledge()
                do { try vcpu.injectInterrupt(vector: vector) } catch { return .end(.vmmFailure("vcpu0: \(error)")) }
                vcpu.requestInterruptWindow(false)
                injected = vector
            } else {
                vcpu.requestInterruptWindow(true)
            }
        } else {
            vcpu.requestInterruptWindow(false)
        }
        switch mode {
        case .free: break
        case .record(let recorder): if let injected { recorder.append(.interrupt(injected)) }
        case .replay(let player):
            let next = try player.peek()
            if next == nil && player.source.isStream {
                takeOverIfStreamEnded(player)
                return nil
            }
            let logged: UInt8? = if case .interrupt(let vector)? = next { vector } else { nil }
            guard logged == injected else {
                let say = { (vector: UInt8?) in vector.map { "vector 0x\(String($0, radix: 16))" } ?? "none" }
                return diverge("interrupt injected: expected \(say(logged)), got \(say(injected))")
            }
            if logged != nil { try player.take() }
        }
        return nil
    }

    // MARK: the end

    /// After the vCPU thread's loop: the recording's end record, or the replay's verdict.
    func finish(outcome: RunOutcome, vcpu: VCPU) {
        // Free deterministic mode keeps no log: no digest to compute over all of RAM.
        if case .free = mode {
            settle(.unrecorded)
            return
        }
        let atExit = endedAtExit && outcome.isGuestCaused
        let registers = Self.registerDigest(vcpu)
        let end = ReplayEnd(exits: exits, status: outcome.exitCode, atExit: atExit, memoryDigest: memoryDigest(),
                            registerDigest: registers, outcome: "\(outcome)")
        switch mode {
        case .free: break
        case .record(let recorder):
            recorder.append(.end(end))
            recorder.flush()
            if let primaryLink {
                // The last output goes once the backup has the end of the log (or is gone).
                primaryLink.awaitAcknowledgement(of: exits)
                gate?.openAll()
            }
            if let failure = recorder.failure {
                settle(.badLog("replay log \(recorder.path): writing failed: \(failure)"))
            } else {
                settle(.recorded(end, logBytes: recorder.bytesWritten))
            }
        case .replay(let player):
            guard verdict == nil else { return }
            guard atExit else {
                settle(.diverged("replay stopped at exit \(exits) (\(outcome)) before the end of the log"))
                return
            }
            let logged: ReplayRecord?
            do { logged = try player.peek() } catch {
                settle(.badLog("replay log \(player.path): \(error)"))
                return
            }
            guard case .end(let recorded)? = logged else {
                settle(.diverged("replay diverged at exit \(exits): the replay ended (\(outcome)), the recording went on"))
                return
            }
            if player.source.isStream, let stream = player.source as? FTStreamSource {
                // The primary's guest ended too: whatever output the primary did not get out
                // before it closed the link, the backup writes.
                stream.awaitEnd()
                gate?.takeOver(ownOutput: serialOutput.map { OutputIdentity.of(fd: $0.descriptor) })
            }
            if !recorded.atExit || recorded.status != end.status {
                settle(.diverged("replay diverged at exit \(exits): the recording ended with status \(recorded.status) (\(recorded.outcome)), the replay with \(end.status) (\(outcome))"))
            } else if recorded.memoryDigest != end.memoryDigest || recorded.registerDigest != end.registerDigest {
                settle(.diverged("replay diverged at the end (exit \(exits)): digest expected \(Self.hex(recorded.memoryDigest))/\(Self.hex(recorded.registerDigest)), got \(Self.hex(end.memoryDigest))/\(Self.hex(end.registerDigest)) (memory/registers)"))
            } else {
                settle(.identical(recorded))
            }
        }
    }

    static func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// A digest of all guest RAM.
    func memoryDigest() -> UInt64 {
        var digest = Digest()
        for region in memory.regions {
            // Safe: each region is a live mapping of `size` bytes that the memory object owns
            // for its whole life; the vCPU has stopped, so nothing writes it while it is read.
            guard let base = UnsafeRawPointer(bitPattern: region.hostAddress) else { continue }
            digest.add(memory: UnsafeRawBufferPointer(start: base, count: region.size))
        }
        return digest.value
    }

    /// A digest of the registers a guest's path through its code shows in.
    static func registerDigest(_ vcpu: VCPU) -> UInt64 {
        var digest = Digest()
        if let r = try? vcpu.registers() {
            for value in [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags] {
                digest.add(value)
            }
        }
        if let s = try? vcpu.specialRegisters() {
            for value in [s.cr0, s.cr2, s.cr3, s.cr4, s.efer, UInt64(s.cs.selector), s.gdt.base, s.idt.base] { digest.add(value) }
        }
        return digest.value
    }
}

extension RunOutcome {
    /// Whether the guest itself ended the run (at an exit), not the world outside it.
    var isGuestCaused: Bool {
        switch self {
        case .halted, .poweredOff, .reboot, .debugExit, .guestFailure: return true
        case .signal, .vmmFailure, .stopped, .migrated: return false
        }
    }
}
