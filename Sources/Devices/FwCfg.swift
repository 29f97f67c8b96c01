import Synchronization
import VMMCore

/// QEMU's fw_cfg in its traditional port form, without DMA: a 16-bit selector at offset 0
/// (port 0x510) picks an item, byte reads at offset 1 (port 0x511) walk through it little-endian.
/// Unknown items and reads past an item's end read zeros.
public final class FwCfg: BusDevice {

    /// The items this machine provides.
    public enum Key {
        public static let signature: UInt16 = 0x00
        public static let id: UInt16 = 0x01
        public static let ramSize: UInt16 = 0x03
        public static let cpuCount: UInt16 = 0x05
        public static let maxRAM: UInt16 = 0x11
    }

    private let items: [UInt16: [UInt8]]
    let state = Locked<(key: UInt16, offset: Int)>((0, 0))

    /// `ramSize` in bytes, `cpus` vCPUs; maximum RAM 0 means no limit beyond RAM.
    public init(ramSize: UInt64, cpus: Int, maxRAM: UInt64 = 0) {
        func little(_ value: UInt64, _ size: Int) -> [UInt8] { LittleEndian.bytes(value, size: size) }
        items = [
            Key.signature: Array("QEMU".utf8),
            Key.id: little(1, 4), // bit 0: the traditional interface; no DMA
            Key.ramSize: little(ramSize, 8),
            Key.cpuCount: little(UInt64(cpus), 2),
            Key.maxRAM: little(maxRAM, 8),
        ]
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset == 1 else {
            // Reading the selector port gives nothing useful on QEMU either.
            return 0
        }
        return state.withLock { state in
            var value: UInt64 = 0
            for byte in 0..<size {
                let item = items[state.key] ?? []
                let data = state.offset < item.count ? item[state.offset] : 0
                value |= UInt64(data) << (8 * UInt64(byte))
                state.offset += 1
            }
            return value
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        // The selector is 16 bits wide; writes to the data port are ignored (read-only items).
        guard offset == 0, size >= 2 else { return }
        state.withLock { $0 = (UInt16(truncatingIfNeeded: value), 0) }
    }
}

/// The 0x8900 "Shutdown" port of the Bochs BIOS: the bytes of "Shutdown" written in order power
/// the machine off. Any other byte starts the match over.
public final class ShutdownPort: BusDevice {
    private static let word = Array("Shutdown".utf8)
    private let matched = Locked(0)
    private let onShutdown: @Sendable () -> Void

    public init(onShutdown: @escaping @Sendable () -> Void) {
        self.onShutdown = onShutdown
    }

    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let complete = matched.withLock { matched -> Bool in
            let byte = UInt8(truncatingIfNeeded: value)
            if byte == Self.word[matched] {
                matched += 1
            } else {
                matched = byte == Self.word[0] ? 1 : 0
            }
            guard matched == Self.word.count else { return false }
            matched = 0
            return true
        }
        if complete { onShutdown() }
    }
}
