import Synchronization
import VMMCore

/// Intel 8254 programmable interval timer at ports 0x40-0x43 (offsets 0-3), with channel 2's gate
/// and output on port 0x61 through `portB`.
///
/// Counters are computed from a monotonic clock, never by counting host wake-ups: the count a
/// guest reads and the ticks channel 0 delivers on its interrupt line both follow from the time
/// elapsed since the counter was loaded, so nothing drifts. When the host falls behind, missed
/// channel-0 ticks are delivered late (spaced by `catchUpGap`), up to `maxBacklog`; older ones are
/// dropped and counted in `lostTicks`. A tick the interrupt controller merged with one still
/// pending (the guest had not taken the last yet) is not counted as delivered: it comes again
/// `catchUpGap` later, as QEMU's and KVM's PITs reinject ticks.
public final class PIT8254<Line: InterruptLine>: BusDevice, TimedDevice {
    /// Input clock of every channel.
    public static var frequency: UInt64 { 1_193_182 }
    /// Shortest spacing of catch-up ticks, so the interrupt controller sees separate edges.
    public static var catchUpGap: UInt64 { 100_000 }
    /// Ticks owed beyond this many are dropped.
    public static var maxBacklog: UInt64 { 1000 }

    struct Channel {
        var mode: UInt8 = 0
        var access: UInt8 = 3 // 1 = low byte, 2 = high byte, 3 = low then high
        var bcd = false
        var reload: UInt32 = 0x10000
        var loaded = false // false = "null count": no count written since the mode was set
        var gate: Bool
        /// Ticks counted before `resumedAt` (while the gate paused a mode 0/4 count).
        var baseTicks: UInt64 = 0
        var resumedAt: UInt64 = 0
        var writeHighNext = false
        var pendingLow: UInt8 = 0
        var readHighNext = false
        var latchedCount: UInt16?
        var latchedHighNext = false
        var latchedStatus: UInt8?
        /// Channel-0 interrupts delivered for the current count (one per period in modes 2/3).
        var ticksDelivered: UInt64 = 0
        var lastDelivery: UInt64 = 0
        /// Edges merged in a row: each retry waits twice as long as the last, up to a period,
        /// so a paused or stuck guest costs no more interrupts a second than its tick rate.
        var merges: UInt64 = 0

        init(gate: Bool) { self.gate = gate }

        /// The period in input ticks (a loaded 0 means 65536, or 10000 in BCD).
        var period: UInt64 {
            if bcd {
                let value = PIT8254.fromBCD(UInt16(truncatingIfNeeded: reload))
                return value == 0 ? 10000 : UInt64(value)
            }
            return reload == 0 ? 0x10000 : UInt64(reload)
        }

        var periodic: Bool { mode == 2 || mode == 3 }

        /// Counting runs only while the gate is high (channels 0 and 1 have it tied high).
        var running: Bool { loaded && gate }

        func elapsed(at now: UInt64) -> UInt64 {
            guard loaded else { return 0 }
            return running ? baseTicks + PIT8254.ticks(from: resumedAt, to: now) : baseTicks
        }

        func count(at now: UInt64) -> UInt16 {
            guard loaded else { return UInt16(truncatingIfNeeded: reload) }
            let n = period, e = elapsed(at: now)
            let value: UInt64
            switch mode {
            case 2: value = n - e % n
            case 3:
                let half = max(n / 2, 1)
                value = n - 2 * (e % half)
            default: value = (n &- e) & 0xFFFF // modes 0, 1, 4, 5 count on through zero
            }
            return bcd ? PIT8254.toBCD(UInt16(truncatingIfNeeded: value % 10000)) : UInt16(truncatingIfNeeded: value)
        }

        func output(at now: UInt64) -> Bool {
            guard loaded else { return mode != 0 }
            let n = period, e = elapsed(at: now)
            switch mode {
            case 0, 1: return e >= n
            case 2: return !running || e % n != n - 1
            case 3: return !running || e % n < (n + 1) / 2
            default: return e != n // 4, 5: low for one tick at terminal count
            }
        }

        func status(at now: UInt64) -> UInt8 {
            (output(at: now) ? 0x80 : 0) | (loaded ? 0 : 0x40) | access << 4 | mode << 1 | (bcd ? 1 : 0)
        }
    }

    struct State {
        var channels = [Channel(gate: true), Channel(gate: true), Channel(gate: false)]
        var speakerEnabled = false
        var lostTicks: UInt64 = 0
        var coalescedTicks: UInt64 = 0
    }

    let state = Locked(State())
    let line: Line
    private let clock: any MonotonicClock
    let scheduler: any TimerScheduler
    /// The port 0x61 view of this PIT (a new view each call; views share this PIT).
    public var portB: PITPortB { PITPortB(self) }

    public init(interrupt line: Line, clock: any MonotonicClock, scheduler: any TimerScheduler) {
        self.line = line
        self.clock = clock
        self.scheduler = scheduler
    }

