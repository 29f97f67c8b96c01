import Glibc
import Synchronization
import VMMCore

/// CMOS RTC register indexes.
public enum CMOSRegister {
    public static let seconds: UInt8 = 0x00, secondsAlarm: UInt8 = 0x01, minutes: UInt8 = 0x02
    public static let minutesAlarm: UInt8 = 0x03, hours: UInt8 = 0x04, hoursAlarm: UInt8 = 0x05
    public static let weekday: UInt8 = 0x06, day: UInt8 = 0x07, month: UInt8 = 0x08, year: UInt8 = 0x09
    public static let a: UInt8 = 0x0A, b: UInt8 = 0x0B, c: UInt8 = 0x0C, d: UInt8 = 0x0D
    public static let century: UInt8 = 0x32
}

/// MC146818-style CMOS real-time clock and RAM at ports 0x70 (index, offset 0) and 0x71 (data,
/// offset 1).
///
/// Time comes from the host's wall clock plus an offset the guest sets by writing the time
/// registers with SET (register B bit 7) held. Registers follow register B's binary/BCD and
/// 12/24-hour bits. Register A's update-in-progress bit is high in the last 244 µs of each second.
/// Register C's flags (periodic, alarm, update-ended) are computed from the clock; the interrupt
/// line (IRQ 8) rises when an enabled flag is set and falls when the guest reads register C.
/// While periodic interrupts are enabled, periods that passed before the guest read C (a vCPU the
/// host did not run in time) are not merged into one flag, as on the chip, but delivered late:
/// each read of C acknowledges one period, and the next owed one raises PF again `catchUpGap`
/// later, up to `maxBacklog` owed, beyond which they are counted in `lostPeriodicInterrupts`. A
/// guest that counts periodic interrupts to keep time (as Windows does) then keeps it, as it does
/// with the PIT's ticks. With PIE clear, reading C acknowledges every period that passed.
/// Bit 7 of the index port (NMI mask on PCs) is ignored.
public final class CMOSRTC<Line: InterruptLine>: BusDevice, TimedDevice {
    static var updateInProgressWindow: Int64 { 244_000 }
    static var nanosecondsPerSecond: UInt64 { 1_000_000_000 }
    /// Shortest spacing of late periodic interrupts, so the guest sees separate ones.
    public static var catchUpGap: UInt64 { 100_000 }
    /// Periodic interrupts owed beyond this many are dropped.
    public static var maxBacklog: UInt64 { 1000 }

    struct State {
        var index: UInt8 = 0
        var ram = [UInt8](repeating: 0, count: 128)
        var offsetSeconds: Int64 = 0
        /// Time fields the guest wrote while SET was held, applied when SET is cleared.
        var heldTime: tm?
        /// Monotonic time of the last register C read; flags count events after it.
        var flagsSince: UInt64 = 0
        /// Periodic-interrupt phase start, and periods already delivered since then.
        var periodicStart: UInt64 = 0
        var periodsDelivered: UInt64 = 0
        /// Monotonic time of the last register C read: late periods are spaced from it.
        var acknowledgedAt: UInt64 = 0
        var lostPeriods: UInt64 = 0
        var lineHigh = false

        var a: UInt8 { ram[Int(CMOSRegister.a)] }
        var b: UInt8 { ram[Int(CMOSRegister.b)] }
        var binary: Bool { b & 0x04 != 0 }
        var twentyFourHour: Bool { b & 0x02 != 0 }
        var dividerRunning: Bool { (a >> 4) & 7 == 2 }

        /// Nanoseconds per periodic interrupt for register A's rate, nil when off.
        var periodicInterval: UInt64? {
            let rate = a & 0x0F
            guard rate != 0, dividerRunning else { return nil }
            let hertz: UInt64 = rate == 1 ? 256 : rate == 2 ? 128 : 32768 >> (rate - 1)
            return CMOSRTC.nanosecondsPerSecond / hertz
        }
    }

    let state: Locked<State>
    let line: Line
    private let clock: any MonotonicClock
    private let wallClock: any WallClock
    let scheduler: any TimerScheduler

