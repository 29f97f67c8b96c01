import Glibc
import VMMCore

// Each device's state as a snapshot saves it (layouts in docs/snapshot.md). Monotonic times are
// stored as ages, so a restore in another process (or on another host) keeps every deadline's
// distance from the present. A restore checks every value before it replaces the live state, and
// re-raises an interrupt line that was high (the interrupt controller's own state came back
// first), so an edge the guest waits for is not lost. Counters are capped far above what a run
// reaches (`counterLimit`), so a hostile file's UInt64.max cannot overflow the next increment.

/// The largest counter value a restore keeps (2^62: centuries of any count a device makes).
let counterLimit: UInt64 = 1 << 62

extension Serial16550: SnapshotDevice {
    public func saveState(now: UInt64) -> [UInt8] {
        state.withLock { state in
            var out = StateWriter()
            out.u8(state.interruptEnable)
            out.u8(state.lineControl)
            out.u8(state.modemControl)
            out.u8(state.scratch)
            out.u16(state.divisor)
            out.bool(state.fifoEnabled)
            out.blob(state.receive)
            out.u32(UInt32(clamping: state.shown))
            out.u8(state.lineErrors)
            out.bool(state.transmitterEmptyPending)
            out.u8(state.modemStatusDeltas)
            out.bool(state.interruptLevel)
            return out.bytes
        }
    }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        var input = StateReader(bytes, context: "UART")
        var restored = State()
        restored.interruptEnable = try input.u8("IER") & 0x0F
        restored.lineControl = try input.u8("LCR")
        restored.modemControl = try input.u8("MCR") & 0x1F
        restored.scratch = try input.u8("SCR")
        restored.divisor = try input.u16("divisor")
        restored.fifoEnabled = try input.bool("FIFO enable")
        restored.receive = try input.blob("receive FIFO", maximum: Self.fifoCapacity)
        let shown = Int(try input.u32("bytes shown"))
        guard shown <= restored.receive.count else { throw .invalid("UART: \(shown) bytes shown of \(restored.receive.count)") }
        restored.shown = shown
        restored.lineErrors = try input.u8("line errors") & 0x1E
        restored.transmitterEmptyPending = try input.bool("THRE pending")
        restored.modemStatusDeltas = try input.u8("modem deltas") & 0x0F
        restored.interruptLevel = try input.bool("interrupt level")
        try input.finish()
        state.withLock { state in
            state = restored
            if state.interruptLevel { line.setLevel(true) }
        }
    }
}

extension PIT8254: SnapshotDevice {
    public func saveState(now: UInt64) -> [UInt8] {
        state.withLock { state in
            var out = StateWriter()
            for channel in state.channels {
                out.u8(channel.mode)
                out.u8(channel.access)
                out.bool(channel.bcd)
                out.u32(channel.reload)
                out.bool(channel.loaded)
                out.bool(channel.gate)
                out.u64(channel.baseTicks)
                out.age(of: channel.resumedAt, now: now)
                out.bool(channel.writeHighNext)
                out.u8(channel.pendingLow)
                out.bool(channel.readHighNext)
                out.bool(channel.latchedCount != nil)
                out.u16(channel.latchedCount ?? 0)
                out.bool(channel.latchedHighNext)
                out.bool(channel.latchedStatus != nil)
                out.u8(channel.latchedStatus ?? 0)
                out.u64(channel.ticksDelivered)
                out.age(of: channel.lastDelivery, now: now)
                out.u64(channel.merges)
            }
            out.bool(state.speakerEnabled)
            out.u64(state.lostTicks)
            out.u64(state.coalescedTicks)
            return out.bytes
        }
    }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        var input = StateReader(bytes, context: "PIT")
        var restored = State()
        for index in restored.channels.indices {
            var channel = Channel(gate: true)
            channel.mode = try input.u8("mode")
            channel.access = try input.u8("access")
            guard channel.mode <= 5, (1...3).contains(channel.access) else {
                throw .invalid("PIT: channel \(index) mode \(channel.mode) access \(channel.access)")
            }
            channel.bcd = try input.bool("BCD")
            channel.reload = try input.u32("reload")
            guard channel.reload <= 0x10000 else { throw .invalid("PIT: channel \(index) reload \(channel.reload)") }
            channel.loaded = try input.bool("loaded")
            channel.gate = try input.bool("gate")
            // Ticks and periods stay where the deadline arithmetic (ticks x 10^9 / 1193182 in 64
            // bits) cannot overflow: 2^53 ticks is 240 years of input clock.
            channel.baseTicks = min(try input.u64("base ticks"), 1 << 53)
            channel.resumedAt = try input.age("resumed at", now: now)
            channel.writeHighNext = try input.bool("write high next")
            channel.pendingLow = try input.u8("pending low")
            channel.readHighNext = try input.bool("read high next")
            let latched = try input.bool("latched count present")
            let count = try input.u16("latched count")
            channel.latchedCount = latched ? count : nil
            channel.latchedHighNext = try input.bool("latched high next")
            let statusLatched = try input.bool("latched status present")
            let status = try input.u8("latched status")
            channel.latchedStatus = statusLatched ? status : nil
            channel.ticksDelivered = min(try input.u64("ticks delivered"), (1 << 53) / channel.period)
            channel.lastDelivery = try input.age("last delivery", now: now)
            channel.merges = min(try input.u64("merges"), 64)
            restored.channels[index] = channel
        }
        restored.speakerEnabled = try input.bool("speaker")
        restored.lostTicks = min(try input.u64("lost ticks"), counterLimit)
        restored.coalescedTicks = min(try input.u64("coalesced ticks"), counterLimit)
        try input.finish()
        state.withLock { $0 = restored }
        scheduler.reschedule()
    }
}

