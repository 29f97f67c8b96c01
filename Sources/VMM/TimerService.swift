import Host
import Glibc
import KVM
import VMMCore

/// One host thread that serves every timed device: it sleeps until the earliest deadline (absolute
/// CLOCK_MONOTONIC, so late wake-ups never accumulate into drift), fires what is due, and wakes
/// early when a device is reprogrammed.
final class TimerService: TimerHost, @unchecked Sendable {
    // @unchecked: `devices` is set before start(); `generation` and `stopping` are guarded by `lock`.
    private var devices: [any TimedDevice] = []
    private let clock = SystemMonotonicClock()
    private let lock = ConditionLock()
    private var generation: UInt64 = 0
    private var stopping = false
    private var thread: HostThreadHandle?

    /// Adds a device; only before `start()`. A stopped service serves nothing again.
    func add(_ device: any TimedDevice) {
        devices.append(device)
    }

    func start() throws(VMMError) {
        guard !devices.isEmpty else { return }
        thread = try VMMError.host { () throws(HostError) in try HostThreadHandle.spawn(.timer, name: "timers") { [self] in self.serve() } }
    }

    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
        // Devices hold this service as their scheduler; dropping them breaks that cycle, so a
        // finished machine's devices (and the KVM VM their interrupt lines hold) can be freed.
        devices = []
    }

    func reschedule() {
        lock.withLock {
            generation &+= 1
            lock.broadcast()
        }
    }

    private func serve() {
        lock.lock()
        while !stopping {
            let seen = generation
            lock.unlock()
            // Deadlines are taken once per round and kept: a device may report a later one once its
            // moment has passed (the RTC's "next second boundary"), which must not hide the one due.
            let deadlines = devices.map { $0.nextDeadline() }
            let earliest = deadlines.compactMap { $0 }.min()
            if let earliest, earliest <= clock.nanoseconds() {
                let now = clock.nanoseconds()
                for (device, deadline) in zip(devices, deadlines) where (deadline ?? .max) <= now {
                    device.fire(now: now)
                }
                lock.lock()
                continue
            }
            lock.lock()
            // A reschedule between reading the deadlines and here means: look again.
            if generation == seen && !stopping {
                lock.wait(until: earliest)
                if let earliest, !stopping, generation == seen {
                    lock.unlock()
                    let now = clock.nanoseconds()
                    if earliest <= now {
                        for (device, deadline) in zip(devices, deadlines) where (deadline ?? .max) <= now {
                            device.fire(now: now)
                        }
                    }
                    lock.lock()
                }
            }
        }
        lock.unlock()
    }
}

/// Where devices with deadlines are registered: the timer thread, or deterministic mode's
/// timers that the vCPU fires at exits.
protocol TimerHost: TimerScheduler {
    func add(_ device: any TimedDevice)
}
