import VMMCore

/// virtio-net feature bits (virtio 1.x, section 5.1.3).
public enum NetFeature {
    public static let mac: UInt64 = 1 << 5
    public static let status: UInt64 = 1 << 16
    public static let controlQueue: UInt64 = 1 << 17
    public static let guestAnnounce: UInt64 = 1 << 21
}

/// What the network device did, for `--stats` and tests.
public struct NetCounters: Sendable, Equatable {
    /// Frames the guest sent that reached the outbox, and their bytes.
    public var txFrames: UInt64 = 0, txBytes: UInt64 = 0
    /// Frames the guest sent that were dropped: shorter than an Ethernet header or longer than
    /// the largest frame, a full outbox, or a host that did not take them.
    public var txDropped: UInt64 = 0
    /// Frames the host sent that reached the guest, and their bytes.
    public var rxFrames: UInt64 = 0, rxBytes: UInt64 = 0
    /// Frames from the host dropped: larger than the largest frame or than the guest's buffer.
    public var rxDropped: UInt64 = 0
    /// Announcements asked of the guest, gratuitous ARPs sent for it, control commands.
    public var announcements: UInt64 = 0, gratuitousARPs: UInt64 = 0, controlCommands: UInt64 = 0

    public init() {}

    static var paths: [WritableKeyPath<NetCounters, UInt64>] {
        [\.txFrames, \.txBytes, \.txDropped, \.rxFrames, \.rxBytes, \.rxDropped, \.announcements, \.gratuitousARPs, \.controlCommands]
    }
}

/// virtio-net (device type 1) over virtio-mmio: receive queue 0, transmit queue 1, control
/// queue 2; a MAC address, link status and guest announcements (after a migration or restore).
/// The model moves frames between the rings and two host-side lists (the outbox the I/O worker
/// writes to the tap, `deliver` for what it read); it does no I/O itself.
public struct NetModel: VirtioModel {
    public static var deviceType: UInt32 { 1 }
    static let receiveQueue = 0, transmitQueue = 1, controlQueue = 2
    /// struct virtio_net_hdr with num_buffers (VERSION_1): 12 bytes before every frame.
    public static let headerSize = 12
    /// The largest frame either way: Ethernet's 1514 bytes plus an 802.1Q tag.
    public static let maximumFrame = 1518
    public static let minimumFrame = 14
    /// Frames the guest sent that the worker has not written yet; more are dropped and counted.
    public static let outboxLimit = 256

    public let mac: [UInt8]
    public private(set) var linkUp = true
    public private(set) var counters = NetCounters()
    /// The guest's IPv4 address, as its own frames show it (ARP sender, IPv4 source): whom a
    /// gratuitous ARP announces when the guest cannot announce itself.
    public private(set) var learnedIPv4: [UInt8]?
    private var announcePending = false
    private var outbox: [[UInt8]] = []
    /// Called (under the device lock: it must not block) when frames wait in the outbox or the
    /// driver gave receive buffers.
    private let wake: @Sendable () -> Void

    public init(mac: [UInt8], wake: @escaping @Sendable () -> Void) {
        self.mac = Array((mac + [UInt8](repeating: 0, count: 6)).prefix(6))
        self.wake = wake
    }

    public var offeredFeatures: UInt64 { NetFeature.mac | NetFeature.status | NetFeature.controlQueue | NetFeature.guestAnnounce }
    public var queueMaxSizes: [UInt16] { [256, 256, 64] }