    /// `memory` fills CMOS RAM bytes (e.g. the BIOS memory-size fields) before the guest starts.
    public init(interrupt line: Line, clock: any MonotonicClock, wallClock: any WallClock,
                scheduler: any TimerScheduler, memory: [UInt8: UInt8] = [:]) {
        var initial = State()
        initial.ram[Int(CMOSRegister.a)] = 0x26 // 32.768 kHz divider, 1024 Hz periodic rate
        initial.ram[Int(CMOSRegister.b)] = 0x02 // 24-hour, BCD, no interrupts
        initial.ram[Int(CMOSRegister.d)] = 0x80 // valid RAM and time
        for (address, value) in memory where address >= 0x0E && address < 0x80 { initial.ram[Int(address)] = value }
        let now = clock.nanoseconds()
        initial.flagsSince = now
        initial.periodicStart = now
        self.state = Locked(initial)
        self.line = line
        self.clock = clock
        self.wallClock = wallClock
        self.scheduler = scheduler
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        let now = clock.nanoseconds(), wall = wallClock.now()
        let (value, acknowledged) = state.withLock { state -> (UInt8, Bool) in
            if offset == 0 { return (state.index, false) }
            guard offset == 1 else { return (0xFF, false) }
            return (readRegister(state.index, &state, now: now, wall: wall), state.index == CMOSRegister.c)
        }
        // Reading C re-arms the interrupt: the timer thread must look at the deadlines again.
        if acknowledged { scheduler.reschedule() }
        return UInt64(value)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let now = clock.nanoseconds(), wall = wallClock.now()
        let byte = UInt8(truncatingIfNeeded: value)
        let changed = state.withLock { state -> Bool in
            if offset == 0 {
                state.index = byte & 0x7F // bit 7: NMI mask, ignored
                return false
            }
            guard offset == 1 else { return false }
            return writeRegister(state.index, byte, &state, now: now, wall: wall)
        }
        if changed { scheduler.reschedule() }
    }

    // MARK: registers

    private func readRegister(_ index: UInt8, _ state: inout State, now: UInt64, wall: (seconds: Int64, nanoseconds: Int64)) -> UInt8 {
        switch index {
        case CMOSRegister.seconds, CMOSRegister.minutes, CMOSRegister.hours, CMOSRegister.weekday, CMOSRegister.day,
             CMOSRegister.month, CMOSRegister.year, CMOSRegister.century:
            let time = state.heldTime ?? Self.brokenDown(wall.seconds + state.offsetSeconds)
            return encode(field: index, of: time, state)
        case CMOSRegister.a:
            let updating = state.b & 0x80 == 0 && state.dividerRunning
                && wall.nanoseconds >= Int64(Self.nanosecondsPerSecond) - Self.updateInProgressWindow
            return state.a & 0x7F | (updating ? 0x80 : 0)
        case CMOSRegister.c:
            let flags = pendingFlags(state, now: now, wall: wall)
            state.flagsSince = now
            state.acknowledgedAt = now
            acknowledgePeriods(&state, now: now)
            setLine(false, &state)
            return flags
        case CMOSRegister.d:
            return 0x80
        default:
            return state.ram[Int(index)]
        }
    }

    private func writeRegister(_ index: UInt8, _ value: UInt8, _ state: inout State, now: UInt64,
                               wall: (seconds: Int64, nanoseconds: Int64)) -> Bool {
        switch index {
        case CMOSRegister.seconds, CMOSRegister.minutes, CMOSRegister.hours, CMOSRegister.weekday, CMOSRegister.day,
             CMOSRegister.month, CMOSRegister.year, CMOSRegister.century:
            var time = state.heldTime ?? Self.brokenDown(wall.seconds + state.offsetSeconds)
            decode(value, into: index, of: &time, state)
            if state.b & 0x80 != 0 {
                state.heldTime = time
            } else {
                state.offsetSeconds = Int64(timegm(&time)) - wall.seconds
            }
            return false
        case CMOSRegister.a:
            state.ram[Int(index)] = value & 0x7F
            state.periodicStart = now
            state.periodsDelivered = 0
            return true
        case CMOSRegister.b:
            let wasHeld = state.b & 0x80 != 0, wasPeriodic = state.b & 0x40 != 0
            state.ram[Int(index)] = value
            if value & 0x80 != 0, !wasHeld {
                state.heldTime = Self.brokenDown(wall.seconds + state.offsetSeconds)
            } else if value & 0x80 == 0, wasHeld, var time = state.heldTime {
                state.offsetSeconds = Int64(timegm(&time)) - wall.seconds
                state.heldTime = nil
            }
            if value & 0x40 != 0, !wasPeriodic { state.periodicStart = now; state.periodsDelivered = 0 }
            return true
        case CMOSRegister.c, CMOSRegister.d:
            return false // read-only
        default:
            state.ram[Int(index)] = value
            return index == CMOSRegister.secondsAlarm || index == CMOSRegister.minutesAlarm || index == CMOSRegister.hoursAlarm
        }
    }

