import Synchronization
import VMMCore

/// What can be wrong with a virtqueue the guest set up. Any of these marks the device as needing
/// a reset; none of them is allowed to crash the VMM or reach outside guest RAM.
public enum VirtqueueError: Error, Equatable, CustomStringConvertible {
    case invalidSize(UInt16, max: UInt16)
    case ringOutsideRAM(String, address: UInt64, length: Int)
    case misaligned(String, address: UInt64)
    case availIndexJump(from: UInt16, to: UInt16, size: UInt16)
    case headOutOfRange(UInt16, size: UInt16)
    case nextOutOfRange(UInt16, size: UInt16)
    case chainTooLong(head: UInt16, limit: Int)
    case indirectNotNegotiated(head: UInt16)
    case bufferOutsideRAM(address: UInt64, length: UInt32)
    case notReady
    case guestMemory(GuestMemoryError)

    public var description: String {
        switch self {
        case .invalidSize(let size, let max): return "queue size \(size) is not a power of two up to \(max)"
        case .ringOutsideRAM(let what, let address, let length):
            return "\(what) at 0x\(String(address, radix: 16)) (+\(length)) is outside guest RAM"
        case .misaligned(let what, let address): return "\(what) at 0x\(String(address, radix: 16)) is misaligned"
        case .availIndexJump(let from, let to, let size): return "available index jumped from \(from) to \(to) (queue size \(size))"
        case .headOutOfRange(let head, let size): return "descriptor head \(head) is outside the table (size \(size))"
        case .nextOutOfRange(let next, let size): return "descriptor next \(next) is outside the table (size \(size))"
        case .chainTooLong(let head, let limit): return "descriptor chain from \(head) is longer than \(limit) (a loop?)"
        case .indirectNotNegotiated(let head): return "descriptor \(head) is indirect, which was not negotiated"
        case .bufferOutsideRAM(let address, let length): return "buffer 0x\(String(address, radix: 16)) (+\(length)) is outside guest RAM"
        case .notReady: return "the queue is not ready"
        case .guestMemory(let error): return error.description
        }
    }
}

/// One guest buffer of a descriptor chain, checked to lie in guest RAM.
public struct VirtqueueBuffer: Sendable, Equatable {
    public let address: UInt64
    public let length: UInt32
    /// Device-writable (VIRTQ_DESC_F_WRITE); otherwise device-readable.
    public let writable: Bool
}

/// A descriptor chain taken from the available ring.
public struct DescriptorChain: Sendable, Equatable {
    public let head: UInt16
    public let buffers: [VirtqueueBuffer]

    public var readable: [VirtqueueBuffer] { buffers.filter { !$0.writable } }
    public var writable: [VirtqueueBuffer] { buffers.filter(\.writable) }
}

/// A split virtqueue (virtio 1.x, section 2.7) as the device side sees it. Every value the guest
/// controls (ring addresses, indexes, descriptor addresses, lengths, links) is validated.
public struct SplitQueue: Sendable {
    static let descriptorSize = 16
    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4

    public let maxSize: UInt16
    public var size: UInt16
    public var ready = false
    public var descriptorTable: UInt64 = 0
    public var driverArea: UInt64 = 0
    public var deviceArea: UInt64 = 0
    /// Next available-ring slot to take, and the used-ring index to publish next.
    public private(set) var lastAvailIndex: UInt16 = 0
    public private(set) var usedIndex: UInt16 = 0

    public init(maxSize: UInt16) {
        self.maxSize = maxSize
        self.size = maxSize
    }

    /// The queue's registers and ring positions, for a snapshot.
    public func save(into out: inout StateWriter) {
        out.u16(size)
        out.bool(ready)
        out.u64(descriptorTable)
        out.u64(driverArea)
        out.u64(deviceArea)
        out.u16(lastAvailIndex)
        out.u16(usedIndex)
    }

    /// Puts saved registers and ring positions back; a ready queue must validate against `memory`
    /// as it did when the driver set it ready.
    public mutating func restore(from input: inout StateReader, memory: GuestMemory) throws(StateError) {
        var queue = SplitQueue(maxSize: maxSize)
        queue.size = try input.u16("queue size")
        queue.ready = try input.bool("queue ready")
        queue.descriptorTable = try input.u64("descriptor table")
        queue.driverArea = try input.u64("driver area")
        queue.deviceArea = try input.u64("device area")
        queue.lastAvailIndex = try input.u16("last available index")
        queue.usedIndex = try input.u16("used index")
        if queue.ready {
            do { try queue.validate(memory: memory) } catch { throw .invalid("virtqueue: \(error)") }
        }
        self = queue
    }

    /// Back to the reset state (addresses zero, not ready).
    public mutating func reset() {
        self = SplitQueue(maxSize: maxSize)
    }