    // MARK: config space: u8 mac[6], u16 status

    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        let status = UInt16(linkUp ? 1 : 0) | (announcePending ? 2 : 0)
        let bytes = mac + LittleEndian.bytes(status)
        guard offset < UInt64(bytes.count), [1, 2, 4, 8].contains(size) else { return 0 }
        return LittleEndian.load(bytes, at: Int(offset), size: size)
    }

    /// The MAC is the device's (VIRTIO_NET_F_MAC): a driver's writes are ignored.
    public mutating func writeConfig(offset: UInt64, size: Int, value: UInt64, context: inout VirtioContext) {}

    public mutating func reset() {
        outbox = []
        announcePending = false
    }

    public func nextDeadline() -> UInt64? { nil }
    public mutating func timerFired(now: UInt64, context: inout VirtioContext) throws(VirtqueueError) {}

    // MARK: queues

    public mutating func queueNotified(_ index: Int, context: inout VirtioContext) throws(VirtqueueError) {
        switch index {
        case Self.transmitQueue: try transmit(&context)
        case Self.controlQueue: try control(&context)
        default: wake() // receive buffers: a held frame may fit now
        }
    }

    private mutating func transmit(_ context: inout VirtioContext) throws(VirtqueueError) {
        var used = false, queued = false
        while let chain = try context.queues[Self.transmitQueue].popChain(memory: context.memory) {
            let data = ScatterList(chain.readable)
            let length = data.count
            if length >= UInt64(Self.headerSize + Self.minimumFrame), length <= UInt64(Self.headerSize + Self.maximumFrame),
               outbox.count < Self.outboxLimit, let bytes = try? data.read(Int(length), memory: context.memory) {
                let frame = Array(bytes.dropFirst(Self.headerSize))
                learn(from: frame)
                outbox.append(frame)
                counters.txFrames &+= 1
                counters.txBytes &+= UInt64(frame.count)
                queued = true
            } else {
                counters.txDropped &+= 1
            }
            try context.queues[Self.transmitQueue].pushUsed(head: chain.head, written: 0, memory: context.memory)
            used = true
        }
        if used { context.signalUsed() }
        if queued { wake() }
    }

    /// Control commands: u8 class, u8 command, data, then the device-writable ack byte. Only
    /// VIRTIO_NET_CTRL_ANNOUNCE_ACK (class 3, command 0) is known; anything else gets ERR.
    private mutating func control(_ context: inout VirtioContext) throws(VirtqueueError) {
        guard context.negotiatedFeatures & NetFeature.controlQueue != 0 else { return }
        var used = false
        while let chain = try context.queues[Self.controlQueue].popChain(memory: context.memory) {
            counters.controlCommands &+= 1
            let command = (try? ScatterList(chain.readable).read(2, memory: context.memory)) ?? []
            let writable = ScatterList(chain.writable)
            var written: UInt32 = 0
            if let ack = writable.segments.last {
                var status: UInt8 = 1 // VIRTIO_NET_ERR
                if command == [3, 0] {
                    announcePending = false
                    status = 0
                }
                if (try? context.memory.store(status, at: ack.address + UInt64(ack.length) - 1)) != nil { written = 1 }
            }
            try context.queues[Self.controlQueue].pushUsed(head: chain.head, written: written, memory: context.memory)
            used = true
        }
        if used { context.signalUsed() }
    }

    /// Whether frames wait for the worker.
    public var hasOutbox: Bool { !outbox.isEmpty }

    /// The frames the guest sent since the last call, for the worker to write.
    public mutating func takeOutbox() -> [[UInt8]] {
        let frames = outbox
        outbox = []
        return frames
    }

    /// Counts frames the host did not take (the tap was full or gone).
    public mutating func countUnsent(_ frames: Int) { counters.txDropped &+= UInt64(frames) }

    /// Hands a frame from the host to the guest. False when the driver has no receive buffer
    /// (the worker holds the frame and tries again when the driver notifies); true when it was
    /// delivered or dropped.
    public mutating func deliver(_ frame: [UInt8], context: inout VirtioContext) throws(VirtqueueError) -> Bool {
        guard frame.count <= Self.maximumFrame else {
            counters.rxDropped &+= 1
            return true
        }
        guard context.driverReady, context.queues[Self.receiveQueue].ready,
              let chain = try context.queues[Self.receiveQueue].popChain(memory: context.memory) else { return false }
        let buffers = ScatterList(chain.writable)
        var written: UInt32 = 0
        if buffers.count >= UInt64(Self.headerSize + frame.count) {
            var header = [UInt8](repeating: 0, count: Self.headerSize)
            header[10] = 1 // num_buffers
            if (try? buffers.write(header + frame, memory: context.memory)) != nil {
                written = UInt32(Self.headerSize + frame.count)
                counters.rxFrames &+= 1
                counters.rxBytes &+= UInt64(frame.count)
            } else {
                counters.rxDropped &+= 1
            }
        } else {
            counters.rxDropped &+= 1
        }
        try context.queues[Self.receiveQueue].pushUsed(head: chain.head, written: written, memory: context.memory)
        context.signalUsed()
        return true
    }

    /// Sets the link state the guest reads (a tap that went away is a link down).
    public mutating func setLink(up: Bool, context: inout VirtioContext) {
        guard up != linkUp else { return }
        linkUp = up
        context.signalConfigChange()
    }

    /// After a migration or restore: asks a guest that negotiated GUEST_ANNOUNCE to announce
    /// itself (returns nil); for one that did not, returns the gratuitous ARP the VMM should send
    /// for it (nil when its address is unknown).
    public mutating func announce(context: inout VirtioContext) -> [UInt8]? {
        if context.driverReady, context.negotiatedFeatures & NetFeature.guestAnnounce != 0 {
            announcePending = true
            counters.announcements &+= 1
            context.signalConfigChange()
            return nil
        }
        guard let ip = learnedIPv4 else { return nil }
        counters.gratuitousARPs &+= 1
        return Self.gratuitousARP(mac: mac, ip: ip)
    }

    /// An ARP request with sender and target address both `ip`, broadcast: how a host tells its
    /// neighbours and switches where it is now.
    public static func gratuitousARP(mac: [UInt8], ip: [UInt8]) -> [UInt8] {
        let broadcast = [UInt8](repeating: 0xFF, count: 6)
        return broadcast + mac + [0x08, 0x06] // Ethernet: to everyone, from the guest, ARP
            + [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01] // Ethernet/IPv4, request
            + mac + ip + [UInt8](repeating: 0, count: 6) + ip
    }

    /// Learns the guest's IPv4 address from an ARP packet's sender or an IPv4 source address.
    private mutating func learn(from frame: [UInt8]) {
        guard frame.count >= 14, Array(frame[6..<12]) == mac else { return }
        let type = UInt16(frame[12]) << 8 | UInt16(frame[13])
        if type == 0x0806, frame.count >= 42 {
            let sender = Array(frame[28..<32])
            if sender != [0, 0, 0, 0] { learnedIPv4 = sender }
        } else if type == 0x0800, frame.count >= 34, frame[14] >> 4 == 4 {
            let source = Array(frame[26..<30])
            if source != [0, 0, 0, 0] { learnedIPv4 = source }
        }
    }
}

