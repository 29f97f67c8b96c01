import CHost
import Devices
import Glibc
import Host
import Logging
import VMMCore

/// `--net tap=NAME[,mac=MAC][,id=NAME]`: a virtio-net interface on a host tap device.
public struct NetConfig: Sendable, Equatable {
    public var tap: String
    /// nil: 02:53:56:4d:00:NN, NN the interface's index (locally administered).
    public var mac: [UInt8]?
    /// The interface's name (Firecracker's iface_id); nil: "net" and its index.
    public var id: String?

    public init(tap: String, mac: [UInt8]? = nil, id: String? = nil) { (self.tap, self.mac, self.id) = (tap, mac, id) }

    /// `tap=NAME` first or anywhere, `mac=aa:bb:cc:dd:ee:ff`, `id=NAME`.
    public init?(parsing text: String) {
        var tap: String?, mac: [UInt8]?, id: String?
        for part in text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            if part.hasPrefix("tap=") {
                tap = String(part.dropFirst(4))
            } else if part.hasPrefix("mac=") {
                guard let parsed = Self.parseMAC(String(part.dropFirst(4))) else { return nil }
                mac = parsed
            } else if part.hasPrefix("id=") {
                id = String(part.dropFirst(3))
            } else {
                return nil
            }
        }
        guard let tap, Self.validTapName(tap), id.map(DiskConfig.validID) ?? true else { return nil }
        (self.tap, self.mac, self.id) = (tap, mac, id)
    }

    /// Six hex pairs separated by colons, unicast (the group bit clear).
    public static func parseMAC(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        guard bytes.count == 6, bytes[0] & 1 == 0 else { return nil }
        return bytes
    }

    /// Linux interface names: 1 to 15 bytes, no `/`, whitespace or `:`.
    public static func validTapName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count < 16 && name != "." && name != ".."
            && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: ":") }
    }

    public static func macText(_ mac: [UInt8]) -> String {
        mac.map { let digits = String($0, radix: 16); return digits.count == 1 ? "0" + digits : digits }.joined(separator: ":")
    }
}

/// A virtio-net interface of the machine: the device, its tap and the I/O thread between them.
/// Releasing it stops the thread and closes the tap (a tap swiftvmm created goes away with it).
final class NetworkInterface: Sendable {
    let id: String
    let tap: String
    let created: Bool
    let device: VirtioMMIODevice<MachineInterruptLine, NetModel>
    private let worker: NetWorker

    init(id: String, tap: String, mac: [UInt8], memory: GuestMemory, line: MachineInterruptLine, clock: any MonotonicClock,
         timers: TimerService, logger: Logger) throws(VMMError) {
        (self.id, self.tap) = (id, tap)
        var info = stat()
        let existed = stat("/sys/class/net/\(tap)", &info) == 0
        let fd = chost_tap_open(tap)
        guard fd >= 0 else {
            throw .host(.invalid("tap \(tap): \(String(cString: strerror(errno))) (creating a tap needs CAP_NET_ADMIN)"))
        }
        created = !existed
        if created, chost_link_set_up(tap) != 0 {
            logger.warning("tap \(tap): could not bring it up: \(String(cString: strerror(errno)))")
        }
        let wake = WakeEvent()
        let model = NetModel(mac: mac, wake: { wake.signal() })
        device = VirtioMMIODevice(model: model, memory: memory, interrupt: line, clock: clock, scheduler: timers,
                                  onError: { logger.warning("virtio-net \(id): \($0); the device needs a reset") })
        worker = NetWorker(fd: fd, wake: wake, device: device, tap: tap, logger: logger)
        try VMMError.host { () throws(HostError) in try worker.start(name: "net-\(id)") }
        logger.info("virtio-net \(id): tap \(tap) (\(created ? "created" : "existing")), MAC \(NetConfig.macText(mac))")
    }

    deinit { worker.stop() }

    /// Waits until the worker has written what the guest sent (the vCPUs are paused).
    func drain() { worker.drain() }

    /// After a restore or a migration: the guest announces itself, or the VMM sends its
    /// gratuitous ARP.
    func announce() {
        if let frame = device.withModel({ model, context in model.announce(context: &context) }) { worker.send([frame]) }
    }

    /// One line for `--stats`.
    func report() -> String {
        let c = device.withModel { model, _ in model.counters }
        return "net \(id): tap \(tap), tx \(c.txFrames) frames (\(c.txBytes) bytes, \(c.txDropped) dropped), rx \(c.rxFrames) frames "
            + "(\(c.rxBytes) bytes, \(c.rxDropped) dropped), \(c.announcements) announcements, \(c.gratuitousARPs) gratuitous ARPs; "
            + "\(device.queueErrors) queue errors"
    }
}