    /// Checks size, alignment and that the three areas lie in guest RAM (when the driver sets
    /// QueueReady).
    public func validate(memory: GuestMemory) throws(VirtqueueError) {
        guard size > 0, size <= maxSize, size & (size - 1) == 0 else { throw .invalidSize(size, max: maxSize) }
        let n = Int(size)
        for (name, address, length, alignment) in [("descriptor table", descriptorTable, 16 * n, UInt64(16)),
                                                   ("available ring", driverArea, 6 + 2 * n, UInt64(2)),
                                                   ("used ring", deviceArea, 6 + 8 * n, UInt64(4))] {
            guard address % alignment == 0 else { throw .misaligned(name, address: address) }
            guard memory.contains(address, length: length) else { throw .ringOutsideRAM(name, address: address, length: length) }
        }
    }

    /// Ring arithmetic divides by the size, which the driver may rewrite whenever the queue is not
    /// ready: every ring access checks both first.
    private func requireUsable() throws(VirtqueueError) {
        guard ready else { throw .notReady }
        guard size > 0, size <= maxSize, size & (size - 1) == 0 else { throw .invalidSize(size, max: maxSize) }
    }

    /// Takes the next chain the driver made available, or nil when there is none.
    public mutating func popChain(memory: GuestMemory, indirectAllowed: Bool = false) throws(VirtqueueError) -> DescriptorChain? {
        try requireUsable()
        let availIndex: UInt16 = try load(memory, driverArea + 2)
        let pending = availIndex &- lastAvailIndex
        guard pending != 0 else { return nil }
        guard pending <= size else { throw .availIndexJump(from: lastAvailIndex, to: availIndex, size: size) }
        atomicMemoryFence(ordering: .acquiring) // read ring entries only after the index that published them
        let slot = UInt64(lastAvailIndex % size)
        let head: UInt16 = try load(memory, driverArea + 4 + 2 * slot)
        guard head < size else { throw .headOutOfRange(head, size: size) }
        var buffers: [VirtqueueBuffer] = []
        var index = head
        while true {
            guard buffers.count < Int(size) else { throw .chainTooLong(head: head, limit: Int(size)) }
            let entry = descriptorTable + UInt64(index) * UInt64(Self.descriptorSize)
            let address: UInt64 = try load(memory, entry)
            let length: UInt32 = try load(memory, entry + 8)
            let flags: UInt16 = try load(memory, entry + 12)
            let next: UInt16 = try load(memory, entry + 14)
            if flags & Self.flagIndirect != 0 && !indirectAllowed { throw .indirectNotNegotiated(head: head) }
            guard length == 0 || memory.contains(address, length: Int(length)) else {
                throw .bufferOutsideRAM(address: address, length: length)
            }
            buffers.append(VirtqueueBuffer(address: address, length: length, writable: flags & Self.flagWrite != 0))
            guard flags & Self.flagNext != 0 else { break }
            guard next < size else { throw .nextOutOfRange(next, size: size) }
            index = next
        }
        lastAvailIndex &+= 1
        return DescriptorChain(head: head, buffers: buffers)
    }

    /// Sets or clears VIRTQ_USED_F_NO_NOTIFY in the used ring's flags: while set, the driver need
    /// not notify (the device will look at the ring again by itself). Clearing is followed by a
    /// full fence, so the device's next look at the available ring comes after the driver can see
    /// the flag gone (no entry is left unnoticed between the two).
    public func suppressNotifications(_ suppress: Bool, memory: GuestMemory) throws(VirtqueueError) {
        try requireUsable()
        try store(memory, UInt16(suppress ? 1 : 0), deviceArea)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Returns a chain to the driver through the used ring with `written` bytes filled in.
    public mutating func pushUsed(head: UInt16, written: UInt32, memory: GuestMemory) throws(VirtqueueError) {
        try requireUsable()
        let slot = UInt64(usedIndex % size)
        try store(memory, UInt32(head), deviceArea + 4 + 8 * slot)
        try store(memory, written, deviceArea + 8 + 8 * slot)
        usedIndex &+= 1
        atomicMemoryFence(ordering: .releasing) // the entry before the index that publishes it
        try store(memory, usedIndex, deviceArea + 2)
    }

    private func load<T: FixedWidthInteger>(_ memory: GuestMemory, _ address: UInt64) throws(VirtqueueError) -> T {
        do { return try memory.load(T.self, at: address) } catch { throw .guestMemory(error) }
    }

    private func store<T: FixedWidthInteger>(_ memory: GuestMemory, _ value: T, _ address: UInt64) throws(VirtqueueError) {
        do { try memory.store(value, at: address) } catch { throw .guestMemory(error) }
    }
}