extension CMOSRTC: SnapshotDevice {
    public func saveState(now: UInt64) -> [UInt8] {
        state.withLock { state in
            var out = StateWriter()
            out.u8(state.index)
            out.raw(state.ram)
            out.i64(state.offsetSeconds)
            out.bool(state.heldTime != nil)
            let held = state.heldTime ?? tm()
            for field in [held.tm_sec, held.tm_min, held.tm_hour, held.tm_mday, held.tm_mon, held.tm_year, held.tm_wday, held.tm_yday] {
                out.i64(Int64(field))
            }
            out.age(of: state.flagsSince, now: now)
            out.age(of: state.periodicStart, now: now)
            out.u64(state.periodsDelivered)
            out.age(of: state.acknowledgedAt, now: now)
            out.u64(state.lostPeriods)
            out.bool(state.lineHigh)
            return out.bytes
        }
    }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        var input = StateReader(bytes, context: "RTC")
        let index = try input.u8("index") & 0x7F
        let ram = try input.raw("CMOS RAM", count: 128)
        // Ten thousand years either way: the time-of-day arithmetic stays far from overflow.
        let offsetSeconds = try input.i64("offset")
        guard offsetSeconds.magnitude < 316_000_000_000 else { throw .invalid("RTC: offset \(offsetSeconds) s") }
        let held = try input.bool("held time present")
        // Each field clamped to its calendar range, as the register writes that set them are.
        let ranges: [ClosedRange<Int64>] = [0...60, 0...59, 0...23, 1...31, 0...11, -1900...8100, 0...6, 0...365]
        var fields: [Int32] = []
        for range in ranges { fields.append(Int32(min(max(try input.i64("held time"), range.lowerBound), range.upperBound))) }
        let times = [try input.age("flags since", now: now), try input.age("periodic start", now: now),
                     min(try input.u64("periods delivered"), counterLimit), try input.age("acknowledged at", now: now),
                     min(try input.u64("lost periods"), counterLimit)]
        let lineHigh = try input.bool("line")
        try input.finish()
        // Built under the lock: the state holds a C `tm`, which cannot be handed in from outside.
        state.withLock { state in
            var restored = State()
            (restored.index, restored.ram, restored.offsetSeconds) = (index, ram, offsetSeconds)
            if held {
                var time = tm()
                (time.tm_sec, time.tm_min, time.tm_hour, time.tm_mday) = (fields[0], fields[1], fields[2], fields[3])
                (time.tm_mon, time.tm_year, time.tm_wday, time.tm_yday) = (fields[4], fields[5], fields[6], fields[7])
                restored.heldTime = time
            }
            (restored.flagsSince, restored.periodicStart, restored.periodsDelivered) = (times[0], times[1], times[2])
            (restored.acknowledgedAt, restored.lostPeriods, restored.lineHigh) = (times[3], times[4], lineHigh)
            state = restored
            if lineHigh { line.setLevel(true) }
        }
        scheduler.reschedule()
    }
}

