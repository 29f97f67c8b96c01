import Glibc
import VMMCore

/// The host clocks the VMM reads outside its devices (devices take a `MonotonicClock`).
public enum Clocks {
    /// CLOCK_MONOTONIC in nanoseconds (the clock devices are given, read the same way).
    public static func monotonicNanoseconds() -> UInt64 { SystemMonotonicClock().nanoseconds() }

    /// CLOCK_MONOTONIC in seconds.
    public static func monotonicSeconds() -> Double { Double(monotonicNanoseconds()) / 1e9 }

    /// CLOCK_MONOTONIC_COARSE's whole seconds: cheap enough for every exit (rate limits).
    public static func coarseSeconds() -> Int {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &time)
        return Int(time.tv_sec)
    }

    /// CPU time of the calling thread, nanoseconds.
    public static func threadCPUNanoseconds() -> UInt64 { nanoseconds(CLOCK_THREAD_CPUTIME_ID) }

    /// `clock` in nanoseconds (0 when it cannot be read).
    static func nanoseconds(_ clock: clockid_t) -> UInt64 {
        var time = timespec()
        guard clock_gettime(clock, &time) == 0 else { return 0 }
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}
