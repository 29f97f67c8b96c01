import Synchronization
import VMMCore

/// The ways a PC guest resets or powers itself off, each a small KVM-free port device.
public enum PowerControl {
    /// i8042 command port (0x64): command 0xFE pulses the reset line. Reads say "no controller"
    /// (0xFF), so a guest probing for a keyboard finds none.
    public final class KeyboardControllerReset: BusDevice {
        private let onReset: @Sendable () -> Void
        public init(onReset: @escaping @Sendable () -> Void) { self.onReset = onReset }
        public func read(offset: UInt64, size: Int) -> UInt64 { Bus.mask(size) }
        public func write(offset: UInt64, size: Int, value: UInt64) {
            if value & 0xFF == 0xFE { onReset() }
        }
    }

    /// The PCI reset control register (0xcf9): a write with RST_CPU (bit 2) resets.
    public final class ResetControlRegister: BusDevice {
        let value = Locked<UInt8>(0)
        private let onReset: @Sendable () -> Void
        public init(onReset: @escaping @Sendable () -> Void) { self.onReset = onReset }
        public func read(offset: UInt64, size: Int) -> UInt64 { UInt64(value.withLock { $0 }) }
        public func write(offset: UInt64, size: Int, value newValue: UInt64) {
            value.withLock { $0 = UInt8(truncatingIfNeeded: newValue) & ~0x04 }
            if newValue & 0x04 != 0 { onReset() }
        }
    }

    /// A hardware-reduced ACPI sleep control register: SLP_EN (bit 5) with SLP_TYP (bits 2-4)
    /// equal to the \_S5 value powers off. Reads (as the sleep status register) report wake status 0.
    public final class SleepControl: BusDevice {
        private let powerOffType: UInt8
        private let onPowerOff: @Sendable () -> Void
        public init(powerOffType: UInt8, onPowerOff: @escaping @Sendable () -> Void) {
            self.powerOffType = powerOffType
            self.onPowerOff = onPowerOff
        }
        public func read(offset: UInt64, size: Int) -> UInt64 { 0 }
        public func write(offset: UInt64, size: Int, value: UInt64) {
            if value & 0x20 != 0 && UInt8((value >> 2) & 0x7) == powerOffType { onPowerOff() }
        }
    }
}