extension VirtioMMIODevice: SnapshotDevice where Model: VirtioModelState {
    public func saveState(now: UInt64) -> [UInt8] {
        state.withLock { state in
            var out = StateWriter()
            out.u32(state.status)
            out.u32(state.deviceFeaturesSelect)
            out.u32(state.driverFeaturesSelect)
            out.u64(state.driverFeatures)
            out.u32(state.queueSelect)
            out.u64(UInt64(state.queueErrors))
            out.bool(state.lineHigh)
            out.u64(state.context.negotiatedFeatures)
            out.bool(state.context.driverReady)
            out.u32(state.context.interruptStatus)
            out.u32(state.context.configGeneration)
            out.u32(UInt32(state.context.queues.count))
            for queue in state.context.queues { queue.save(into: &out) }
            state.model.save(into: &out, now: now)
            return out.bytes
        }
    }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        let current = state.withLock { $0 }
        let restored = try Self.decode(bytes, onto: current, now: now)
        let high = state.withLock { state in
            state = restored
            return state.lineHigh
        }
        if high { line.setLevel(true) }
        scheduler.reschedule()
    }

    private static func decode(_ bytes: [UInt8], onto current: State, now: UInt64) throws(StateError) -> State {
        var input = StateReader(bytes, context: "virtio device \(Model.deviceType)")
        var restored = current
        restored.status = try input.u32("status")
        restored.deviceFeaturesSelect = try input.u32("device features select")
        restored.driverFeaturesSelect = try input.u32("driver features select")
        restored.driverFeatures = try input.u64("driver features")
        restored.queueSelect = try input.u32("queue select")
        restored.queueErrors = Int(min(try input.u64("queue errors"), counterLimit))
        restored.lineHigh = try input.bool("line")
        restored.context.negotiatedFeatures = try input.u64("negotiated features")
        guard restored.context.negotiatedFeatures & ~restored.offered == 0 else {
            throw .invalid("virtio: negotiated features 0x\(hex(restored.context.negotiatedFeatures)) were never offered")
        }
        restored.context.driverReady = try input.bool("driver ready")
        restored.context.interruptStatus = try input.u32("interrupt status") & 3
        restored.context.configGeneration = try input.u32("config generation")
        let count = try input.count("queues", maximum: restored.context.queues.count)
        guard count == restored.context.queues.count else { throw .invalid("virtio: \(count) queues, the device has \(restored.context.queues.count)") }
        for index in 0..<count {
            try restored.context.queues[index].restore(from: &input, memory: restored.context.memory)
        }
        try restored.model.restore(from: &input, now: now)
        try input.finish()
        return restored
    }
}

/// A virtio device model whose state a snapshot can carry.
public protocol VirtioModelState: VirtioModel {
    func save(into out: inout StateWriter, now: UInt64)
    mutating func restore(from input: inout StateReader, now: UInt64) throws(StateError)
}

extension FwCfg: SnapshotDevice {
    public func saveState(now: UInt64) -> [UInt8] {
        state.withLock { state in
            var out = StateWriter()
            out.u16(state.key)
            out.u64(UInt64(state.offset))
            return out.bytes
        }
    }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        var input = StateReader(bytes, context: "fw_cfg")
        let key = try input.u16("selector")
        let offset = try input.u64("offset")
        try input.finish()
        // Reads past an item's end give zeros; the cap only keeps the offset's arithmetic small.
        state.withLock { $0 = (key, Int(min(offset, 1 << 32))) }
    }
}

extension PCTestDevice.Scratch: SnapshotDevice {
    public func saveState(now: UInt64) -> [UInt8] {
        var out = StateWriter()
        out.blob(bytes.withLock { $0 })
        return out.bytes
    }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        var input = StateReader(bytes, context: "pc-testdev scratch")
        let saved = try input.blob("bytes", exactly: size)
        try input.finish()
        self.bytes.withLock { $0 = saved }
    }
}

extension PowerControl.ResetControlRegister: SnapshotDevice {
    public func saveState(now: UInt64) -> [UInt8] { [value.withLock { $0 }] }

    public func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        guard bytes.count == 1 else { throw .invalid("reset control: \(bytes.count) bytes, not 1") }
        value.withLock { $0 = bytes[0] & ~0x04 }
    }
}