    // MARK: ports 0x40-0x43

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset < 3 else { return 0xFF } // the control word register is write-only
        let now = clock.nanoseconds()
        return UInt64(state.withLock { state in Self.readData(&state.channels[Int(offset)], now: now) })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let now = clock.nanoseconds()
        let byte = UInt8(truncatingIfNeeded: value)
        let changed = state.withLock { state -> Bool in
            if offset == 3 { return Self.writeControl(byte, &state, now: now) }
            guard offset < 3 else { return false }
            return Self.writeData(byte, &state.channels[Int(offset)], now: now) && offset == 0
        }
        if changed { scheduler.reschedule() }
    }

    static func readData(_ channel: inout Channel, now: UInt64) -> UInt8 {
        if let status = channel.latchedStatus {
            channel.latchedStatus = nil
            return status
        }
        if let latched = channel.latchedCount {
            switch channel.access {
            case 1: channel.latchedCount = nil; return UInt8(truncatingIfNeeded: latched)
            case 2: channel.latchedCount = nil; return UInt8(truncatingIfNeeded: latched >> 8)
            default:
                if channel.latchedHighNext {
                    channel.latchedCount = nil
                    channel.latchedHighNext = false
                    return UInt8(truncatingIfNeeded: latched >> 8)
                }
                channel.latchedHighNext = true
                return UInt8(truncatingIfNeeded: latched)
            }
        }
        let count = channel.count(at: now)
        switch channel.access {
        case 1: return UInt8(truncatingIfNeeded: count)
        case 2: return UInt8(truncatingIfNeeded: count >> 8)
        default:
            defer { channel.readHighNext.toggle() }
            return channel.readHighNext ? UInt8(truncatingIfNeeded: count >> 8) : UInt8(truncatingIfNeeded: count)
        }
    }

    /// Returns true when channel 0's schedule changed.
    static func writeData(_ byte: UInt8, _ channel: inout Channel, now: UInt64) -> Bool {
        switch channel.access {
        case 1: load(&channel, UInt32(byte), now: now)
        case 2: load(&channel, UInt32(byte) << 8, now: now)
        default:
            if channel.writeHighNext {
                channel.writeHighNext = false
                load(&channel, UInt32(byte) << 8 | UInt32(channel.pendingLow), now: now)
            } else {
                channel.writeHighNext = true
                channel.pendingLow = byte
                return false
            }
        }
        return true
    }

    static func load(_ channel: inout Channel, _ value: UInt32, now: UInt64) {
        channel.reload = value
        channel.loaded = true
        channel.baseTicks = 0
        channel.resumedAt = now
        channel.ticksDelivered = 0
        channel.lastDelivery = 0
        channel.merges = 0
    }

    /// Returns true when channel 0's schedule changed.
    static func writeControl(_ byte: UInt8, _ state: inout State, now: UInt64) -> Bool {
        let select = Int(byte >> 6)
        if select == 3 { // read-back
            for index in 0..<3 where byte & (2 << index) != 0 {
                if byte & 0x20 == 0, state.channels[index].latchedCount == nil {
                    state.channels[index].latchedCount = state.channels[index].count(at: now)
                    state.channels[index].latchedHighNext = false
                }
                if byte & 0x10 == 0, state.channels[index].latchedStatus == nil {
                    state.channels[index].latchedStatus = state.channels[index].status(at: now)
                }
            }
            return false
        }
        let access = (byte >> 4) & 3
        if access == 0 { // counter latch
            if state.channels[select].latchedCount == nil {
                state.channels[select].latchedCount = state.channels[select].count(at: now)
                state.channels[select].latchedHighNext = false
            }
            return false
        }
        var mode = (byte >> 1) & 7
        if mode > 5 { mode -= 4 } // 6 and 7 are aliases of 2 and 3
        var channel = state.channels[select]
        channel.mode = mode
        channel.access = access
        channel.bcd = byte & 1 != 0
        channel.loaded = false
        channel.writeHighNext = false
        channel.readHighNext = false
        channel.latchedCount = nil
        channel.latchedStatus = nil
        state.channels[select] = channel
        return select == 0
    }

    // MARK: port 0x61

    /// Port 0x61 read: bit 0 gate 2, bit 1 speaker data enable, bit 4 refresh toggle (every
    /// 15.085 µs), bit 5 channel 2 output.
    func readPortB() -> UInt8 {
        let now = clock.nanoseconds()
        return state.withLock { state in
            let channel = state.channels[2]
            var value: UInt8 = channel.gate ? 1 : 0
            if state.speakerEnabled { value |= 2 }
            if (now / 15_085) & 1 == 1 { value |= 0x10 }
            if channel.output(at: now) { value |= 0x20 }
            return value
        }
    }

    func writePortB(_ value: UInt8) {
        let now = clock.nanoseconds()
        state.withLock { state in
            state.speakerEnabled = value & 2 != 0
            setGate(&state.channels[2], value & 1 != 0, now: now)
        }
    }

    private func setGate(_ channel: inout Channel, _ high: Bool, now: UInt64) {
        guard high != channel.gate else { return }
        if !high, channel.loaded { channel.baseTicks += PIT8254.ticks(from: channel.resumedAt, to: now) }
        channel.gate = high
        if high {
            // Modes 1, 2, 3 and 5 restart the count on a rising gate; 0 and 4 resume it.
            if channel.mode != 0 && channel.mode != 4 { channel.baseTicks = 0 }
            channel.resumedAt = now
        }
    }

    // MARK: channel 0 interrupts

    /// Channel-0 ticks dropped because the host fell more than `maxBacklog` behind.
    public var lostTicks: UInt64 { state.withLock { $0.lostTicks } }
    /// Channel-0 edges the interrupt controller merged with a pending one, delivered again later.
    public var coalescedTicks: UInt64 { state.withLock { $0.coalescedTicks } }

    public func nextDeadline() -> UInt64? {
        state.withLock { state in
            let channel = state.channels[0]
            guard channel.loaded, channel.gate else { return nil }
            if !channel.periodic && channel.ticksDelivered > 0 { return nil } // one-shot done
            let due = channel.resumedAt.saturatingAdd(Self.nanoseconds(ofTicks: channel.ticksDelivered.saturatingAdd(1).saturatingMultiply(channel.period)))
            // After any edge the next waits catchUpGap; after merged ones, longer (`merges`).
            guard channel.lastDelivery > 0 else { return due }
            let backoff = min(Self.catchUpGap << min(channel.merges &- 1, 16), max(Self.catchUpGap, Self.nanoseconds(ofTicks: channel.period)))
            return max(due, channel.lastDelivery &+ (channel.merges > 0 ? backoff : Self.catchUpGap))
        }
    }

    public func fire(now: UInt64) {
        let pulse = state.withLock { state -> UInt64? in
            var channel = state.channels[0]
            guard channel.loaded, channel.gate else { return nil }
            let owed = channel.elapsed(at: now) / channel.period
            guard owed > channel.ticksDelivered else { return nil }
            if !channel.periodic {
                guard channel.ticksDelivered == 0 else { return nil } // one interrupt per count
                channel.ticksDelivered = 1
            } else {
                if owed - channel.ticksDelivered > Self.maxBacklog {
                    state.lostTicks += owed - channel.ticksDelivered - 1
                    channel.ticksDelivered = owed - 1
                }
                channel.ticksDelivered += 1
            }
            channel.lastDelivery = now
            state.channels[0] = channel
            return channel.ticksDelivered
        }
        // The line is driven outside the lock; a merged edge is taken back unless the guest
        // reloaded the counter meanwhile (that resets the count and the delivery time).
        guard let delivered = pulse else { return }
        let merged = line.pulse() == .coalesced
        state.withLock { state in
            guard state.channels[0].ticksDelivered == delivered, state.channels[0].lastDelivery == now else { return }
            guard merged else {
                state.channels[0].merges = 0
                return
            }
            state.channels[0].ticksDelivered -= 1
            state.channels[0].merges &+= 1
            state.coalescedTicks &+= 1
        }
    }

    // MARK: arithmetic

    /// Input-clock ticks between two monotonic times.
    static func ticks(from start: UInt64, to now: UInt64) -> UInt64 {
        guard now > start else { return 0 }
        return clockTicks(nanoseconds: now - start, hz: frequency)
    }

    /// Nanoseconds that `ticks` input-clock ticks take, rounded up.
    /// Saturates at UInt64.max (a deadline that never comes) rather than trapping on a count no
    /// real run reaches (past 2^54 ticks, 490 years) but a hostile snapshot could claim.
    static func nanoseconds(ofTicks ticks: UInt64) -> UInt64 {
        let product = ticks.multipliedFullWidth(by: 1_000_000_000)
        guard product.high < frequency else { return .max }
        let (quotient, remainder) = frequency.dividingFullWidth(product)
        return remainder == 0 ? quotient : quotient.saturatingAdd(1)
    }

    static func fromBCD(_ value: UInt16) -> UInt16 {
        var result: UInt16 = 0
        var multiplier: UInt16 = 1
        var rest = value
        for _ in 0..<4 {
            result += min(rest & 0xF, 9) * multiplier
            rest >>= 4
            multiplier *= 10
        }
        return result
    }

    static func toBCD(_ value: UInt16) -> UInt16 {
        var result: UInt16 = 0
        var rest = value
        for digit in 0..<4 {
            result |= (rest % 10) << (4 * digit)
            rest /= 10
        }
        return result
    }
}

/// Port 0x61 (system control port B) as far as the PIT is concerned: channel 2's gate and output.
public final class PITPortB: BusDevice {
    private let read: @Sendable () -> UInt8
    private let write: @Sendable (UInt8) -> Void

    init<Line: InterruptLine>(_ pit: PIT8254<Line>) {
        read = { pit.readPortB() }
        write = { pit.writePortB($0) }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 { UInt64(read()) }
    public func write(offset: UInt64, size: Int, value: UInt64) { write(UInt8(truncatingIfNeeded: value)) }
}