    /// What a read of C acknowledges: one period while PIE is set and periods are owed (the rest
    /// follow late, at most `maxBacklog` of them), else every period that has passed.
    private func acknowledgePeriods(_ state: inout State, now: UInt64) {
        guard let interval = state.periodicInterval else { return }
        let owed = now.saturatingSubtract(state.periodicStart) / interval
        guard state.b & 0x40 != 0, owed > state.periodsDelivered else {
            state.periodsDelivered = owed
            return
        }
        let behind = owed - state.periodsDelivered
        if behind > Self.maxBacklog {
            state.lostPeriods = state.lostPeriods.saturatingAdd(behind - Self.maxBacklog)
            state.periodsDelivered = owed - Self.maxBacklog
        }
        state.periodsDelivered += 1
    }

    /// Periodic interrupts dropped because more than `maxBacklog` were owed.
    public var lostPeriodicInterrupts: UInt64 { state.withLock { $0.lostPeriods } }

    /// Register C's value now: IRQF | PF | AF | UF for events since the last read of C.
    private func pendingFlags(_ state: State, now: UInt64, wall: (seconds: Int64, nanoseconds: Int64)) -> UInt8 {
        var flags: UInt8 = 0
        if let interval = state.periodicInterval, now.saturatingSubtract(state.periodicStart) / interval > state.periodsDelivered {
            flags |= 0x40
        }
        // Second boundaries crossed since flagsSince (the host wall clock's seconds).
        let sinceNanos = Int64(clamping: now.saturatingSubtract(state.flagsSince))
        if state.dividerRunning, state.b & 0x80 == 0, sinceNanos > wall.nanoseconds {
            flags |= 0x10
            if alarmMatched(state, wallSeconds: wall.seconds, withinNanos: sinceNanos - wall.nanoseconds) { flags |= 0x20 }
        }
        if flags & state.b & 0x70 != 0 { flags |= 0x80 }
        return flags
    }

    /// Whether an alarm second lies in the last `withinNanos` (at most a day: the alarm names a
    /// time of day, and UTC days are 86400 s). Each alarm byte selects the hours, minutes or seconds
    /// whose encoding it equals (0xC0-0xFF: any; looked up in `CMOSAlarmTables`, built once from
    /// `encode`), and the window is tested by walking its seconds or the selected times of day,
    /// whichever are fewer: a guest polling register C pays a few comparisons per read, never a
    /// calendar or an encoding per candidate.
    private func alarmMatched(_ state: State, wallSeconds: Int64, withinNanos: Int64) -> Bool {
        let window = min(withinNanos / Int64(Self.nanosecondsPerSecond) &+ 1, 86400)
        let day: Int64 = 86400
        let now = ((wallSeconds &+ state.offsetSeconds) % day + day) % day
        func selected(_ alarm: UInt8, _ table: [[Int64]]) -> [Int64]? {
            let raw = state.ram[Int(alarm)]
            return raw & 0xC0 == 0xC0 ? nil : table[Int(raw)] // 0xC0-0xFF: any
        }
        let tables = state.binary ? CMOSAlarmTables.binary : CMOSAlarmTables.bcd
        let hours = selected(CMOSRegister.hoursAlarm, state.twentyFourHour ? tables.hours24 : tables.hours12)
        let minutes = selected(CMOSRegister.minutesAlarm, tables.sixty)
        let seconds = selected(CMOSRegister.secondsAlarm, tables.sixty)
        if hours == nil, minutes == nil, seconds == nil { return true } // every second matches
        let candidates = (hours?.count ?? 24) * (minutes?.count ?? 60) * (seconds?.count ?? 60)
        if window <= Int64(candidates) {
            // The seconds of the window, newest first: each a time of day to look up.
            for age in 0..<window {
                let time = ((now - age) % day + day) % day
                if hours?.contains(time / 3600) ?? true, minutes?.contains(time / 60 % 60) ?? true,
                   seconds?.contains(time % 60) ?? true { return true }
            }
            return false
        }
        for hour in hours ?? Array(0..<24) {
            for minute in minutes ?? Array(0..<60) {
                for second in seconds ?? Array(0..<60) {
                    let age = ((now - (hour * 3600 + minute * 60 + second)) % day + day) % day
                    if age < window { return true }
                }
            }
        }
        return false
    }

    // MARK: timed interrupts

