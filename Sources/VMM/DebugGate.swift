import Host
import VMMCore
import Debugging
import Synchronization

/// Why a vCPU stopped under the debugger.
public enum StopReason: Sendable, Equatable {
    /// Parked because the debugger asked every vCPU to stop: at start, on an interrupt, or because
    /// another vCPU stopped (all-stop).
    case requested
    /// int3 at `address` (one of ours or the guest's own).
    case softwareBreakpoint(address: UInt64)
    /// A debug-register breakpoint at `address`.
    case hardwareBreakpoint(address: UInt64)
    /// One instruction was single-stepped.
    case singleStep
    /// `step`: the VM exit that ended it.
    case exitStep(ExitEvent)
    /// An exit breakpoint matched this exit.
    case exitBreakpoint(ExitEvent)
    /// Another debug exception (for example DR6 without a known cause).
    case debugException(exception: UInt32, address: UInt64)
}

/// What a parked vCPU does when released.
public struct ResumePlan: Sendable, Equatable {
    public enum Mode: Sendable, Equatable {
        /// Run until a breakpoint, an exit breakpoint or a stop request.
        case run
        /// Run to the next guest exit.
        case stepExit
        /// Execute one instruction (single-step armed by the debugger).
        case stepInstruction
    }

    public var mode: Mode
    /// Exits that stop the vCPU after they are handled.
    public var exitBreakpoints: [ExitFilter.Rule]

    public init(mode: Mode, exitBreakpoints: [ExitFilter.Rule] = []) {
        self.mode = mode
        self.exitBreakpoints = exitBreakpoints
    }
}

/// What the debugger learns from `waitForStop`.
public enum DebugStop: Sendable, Equatable {
    /// Every vCPU is parked (or finished); `vcpu` stopped first, for `reason`.
    case stopped(vcpu: Int, reason: StopReason)
    /// The VM has ended; no vCPU will park again.
    case ended
}

/// All-stop coordination between vCPU threads and a debugger thread. A vCPU that meets a stop
/// event parks here and asks every other vCPU to park; the debugger sees the stop once all are
/// parked, inspects them, and releases one (stepping) or all (continuing) with a plan.
public final class DebugGate: @unchecked Sendable {
    // @unchecked: every field below `lock` is read and written with `lock` held.
    private let lock = ConditionLock()
    /// Mirror of `holding` for the vCPU loops' lock-free check after every exit.
    private let holdFlag = Atomic<Bool>(true)
    private var holding = true
    private var parked: [Int: StopReason] = [:]
    private var finished: Set<Int> = []
    private var plans: [Int: ResumePlan] = [:]
    private var firstStop: (vcpu: Int, reason: StopReason)?
    private var ended = false
    private let kick = Locked<(@Sendable () -> Void)?>(nil)
    /// Addresses holding the debugger's int3, for exits that stand for one (see VCPURunner).
    private let int3Addresses = Locked<Set<UInt64>>([])
    public let vcpuCount: Int

    /// The gate starts holding: every vCPU parks before its first instruction.
    public init(vcpuCount: Int) {
        self.vcpuCount = vcpuCount
    }

    /// Installs what interrupts running vCPUs (set by Machine.run).
    /// `waitForStop` reports nothing before this, so no vCPU is released before it can be kicked.
    func setKick(_ body: @escaping @Sendable () -> Void) {
        kick.withLock { $0 = body }
        lock.withLock { lock.broadcast() }
    }

    // MARK: vCPU side

    /// True when the debugger has an int3 at `address`.
    func hasSoftwareBreakpoint(at address: UInt64) -> Bool { int3Addresses.withLock { $0.contains(address) } }

    /// The debugger's int3 addresses (set by DebugSession when they change).
    func setSoftwareBreakpoints(_ addresses: Set<UInt64>) { int3Addresses.withLock { $0 = addresses } }

    /// True when the vCPU must park at its next check.
    @inline(__always)
    var isHolding: Bool { holdFlag.load(ordering: .acquiring) }

    /// Parks vCPU `vcpu` for `reason` until the debugger releases it; returns its plan. Returns
    /// a plain `.run` plan once the VM has ended (the caller sees the stop flag and leaves).
    func park(vcpu: Int, reason: StopReason) -> ResumePlan {
        var mustKick = false
        lock.withLock {
            if reason != .requested && firstStop == nil { firstStop = (vcpu, reason) }
            if !holding {
                holding = true
                holdFlag.store(true, ordering: .releasing)
                mustKick = true
            }
            parked[vcpu] = reason
            lock.broadcast()
        }
        if mustKick { kick.withLock { $0 }?() }
        return lock.withLock {
            while plans[vcpu] == nil && !ended { lock.wait() }
            parked[vcpu] = nil
            return plans.removeValue(forKey: vcpu) ?? ResumePlan(mode: .run)
        }
    }

    /// vCPU `vcpu` has left its loop for good.
    func vcpuFinished(_ vcpu: Int) {
        lock.withLock {
            finished.insert(vcpu)
            lock.broadcast()
        }
    }

    /// The VM has an outcome: wake everything, park no more.
    func end() {
        lock.withLock {
            ended = true
            holding = false
            holdFlag.store(false, ordering: .releasing)
            lock.broadcast()
        }
    }

    // MARK: debugger side

    /// Waits until every vCPU is parked or finished after a stop event (or the VM ended).
    /// Returns nil if `timeout` seconds pass first.
    public func waitForStop(timeout: Double? = nil) -> DebugStop? {
        let deadline = timeout.map { Clocks.monotonicNanoseconds() + UInt64($0 * 1e9) }
        return lock.withLock {
            while true {
                if ended || finished.count == vcpuCount { return .ended }
                // A vCPU released but not yet awake still has its entry in `parked`: not parked.
                let waiting = parked.keys.filter { plans[$0] == nil }
                let canKick = kick.withLock { $0 != nil }
                if holding && canKick && waiting.count + finished.subtracting(waiting).count >= vcpuCount {
                    if let first = firstStop { return .stopped(vcpu: first.vcpu, reason: first.reason) }
                    let vcpu = waiting.min() ?? 0
                    return .stopped(vcpu: vcpu, reason: parked[vcpu] ?? .requested)
                }
                if let deadline {
                    guard Clocks.monotonicNanoseconds() < deadline else { return nil }
                    lock.wait(until: deadline)
                } else {
                    lock.wait()
                }
            }
        }
    }

    /// Asks every running vCPU to park (gdb's Ctrl-C, the debugger's interrupt).
    public func requestStop() {
        let mustKick = lock.withLock { () -> Bool in
            guard !holding, !ended else { return false }
            holding = true
            holdFlag.store(true, ordering: .releasing)
            return true
        }
        if mustKick { kick.withLock { $0 }?() }
    }

    /// Releases the parked vCPUs named in `plans` (the others stay parked). Only valid while
    /// stopped.
    public func release(_ plans: [Int: ResumePlan]) {
        lock.withLock {
            firstStop = nil
            holding = false
            holdFlag.store(false, ordering: .releasing)
            for (vcpu, plan) in plans where parked[vcpu] != nil { self.plans[vcpu] = plan }
            lock.broadcast()
        }
    }

    /// The vCPUs currently parked, with why each parked.
    public var parkedReasons: [Int: StopReason] { lock.withLock { parked } }

    /// The vCPUs that have finished (halted, or the VM ended).
    public var finishedVCPUs: Set<Int> { lock.withLock { finished } }
}
