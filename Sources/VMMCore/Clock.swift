import Glibc

/// Monotonic time in nanoseconds. Devices take it as a parameter so tests can drive them with a
/// fake clock instead of sleeping.
public protocol MonotonicClock: Sendable {
    func nanoseconds() -> UInt64
}

/// Wall-clock time (UTC) as seconds and nanoseconds since the Unix epoch.
public protocol WallClock: Sendable {
    func now() -> (seconds: Int64, nanoseconds: Int64)
}

/// CLOCK_MONOTONIC.
public struct SystemMonotonicClock: MonotonicClock {
    public init() {}
    public func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// CLOCK_REALTIME.
public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> (seconds: Int64, nanoseconds: Int64) {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return (Int64(time.tv_sec), Int64(time.tv_nsec))
    }
}

/// A device with work to do at points in time (a timer interrupt, a periodic flag).
public protocol TimedDevice: AnyObject, Sendable {
    /// The monotonic time (ns) at which `fire` should next run, or nil for none.
    func nextDeadline() -> UInt64?
    /// Runs whatever was due at or before `now`.
    func fire(now: UInt64)
}

/// What a timed device calls when its deadlines changed (the guest reprogrammed it), so the
/// thread that serves deadlines wakes up and looks again.
public protocol TimerScheduler: Sendable {
    func reschedule()
}

/// A scheduler for devices nobody serves (unit tests that call `fire` themselves).
public struct ManualTimerScheduler: TimerScheduler {
    public init() {}
    public func reschedule() {}
}