    public func nextDeadline() -> UInt64? {
        state.withLock { state in
            guard !state.lineHigh else { return nil } // the guest has not read C yet
            var deadlines: [UInt64] = []
            if state.b & 0x40 != 0, let interval = state.periodicInterval {
                let due = state.periodicStart.saturatingAdd(state.periodsDelivered.saturatingAdd(1).saturatingMultiply(interval))
                deadlines.append(max(due, state.acknowledgedAt.saturatingAdd(Self.catchUpGap)))
            }
            if state.b & 0x30 != 0 { // update-ended or alarm: check at the next second boundary
                let wall = wallClock.now()
                deadlines.append(clock.nanoseconds() + UInt64(Int64(Self.nanosecondsPerSecond) - wall.nanoseconds))
            }
            return deadlines.min()
        }
    }

    public func fire(now: UInt64) {
        let wall = wallClock.now()
        state.withLock { state in
            if pendingFlags(state, now: now, wall: wall) & 0x80 != 0 { setLine(true, &state) }
        }
    }

    private func setLine(_ high: Bool, _ state: inout State) {
        guard high != state.lineHigh else { return }
        state.lineHigh = high
        line.setLevel(high)
    }

    // MARK: time encoding

    static func brokenDown(_ seconds: Int64) -> tm {
        var value = time_t(seconds)
        var result = tm()
        gmtime_r(&value, &result)
        return result
    }

    private func encode(field: UInt8, of time: tm, _ state: State) -> UInt8 {
        let value: Int32
        switch field {
        case CMOSRegister.seconds: value = time.tm_sec
        case CMOSRegister.minutes: value = time.tm_min
        case CMOSRegister.hours: value = time.tm_hour
        case CMOSRegister.weekday: value = time.tm_wday + 1
        case CMOSRegister.day: value = time.tm_mday
        case CMOSRegister.month: value = time.tm_mon + 1
        case CMOSRegister.year: value = (time.tm_year + 1900) % 100
        default: value = (time.tm_year + 1900) / 100 // century
        }
        return cmosEncodeTimeField(value, hours: field == CMOSRegister.hours, binary: state.binary, twentyFourHour: state.twentyFourHour)
    }

    private func decode(_ raw: UInt8, into field: UInt8, of time: inout tm, _ state: State) {
        let pm = field == CMOSRegister.hours && !state.twentyFourHour && raw & 0x80 != 0
        let byte = field == CMOSRegister.hours && !state.twentyFourHour ? raw & 0x7F : raw
        var value = Int32(state.binary ? byte : (byte >> 4) * 10 + byte & 0x0F)
        switch field {
        case CMOSRegister.seconds: time.tm_sec = value
        case CMOSRegister.minutes: time.tm_min = value
        case CMOSRegister.hours:
            if !state.twentyFourHour { value = value % 12 + (pm ? 12 : 0) }
            time.tm_hour = value
        case CMOSRegister.weekday: time.tm_wday = value - 1
        case CMOSRegister.day: time.tm_mday = value
        case CMOSRegister.month: time.tm_mon = value - 1
        case CMOSRegister.year: time.tm_year = ((time.tm_year + 1900) / 100 * 100 + value) - 1900
        default: time.tm_year = (value * 100 + (time.tm_year + 1900) % 100) - 1900
        }
    }
}

/// For each byte an alarm register can hold, the values whose encoding equals it (none for
/// a byte no value encodes to), per data mode: the inverse of `encode` for the alarm fields.
struct CMOSAlarmTables {
    let hours24: [[Int64]], hours12: [[Int64]], sixty: [[Int64]]

    static let binary = CMOSAlarmTables(binary: true)
    static let bcd = CMOSAlarmTables(binary: false)

    init(binary: Bool) {
        func table(_ count: Int64, _ encoding: (Int64) -> UInt8) -> [[Int64]] {
            var table = [[Int64]](repeating: [], count: 256)
            for value in 0..<count { table[Int(encoding(value))].append(value) }
            return table
        }
        hours24 = table(24) { cmosEncodeTimeField(Int32($0), hours: true, binary: binary, twentyFourHour: true) }
        hours12 = table(24) { cmosEncodeTimeField(Int32($0), hours: true, binary: binary, twentyFourHour: false) }
        sixty = table(60) { cmosEncodeTimeField(Int32($0), hours: false, binary: binary, twentyFourHour: true) }
    }
}

/// One field's register byte: binary or BCD, hours in 12-hour mode as 1-12 with bit 7 for PM.
func cmosEncodeTimeField(_ value: Int32, hours: Bool, binary: Bool, twentyFourHour: Bool) -> UInt8 {
    var value = value
    var pm = false
    if hours, !twentyFourHour {
        pm = value >= 12
        value = value % 12 == 0 ? 12 : value % 12
    }
    let byte = UInt8(truncatingIfNeeded: value)
    return (binary ? byte : UInt8(byte / 10) << 4 | byte % 10) | (pm ? 0x80 : 0)
}
