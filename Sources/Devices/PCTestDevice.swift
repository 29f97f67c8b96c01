import Synchronization
import VMMCore

/// The test ports of QEMU's pc-testdev, which test kernels written for QEMU expect (behind
/// `--test-devices`). Each range is its own BusDevice:
/// - `Scratch` at 0xe0-0xe3 (any width) and 0xe8-0xeb (byte-wide on QEMU; same storage semantics);
/// - `PageFlush` at 0xe4: writing a guest-physical address makes the host drop and re-create its
///   mapping of that page, so the guest's next access faults in again;
/// - `IRQLines` at 0x2000-0x2017: writing a level to 0x2000+n sets ISA IRQ line n;
/// - a 64 KiB `Scratch` of RAM-like MMIO at 0xff000000, every access an exit.
/// The ports and the window are Platform.TestDevices' (the Boot module).
public enum PCTestDevice {
    /// Bytes that read back what was written, at any width and offset inside the window.
    public final class Scratch: BusDevice {
        let bytes: Locked<[UInt8]>
        let size: Int

        public init(size: Int) {
            self.size = size
            bytes = Locked([UInt8](repeating: 0, count: size))
        }

        public func read(offset: UInt64, size width: Int) -> UInt64 {
            bytes.withLock { bytes in offset < UInt64(bytes.count) ? LittleEndian.load(bytes, at: Int(offset), size: width) : 0 }
        }

        public func write(offset: UInt64, size width: Int, value: UInt64) {
            bytes.withLock { bytes in
                if offset < UInt64(bytes.count) { LittleEndian.store(value, size: width, into: &bytes, at: Int(offset)) }
            }
        }
    }

    /// 0xe4: a 32-bit write names a page to flush from the host's mapping.
    public final class PageFlush: BusDevice {
        private let flush: @Sendable (UInt64) -> Void

        /// `flush` gets the page-aligned guest-physical address; it must ignore addresses outside RAM.
        public init(flush: @escaping @Sendable (UInt64) -> Void) {
            self.flush = flush
        }

        public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

        public func write(offset: UInt64, size: Int, value: UInt64) {
            flush(value & ~0xFFF)
        }
    }

    /// 0x2000+n: the written value's truth is ISA IRQ line n's level.
    public final class IRQLines<Line: InterruptLine>: BusDevice {
        private let lines: [Line]

        public init(lines: [Line]) {
            self.lines = lines
        }

        public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

        public func write(offset: UInt64, size: Int, value: UInt64) {
            guard offset < UInt64(lines.count) else { return }
            lines[Int(offset)].setLevel(value != 0)
        }
    }
}
