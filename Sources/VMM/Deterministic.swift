import Devices
import Host
import Glibc
import Synchronization
import VMMCore

/// Time in deterministic mode: it moves only at counted exits (a fixed step each) and jumps to
/// the next timer deadline when the guest halts, so every run of the same inputs sees the same
/// time at the same exit. Only the vCPU thread moves it; devices read it from any thread.
final class VirtualClock: MonotonicClock {
    private let now = Atomic<UInt64>(0)

    func nanoseconds() -> UInt64 { now.load(ordering: .acquiring) }

    func advance(by nanoseconds: UInt64) {
        let current = now.load(ordering: .relaxed)
        now.store(current.saturatingAdd(nanoseconds), ordering: .releasing)
    }

    /// Moves to `time` if it is later (time never goes back).
    func advance(to time: UInt64) {
        if time > now.load(ordering: .relaxed) { now.store(time, ordering: .releasing) }
    }
}

/// The RTC's wall clock in deterministic mode: the recorded start plus virtual time.
struct VirtualWallClock: WallClock {
    let startSeconds: Int64
    let startNanoseconds: Int64
    let clock: VirtualClock

    func now() -> (seconds: Int64, nanoseconds: Int64) {
        let elapsed = clock.nanoseconds()
        let total = UInt64(startNanoseconds) + elapsed % 1_000_000_000
        let (seconds, overflow) = startSeconds.addingReportingOverflow(Int64(elapsed / 1_000_000_000 + total / 1_000_000_000))
        return (overflow ? .max : seconds, Int64(total % 1_000_000_000))
    }
}

/// The timed devices of a deterministic machine, fired by the vCPU thread at exits (never by a
/// thread of their own, whose timing the host decides).
final class VirtualTimers: TimerHost, @unchecked Sendable {
    // @unchecked: `devices` is filled while the machine is built, before any vCPU runs.
    private var devices: [any TimedDevice] = []

    func add(_ device: any TimedDevice) { devices.append(device) }

    /// Deadlines are polled at every exit; nothing to wake.
    func reschedule() {}

    /// The earliest deadline of any device.
    func nextDeadline() -> UInt64? { devices.compactMap { $0.nextDeadline() }.min() }

    /// Moves `clock` to `time` (never back) and fires every device whose deadline, taken before
    /// the move, has been reached: a device may name a later deadline once its moment has
    /// passed (the RTC's "next second boundary"), which must not hide the one that was due.
    func advance(_ clock: VirtualClock, to time: UInt64) {
        let deadlines = devices.map { $0.nextDeadline() }
        clock.advance(to: time)
        let now = clock.nanoseconds()
        for (device, deadline) in zip(devices, deadlines) where (deadline ?? .max) <= now { device.fire(now: now) }
    }

    func removeAll() { devices = [] }
}

/// Input from outside a deterministic VM (console bytes, API requests), held until the vCPU
/// thread takes it at an exit, where the recorder logs it with the exit's number.
final class ExternalInputs: Sendable {
    static let capacity = ReplayLimits.consoleBuffer

    private struct State {
        var console: [UInt8] = []
        var consoleClosed = false
        var balloonTarget: UInt32?
        var balloonStatsInterval: UInt64?
    }
    private let state = Locked(State())
    private let waiting = ConditionLock()
    /// Set when anything is pending: the only cost of an exit without input is this load.
    private let pending = Atomic<Bool>(false)

    var hasPending: Bool { pending.load(ordering: .acquiring) }

    /// Console bytes from the pump; returns how many fit.
    func offerConsole(_ bytes: [UInt8]) -> Int {
        let taken = state.withLock { state in
            let room = max(0, Self.capacity - state.console.count)
            state.console += bytes.prefix(room)
            return min(room, bytes.count)
        }
        if taken > 0 { signal() }
        return taken
    }

    /// The console reached its end: no more input will come from it.
    func closeConsole() {
        state.withLock { $0.consoleClosed = true }
        signal()
    }

    var consoleClosed: Bool { state.withLock { $0.consoleClosed && $0.console.isEmpty } }

    func offerBalloonTarget(_ pages: UInt32) {
        state.withLock { $0.balloonTarget = pages }
        signal()
    }

    func offerBalloonStatsInterval(_ nanoseconds: UInt64) {
        state.withLock { $0.balloonStatsInterval = nanoseconds }
        signal()
    }

    /// Takes what is pending: console bytes (up to `consoleRoom`; the rest stays), the balloon
    /// target and the statistics interval.
    func take(consoleRoom: Int) -> (console: [UInt8], balloonTarget: UInt32?, statsInterval: UInt64?) {
        state.withLock { state in
            let count = min(max(consoleRoom, 0), state.console.count)
            let console = Array(state.console.prefix(count))
            state.console.removeFirst(count)
            defer { (state.balloonTarget, state.balloonStatsInterval) = (nil, nil) }
            pending.store(!state.console.isEmpty, ordering: .releasing)
            return (console, state.balloonTarget, state.balloonStatsInterval)
        }
    }

    /// Whether anything pending can be taken now: console bytes when the UART has `consoleRoom`,
    /// or an API request.
    func hasTakeable(consoleRoom: Int) -> Bool {
        state.withLock { ($0.console.count > 0 && consoleRoom > 0) || $0.balloonTarget != nil || $0.balloonStatsInterval != nil }
    }

    /// Waits until input is offered or `deadline` (CLOCK_MONOTONIC ns) passes; with input
    /// pending that cannot be taken yet (a full receive FIFO), until something new is offered.
    func wait(until deadline: UInt64, evenIfPending: Bool = false) {
        waiting.withLock {
            if evenIfPending || !hasPending { waiting.wait(until: deadline) }
        }
    }

    /// Wakes a waiting vCPU without input (a pause or stop request).
    func wake() { waiting.withLock { waiting.broadcast() } }

    private func signal() {
        waiting.withLock {
            pending.store(true, ordering: .releasing)
            waiting.broadcast()
        }
    }
}

/// Bounds of deterministic mode.
enum ReplayLimits {
    /// Console bytes held for the vCPU (the pump retries what does not fit).
    static let consoleBuffer = 4096
    /// The longest real-time slice a halted recording waits before looking at pause and stop.
    static let waitSliceNanoseconds: UInt64 = 20_000_000
}

/// What a deterministic machine has instead of KVM's irqchip and the host's clocks.
final class DeterministicPlatform: Sendable {
    let pic = PIC8259Pair()
    let clock = VirtualClock()
    let timers = VirtualTimers()
    let inputs = ExternalInputs()
    /// The exit being handled (the fault-tolerant output gate tags bytes with it).
    let exits = ExitCounter()
    let wallClock: VirtualWallClock
    let nanosecondsPerExit: UInt64

    init(rtcStart: (seconds: Int64, nanoseconds: Int64), nanosecondsPerExit: UInt64) {
        wallClock = VirtualWallClock(startSeconds: rtcStart.seconds, startNanoseconds: rtcStart.nanoseconds, clock: clock)
        self.nanosecondsPerExit = nanosecondsPerExit
    }
}