extension NetworkInterface: SnapshotDevice {
    func saveState(now: UInt64) -> [UInt8] {
        drain()
        return device.saveState(now: now)
    }

    func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        try device.restoreState(bytes, now: now)
        announce()
    }
}

/// An eventfd the device signals (under its lock: a non-blocking write) to wake the worker.
final class WakeEvent: Sendable {
    let fd: Int32 = chost_wake_event()
    func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) } // Safe: 8 bytes of a local.
    }
    func clear() {
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) } // Safe: into 8 bytes of a local.
    }
    deinit { close(fd) }
}

/// The thread between one interface's tap and its device: writes what the guest sent, reads
/// frames and hands them to the guest (holding one while the guest has no receive buffer, and
/// then not reading the tap, so the host's queue is the buffer), and notices a tap that went away.
final class NetWorker: @unchecked Sendable {
    // @unchecked: `busy` and `stopping` are touched with `lock` held; the rest is the thread's own.
    private let fd: Int32
    private let wake: WakeEvent
    private let device: VirtioMMIODevice<MachineInterruptLine, NetModel>
    private let tap: String
    private let logger: Logger
    private let lock = ConditionLock()
    private var stopping = false
    private var busy = false
    private var thread: HostThreadHandle?
    /// Frames a single wake-up reads from the tap at most, so the device lock is not hogged.
    static let readBatch = 64

    init(fd: Int32, wake: WakeEvent, device: VirtioMMIODevice<MachineInterruptLine, NetModel>, tap: String, logger: Logger) {
        (self.fd, self.wake, self.device, self.tap, self.logger) = (fd, wake, device, tap, logger)
    }

    func start(name: String) throws(HostError) {
        let handle = try HostThreadHandle.spawn(.net, name: name) { [self] in serve() }
        lock.withLock { thread = handle }
    }

    func stop() {
        let handle = lock.withLock { () -> HostThreadHandle? in
            stopping = true
            defer { thread = nil }
            return thread
        }
        wake.signal()
        handle?.join()
        close(fd)
    }

    /// Waits until what the guest sent has been written (the vCPUs are paused, so nothing new
    /// comes): the worker is woken and passes until the outbox is empty.
    func drain() {
        wake.signal()
        lock.withLock {
            while !stopping && (busy || device.withModel({ model, _ in model.hasOutbox })) {
                lock.wait(until: Clocks.monotonicNanoseconds() + 10_000_000)
            }
        }
    }

    /// Writes frames to the tap; what it cannot take now is dropped and counted.
    func send(_ frames: [[UInt8]]) {
        var unsent = 0
        for frame in frames {
            let written = frame.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } // Safe: the frame's own bytes.
            if written != frame.count { unsent += 1 }
        }
        if unsent > 0 { device.withModel { model, _ in model.countUnsent(unsent) } }
    }

    private func serve() {
        var held: [UInt8]?
        var tapLost = false
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !lock.withLock({ stopping }) {
            // A lost tap is left out of the poll (-1): it would report POLLHUP at once, forever.
            var fds = [pollfd(fd: wake.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: tapLost ? -1 : fd, events: held == nil ? Int16(POLLIN) : 0, revents: 0)]
            let ready = poll(&fds, 2, -1)
            if ready < 0 && errno != EINTR { break }
            lock.withLock { busy = true }
            if fds[0].revents & Int16(POLLIN) != 0 { wake.clear() }
            send(device.withModel { model, _ in model.takeOutbox() })
            if let frame = held, deliver(frame) { held = nil }
            if !tapLost, fds[1].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                tapLost = true
            } else if held == nil, !tapLost, fds[1].revents & Int16(POLLIN) != 0 {
                for _ in 0..<Self.readBatch {
                    let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } // Safe: into our buffer.
                    if count < 0 && (errno == EAGAIN || errno == EINTR) { break }
                    guard count > 0 else {
                        tapLost = true
                        break
                    }
                    let frame = Array(buffer[0..<count])
                    if !deliver(frame) {
                        held = frame
                        break
                    }
                }
            }
            if tapLost { lostTap() }
            lock.withLock {
                busy = false
                lock.broadcast()
            }
        }
    }

    private var reportedLoss = false

    /// The tap went away (deleted, or its device failed): the guest sees its link go down, the
    /// VM runs on, and what it sends is dropped and counted.
    private func lostTap() {
        guard !reportedLoss else { return }
        reportedLoss = true
        logger.warning("virtio-net: tap \(tap) went away; the link is down, frames the guest sends are dropped")
        device.withModel { model, context in model.setLink(up: false, context: &context) }
    }

    private func deliver(_ frame: [UInt8]) -> Bool {
        var delivered = true
        device.withQueues("receiving") { model, context throws(VirtqueueError) in delivered = try model.deliver(frame, context: &context) }
        return delivered
    }
}