extension NetModel: VirtioModelState {
    public func save(into out: inout StateWriter, now: UInt64) {
        out.raw(mac)
        out.bool(linkUp)
        out.bool(announcePending)
        out.bool(learnedIPv4 != nil)
        out.raw(learnedIPv4 ?? [0, 0, 0, 0])
        for path in NetCounters.paths { out.u64(counters[keyPath: path]) }
    }

    /// The MAC is the configuration's (the snapshot's configuration section carries it); it must
    /// match. Frames in flight are not part of a snapshot: a network loses them as it may.
    public mutating func restore(from input: inout StateReader, now: UInt64) throws(StateError) {
        let saved = try input.raw("MAC", count: 6)
        guard saved == mac else { throw .invalid("virtio-net: the snapshot's MAC differs from this interface's") }
        let linkUp = try input.bool("link up")
        let announcePending = try input.bool("announce pending")
        let hasIP = try input.bool("learned address present")
        let ip = try input.raw("learned address", count: 4)
        var counters = NetCounters()
        for path in NetCounters.paths { counters[keyPath: path] = min(try input.u64("counter"), counterLimit) }
        (self.linkUp, self.announcePending, learnedIPv4, self.counters) = (linkUp, announcePending, hasIP ? ip : nil, counters)
        outbox = []
    }
}
