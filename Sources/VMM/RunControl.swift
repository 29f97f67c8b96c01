import Host
import VMMCore
import Synchronization

/// How a VM run ended.
public enum RunOutcome: Sendable, Equatable {
    /// Every vCPU executed HLT with interrupts disabled.
    case halted
    /// The guest powered off: "Shutdown" on port 0x8900 or the ACPI sleep control (status 0).
    case poweredOff
    /// The guest reset the machine: i8042 command 0xFE or port 0xcf9 (status 0; the command line
    /// may boot it again, `--on-reboot restart`).
    case reboot
    /// The guest wrote to the debug-exit port; `status` is (V << 1) | 1.
    case debugExit(status: UInt64)
    /// The guest failed in a way KVM reported (triple fault, internal error, failed entry,
    /// unhandled exit); `detail` names it and `registers` holds the vCPU's register dump.
    case guestFailure(GuestFailure, vcpu: Int, detail: String, registers: String)
    /// A signal (or the console escape) stopped the VM.
    case signal(Int32)
    /// The VMM itself failed while running.
    case vmmFailure(String)
    /// The host stopped the VM through the control API (`Machine.stop()`).
    case stopped
    /// The VM moved to another VMM: a live migration completed (status 78).
    case migrated

    public enum GuestFailure: String, Sendable {
        case tripleFault = "triple fault"
        case internalError = "KVM internal error"
        case failedEntry = "VM entry failed"
        case unhandledExit = "unhandled exit"
    }

    /// The process exit status for this outcome.
    public var exitCode: Int32 {
        switch self {
        case .halted, .poweredOff, .reboot: return ExitCode.halted
        case .debugExit(let status): return Int32(truncatingIfNeeded: status & 0xFF)
        case .guestFailure(let kind, _, _, _):
            switch kind {
            case .tripleFault: return ExitCode.tripleFault
            case .internalError: return ExitCode.internalError
            case .failedEntry: return ExitCode.failedEntry
            case .unhandledExit: return ExitCode.unhandledExit
            }
        case .signal(let number): return ExitCode.signal(number)
        case .vmmFailure: return ExitCode.vmmFailure
        case .stopped: return ExitCode.stopped
        case .migrated: return ExitCode.migrated
        }
    }
}

/// Coordinates vCPU threads: pause and resume them, and end the run — the first outcome wins,
/// then every vCPU is kicked out of KVM_RUN so the process ends promptly.
public final class RunControl: Sendable {
    private let outcome = Locked<RunOutcome?>(nil)
    private let stopping = Atomic<Bool>(false)
    private let haltedCount = Atomic<Int>(0)
    private let pauseRequested = Atomic<Bool>(false)
    /// The guest is suspended to RAM (ACPI S3): its vCPUs park as for a pause, and only a wake
    /// lets them go (an API resume does not).
    private let sleeping = Atomic<Bool>(false)
    /// vCPUs parked by a pause or done for good; guarded by `parking`.
    private let parked = Locked(0)
    private let parking = ConditionLock()
    private let kick = Locked<(@Sendable () -> Void)?>(nil)
    private let vcpuCount: Int

    public init(vcpuCount: Int) {
        self.vcpuCount = vcpuCount
    }

    /// True once an outcome is set; vCPU loops check it after every exit.
    @inline(__always)
    public var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// The outcome, once set.
    public var result: RunOutcome? { outcome.withLock { $0 } }

    /// Installs what `finish` calls to interrupt running vCPUs.
    public func setKick(_ body: @escaping @Sendable () -> Void) {
        kick.withLock { $0 = body }
    }

    /// Records `result` if no outcome was set yet, and stops every vCPU.
    public func finish(_ result: RunOutcome) {
        let first = outcome.withLock { current -> Bool in
            guard current == nil else { return false }
            current = result
            return true
        }
        guard first else { return }
        stopping.store(true, ordering: .releasing)
        kick.withLock { $0 }?()
        parking.withLock { parking.broadcast() }
    }

    /// A vCPU halted for good; the run ends when all have.
    public func vcpuHalted() {
        if haltedCount.add(1, ordering: .acquiringAndReleasing).newValue == vcpuCount {
            finish(.halted)
        }
    }

    // MARK: pause and resume

    /// True while a pause is requested; vCPU loops check it after every exit.
    @inline(__always)
    public var isPauseRequested: Bool { pauseRequested.load(ordering: .acquiring) }

    /// Stops every vCPU outside KVM_RUN and returns once all are parked (or finished).
    public func pause() {
        pauseRequested.store(true, ordering: .releasing)
        kick.withLock { $0 }?()
        parking.withLock {
            while parked.withLock({ $0 }) < vcpuCount && !isStopping { parking.wait(until: nil) }
        }
    }

    /// Asks for a pause without waiting: vCPUs park at their next look (a machine restored to
    /// start paused asks before its vCPUs run, so none runs a guest instruction).
    public func requestPause() {
        pauseRequested.store(true, ordering: .releasing)
        kick.withLock { $0 }?()
    }

    /// Whether every vCPU is parked (or done): the guest state is still while this holds and a
    /// pause is requested.
    public var allParked: Bool { parking.withLock { parked.withLock { $0 } >= vcpuCount } }

    /// Lets paused vCPUs run again.
    public func resume() {
        parking.withLock {
            pauseRequested.store(false, ordering: .releasing)
            parking.broadcast()
        }
    }

    /// True while the guest sleeps in S3, or a pause is requested: vCPU loops park.
    @inline(__always)
    var mustPark: Bool { isPauseRequested || sleeping.load(ordering: .acquiring) }

    /// S3 begins (true: every vCPU parks at its next look) or ends (false: they run again,
    /// unless a pause still holds them).
    func setSleeping(_ asleep: Bool) {
        parking.withLock {
            sleeping.store(asleep, ordering: .releasing)
            parking.broadcast()
        }
        if asleep { kick.withLock { $0 }?() }
    }

    /// Called by a vCPU thread that saw a pause request or S3: waits until resumed (and awake)
    /// or stopped.
    func parkWhilePaused() {
        parking.withLock {
            parked.withLock { $0 += 1 }
            parking.broadcast()
            while mustPark && !isStopping { parking.wait(until: nil) }
            parked.withLock { $0 -= 1 }
        }
    }

    /// Runs `body` (a vCPU parked by the debugger) counted as parked, so a pause asked for
    /// meanwhile returns instead of waiting for a vCPU the debugger holds.
    func holding<R>(_ body: () -> R) -> R {
        parking.withLock {
            parked.withLock { $0 += 1 }
            parking.broadcast()
        }
        defer { parking.withLock { parked.withLock { $0 -= 1 } } }
        return body()
    }

    /// Called once by a vCPU thread that has finished, so pause() does not wait for it.
    func vcpuFinished() {
        parking.withLock {
            parked.withLock { $0 += 1 }
            parking.broadcast()
        }
    }
}
