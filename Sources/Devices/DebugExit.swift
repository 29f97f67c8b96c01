import VMMCore

/// A port that ends the VM, compatible with QEMU's isa-debug-exit: writing V (1, 2 or 4 bytes)
/// asks for process exit status (V << 1) | 1, so any status it yields is odd.
public final class DebugExit: BusDevice {
    /// The conventional port (Platform.debugExit).
    public static let defaultPort: UInt16 = 0xf4

    private let onExit: @Sendable (UInt64) -> Void

    /// `onExit` receives the full status (V << 1) | 1; the OS keeps its low 8 bits.
    public init(onExit: @escaping @Sendable (UInt64) -> Void) {
        self.onExit = onExit
    }

    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        onExit(value << 1 | 1)
    }
}
