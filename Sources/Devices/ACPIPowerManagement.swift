import VMMCore

/// The ACPI fixed power-management hardware a full FADT names (ACPI 6.x, section 4.8): the PM1a
/// event block (status and enable, 16 bits each), the PM1a control block and the 32-bit PM timer
/// (3.579545 MHz from the monotonic clock). Writing SLP_EN with a sleep type asks the machine to
/// sleep (S3) or power off (S5); the machine wakes it again (`wake`), setting WAK_STS and the
/// event that woke it. Status bits whose enable bit is set raise the SCI (level, IRQ 9).
/// KVM-free: the clock and the line are injected.
public final class ACPIPowerManagement: BusDevice {
    /// PM1 status and enable bits.
    public enum Event {
        public static let timer: UInt16 = 1 << 0
        public static let powerButton: UInt16 = 1 << 8
        public static let rtc: UInt16 = 1 << 10
        public static let wake: UInt16 = 1 << 15
        /// The status bits this device sets; the rest read zero and ignore writes.
        static let implemented: UInt16 = timer | powerButton | rtc | wake
        /// The enable bits (WAK_STS has none).
        static let enables: UInt16 = timer | powerButton | rtc
    }

    /// PM1 control: SCI_EN (bit 0, always 1: there is no SMI command port to switch modes),
    /// SLP_TYP (bits 10-12), SLP_EN (bit 13, write-only).
    static let sciEnabled: UInt16 = 1, sleepEnable: UInt16 = 1 << 13

    public static let timerHz: UInt64 = 3_579_545

    struct State {
        var status: UInt16 = 0, enable: UInt16 = 0
        var control: UInt16 = sciEnabled
        /// How many times the timer's bit 31 had changed when TMR_STS was last brought up to date.
        var timerToggles: UInt64 = 0
    }

    private let state = Locked(State())
    private let clock: any MonotonicClock
    private let line: any InterruptLine
    private let onSleep: @Sendable (_ type: UInt8) -> Void

    /// `onSleep` hears the sleep type of every SLP_EN write (the machine decides what S3 and S5
    /// mean); it is called without the device's lock held.
    public init(clock: any MonotonicClock, sci: any InterruptLine, onSleep: @escaping @Sendable (_ type: UInt8) -> Void) {
        (self.clock, line, self.onSleep) = (clock, sci, onSleep)
    }

    /// The PM timer's count now: ticks of 3.579545 MHz since the clock's zero, 32 bits.
    public func timerValue() -> UInt32 { UInt32(truncatingIfNeeded: ticks()) }

    /// Ticks since the clock's zero, in full.
    private func ticks() -> UInt64 { clockTicks(nanoseconds: clock.nanoseconds(), hz: Self.timerHz) }

    /// Any width at any offset: the block read as its bytes (PM1 status, enable, control, a
    /// reserved pair, the timer), as a chipset decodes them; bytes past the block read 0xFF.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        let image: [UInt8] = state.withLock { state in
            refreshTimerStatus(&state)
            let timer = timerValue()
            return [UInt8(truncatingIfNeeded: state.status), UInt8(state.status >> 8),
                    UInt8(truncatingIfNeeded: state.enable), UInt8(state.enable >> 8),
                    UInt8(truncatingIfNeeded: state.control), UInt8(state.control >> 8), 0xFF, 0xFF,
                    UInt8(truncatingIfNeeded: timer), UInt8(truncatingIfNeeded: timer >> 8),
                    UInt8(truncatingIfNeeded: timer >> 16), UInt8(truncatingIfNeeded: timer >> 24)]
        }
        var value: UInt64 = 0
        for index in 0..<min(size, 8) {
            let position = offset &+ UInt64(index)
            let byte = position < UInt64(image.count) ? image[Int(position)] : 0xFF
            value |= UInt64(byte) << (8 * UInt64(index))
        }
        return value
    }

    /// Byte by byte as well: status bytes clear the bits written with 1, enable bytes set, a
    /// control write (either byte) that sets SLP_EN hands the sleep type over; the timer and the
    /// reserved bytes ignore writes.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        var sleepType: UInt8?
        state.withLock { state in
            var control: UInt16?
            for index in 0..<min(size, 8) {
                let byte = UInt16(truncatingIfNeeded: value >> (8 * UInt64(index))) & 0xFF
                switch offset &+ UInt64(index) {
                case 0: state.status &= ~(byte & Event.implemented)
                case 1: state.status &= ~((byte << 8) & Event.implemented)
                case 2: state.enable = (state.enable & 0xFF00) | (byte & Event.enables)
                case 3: state.enable = (state.enable & 0x00FF) | ((byte << 8) & Event.enables)
                case 4: control = ((control ?? state.control) & 0xFF00) | byte
                case 5: control = ((control ?? state.control) & 0x00FF) | byte << 8
                default: break
                }
            }
            if let written = control {
                state.control = (written & ~Self.sleepEnable) | Self.sciEnabled
                if written & Self.sleepEnable != 0 { sleepType = UInt8((written >> 10) & 7) }
            }
            updateLine(state)
        }
        if let sleepType { onSleep(sleepType) }
    }

    /// Sets status bits (an event the machine saw: the power button, the RTC alarm) and raises
    /// the SCI when one is enabled.
    public func signal(_ events: UInt16) {
        state.withLock { state in
            state.status |= events & Event.implemented
            updateLine(state)
        }
    }

    /// Whether `event`'s enable bit is set (a sleeping machine wakes on enabled events; the
    /// power button always wakes).
    public func isEnabled(_ event: UInt16) -> Bool { state.withLock { $0.enable & event != 0 } }

    /// After a wake: WAK_STS and the event that woke the machine, SLP_TYP cleared.
    public func wake(by event: UInt16) {
        state.withLock { state in
            state.status |= (Event.wake | event) & Event.implemented
            state.control = Self.sciEnabled
            updateLine(state)
        }
    }

    /// TMR_STS is set whenever the timer's bit 31 changed (every 2^31 ticks, 10 minutes), seen
    /// when the guest next reads a register: the SCI for it is not raised on its own.
    private func refreshTimerStatus(_ state: inout State) {
        let toggles = ticks() >> 31
        if toggles != state.timerToggles {
            state.timerToggles = toggles
            state.status |= Event.timer
        }
    }

    private func updateLine(_ state: State) { line.setLevel(state.status & state.enable != 0) }
}

/// Ticks of an `hz` clock in `nanoseconds`, for the timers computed from the monotonic clock (the
/// PIT, the PM timer): the product needs 128 bits once it passes 2^64 (for the PM timer, 86
/// minutes of host uptime); the quotient fits whenever `hz` is below 1 GHz.
func clockTicks(nanoseconds: UInt64, hz: UInt64) -> UInt64 {
    UInt64(1_000_000_000).dividingFullWidth(nanoseconds.multipliedFullWidth(by: hz)).quotient
}
