import Synchronization
import VMMCore

/// A fuzz input read front to back. Reads past the end give zeros, so every byte string is a
/// complete program and the interpreters never need a length check of their own.
public struct FuzzInput {
    private let bytes: [UInt8]
    private var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { position >= bytes.count }

    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    /// The next `size` bytes (at most 8) as a little-endian number.
    public mutating func little(_ size: Int) -> UInt64 {
        var value: UInt64 = 0
        for shift in 0..<min(size, 8) { value |= UInt64(byte()) << (8 * UInt64(shift)) }
        return value
    }

    /// Up to `count` of the remaining bytes.
    public mutating func take(_ count: Int) -> ArraySlice<UInt8> {
        let end = min(bytes.count, position + min(count, bytes.count))
        defer { position = max(position, end) }
        return position < end ? bytes[position..<end] : []
    }
}

/// The clock the device targets run on: time moves only when the program says so, so a crash
/// input replays exactly.
final class FuzzClock: MonotonicClock, WallClock {
    private let time = Locked<UInt64>(1_000_000_000)
    func nanoseconds() -> UInt64 { time.withLock { $0 } }
    func now() -> (seconds: Int64, nanoseconds: Int64) {
        let t = nanoseconds()
        return (1_700_000_000 + Int64(t / 1_000_000_000), Int64(t % 1_000_000_000))
    }
    func advance(_ nanoseconds: UInt64) { time.withLock { $0 = $0.saturatingAdd(nanoseconds) } }
}

/// An interrupt line that only remembers its level.
final class FuzzLine: InterruptLine {
    private let level = Locked(false)
    func setLevel(_ high: Bool) { level.withLock { $0 = high } }
}

/// The operations of a device program. Each starts with one byte: the low two bits pick the kind,
/// bits 2-3 the access width (1, 2, 4 or 8 bytes), bits 4-7 a parameter.
/// - write: a 16-bit offset into the device's window, then `width` bytes of value;
/// - read: a 16-bit offset;
/// - time: a 32-bit delay in nanoseconds shifted left by the parameter; due timers fire, and with
///   parameter bit 0 set a second firing uses the time before the delay (the timer thread may
///   act on an older clock reading than a vCPU's);
/// - host: the device's own host-side action number `parameter`, with operands it reads itself.
public enum DeviceOperation: UInt8 {
    case write = 0, read = 1, time = 2, host = 3
    static let widths = [1, 2, 4, 8]
}

/// Runs a device program against `bus`, with the window `base..<base+span` as the target of
/// reads and writes (offsets wrap inside the window plus 4 bytes past it, which the bus refuses).
struct DeviceProgram {
    let bus: Bus
    let base: UInt64
    let span: UInt64
    let clock: FuzzClock
    var timed: [any TimedDevice] = []
    var host: (_ action: UInt8, _ input: inout FuzzInput) -> Void = { _, _ in }

    /// Interpreting stops after this many operations, so an input's cost stays proportional to
    /// its length even when every operation is a tiny one.
    static let maximumOperations = 4096

    func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        var operations = 0
        while !input.isAtEnd && operations < Self.maximumOperations {
            operations += 1
            let op = input.byte()
            let width = DeviceOperation.widths[Int(op >> 2) & 3]
            let parameter = op >> 4
            switch DeviceOperation(rawValue: op & 3)! {
            case .write:
                let address = base + input.little(2) % (span + 4)
                _ = bus.write(address, size: width, value: input.little(width))
            case .read:
                _ = bus.read(base + input.little(2) % (span + 4), size: width)
            case .time:
                let before = clock.nanoseconds()
                clock.advance(input.little(4) << UInt64(parameter))
                fireDue(now: clock.nanoseconds())
                if parameter & 1 != 0 { fireDue(now: before) }
            case .host:
                host(parameter, &input)
            }
        }
    }

    private func fireDue(now: UInt64) {
        for device in timed {
            if let deadline = device.nextDeadline(), deadline <= clock.nanoseconds() { device.fire(now: now) }
        }
    }
}

/// Builds device programs (the seed corpora and the tests write them this way).
public struct DeviceProgramWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    private static func widthBits(_ width: Int) -> UInt8 {
        UInt8(DeviceOperation.widths.firstIndex(of: width) ?? 0) << 2
    }
    private mutating func little(_ value: UInt64, _ size: Int) {
        for shift in 0..<size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(shift)))) }
    }

    public mutating func write(_ offset: UInt64, _ value: UInt64, width: Int = 1) {
        bytes.append(DeviceOperation.write.rawValue | Self.widthBits(width))
        little(offset, 2)
        little(value, width)
    }
    public mutating func read(_ offset: UInt64, width: Int = 1) {
        bytes.append(DeviceOperation.read.rawValue | Self.widthBits(width))
        little(offset, 2)
    }
    public mutating func wait(_ nanoseconds: UInt32, shift: UInt8 = 0) {
        bytes.append(DeviceOperation.time.rawValue | shift << 4)
        little(UInt64(nanoseconds), 4)
    }
    /// A host action followed by its operands, which the caller appends with `raw`.
    public mutating func host(_ action: UInt8) { bytes.append(DeviceOperation.host.rawValue | action << 4) }
    public mutating func raw(_ value: UInt64, _ size: Int) { little(value, size) }
    public mutating func raw(_ data: some Sequence<UInt8>) { bytes.append(contentsOf: data) }
}
