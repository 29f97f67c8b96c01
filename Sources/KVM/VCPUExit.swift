/// Data of a port or MMIO access, borrowed from the vCPU's kvm_run page until the next `run()`.
///
/// Elements are `size` bytes wide (1, 2, 4 or 8) and little-endian; port string I/O has `count` > 1.
public struct ExitData {
    /// Start of the data inside the kvm_run mapping (checked against the mapping size in `VCPU.run`).
    private let base: UnsafeMutableRawPointer
    /// Width of one element in bytes.
    public let size: Int
    /// Number of elements (REP INS/OUTS transfer several per exit).
    public let count: Int

    init(base: UnsafeMutableRawPointer, size: Int, count: Int) {
        self.base = base
        self.size = size
        self.count = count
    }

    /// Element `index`, zero-extended. Out-of-range indexes read as 0.
    @inline(__always)
    public func value(at index: Int = 0) -> UInt64 {
        guard index >= 0, index < count else { return 0 }
        let start = base + index &* size
        var value: UInt64 = 0
        // Safe: VCPU.run checked that size * count bytes from base lie inside the kvm_run mapping.
        for byte in 0..<size {
            value |= UInt64(start.load(fromByteOffset: byte, as: UInt8.self)) << (8 &* byte)
        }
        return value
    }

    /// Stores the low `size` bytes of `value` as element `index`. Out-of-range indexes are ignored.
    @inline(__always)
    public func setValue(_ value: UInt64, at index: Int = 0) {
        guard index >= 0, index < count else { return }
        let start = base + index &* size
        // Safe: as in value(at:).
        for byte in 0..<size {
            start.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 &* byte)), toByteOffset: byte, as: UInt8.self)
        }
    }
}

/// Why KVM_RUN returned, decoded so that nothing outside this module reads the kvm_run union.
public enum VCPUExit {
    /// The guest wrote to an I/O port (OUT/OUTS).
    case ioOut(port: UInt16, data: ExitData)
    /// The guest read from an I/O port (IN/INS): fill `data` before the next run.
    case ioIn(port: UInt16, data: ExitData)
    /// The guest read an address no memory slot backs: fill `data` before the next run.
    case mmioRead(address: UInt64, data: ExitData)
    /// The guest wrote an address no memory slot backs.
    case mmioWrite(address: UInt64, data: ExitData)
    /// HLT with the LAPIC in user space.
    case hlt
    /// Triple fault or similar: the guest is unrecoverable.
    case shutdown
    /// Hardware refused VM entry.
    case failEntry(reason: UInt64, cpu: UInt32)
    /// KVM could not handle an exit (emulation failure and similar).
    case internalError(suberror: UInt32, data: [UInt64])
    /// A guest debug event (breakpoint, single step).
    case debug(exception: UInt32, pc: UInt64, dr6: UInt64, dr7: UInt64)
    /// A system event (reset, shutdown, crash) requested through a paravirtual interface.
    case systemEvent(type: UInt32)
    /// KVM_RUN returned EINTR/EAGAIN: a kick (or immediate_exit) interrupted it.
    case interrupted
    /// The guest can take an interrupt now (KVM_EXIT_IRQ_WINDOW_OPEN, asked for with
    /// `VCPU.requestInterruptWindow`).
    case interruptWindow
    /// KVM_RUN itself failed.
    case runFailed(errno: Int32)
    /// An exit reason this VMM does not handle.
    case unknown(reason: UInt32)
}

extension ExitData {
    /// Memory an ExitData can point at outside a kvm_run page: exit handling is unit-tested with
    /// fake exits over one of these, without /dev/kvm.
    public final class Storage {
        public let size: Int
        public let count: Int
        // Owned here: allocated for size * count bytes in init, freed in deinit, and only reached
        // through the ExitData below, whose accessors stay inside size * count.
        private let bytes: UnsafeMutableRawPointer

        /// Room for `count` elements of `size` bytes (count 1 to 65536, size 1 to 8).
        public init(size: Int, count: Int = 1) {
            self.size = min(max(size, 1), 8)
            self.count = min(max(count, 1), 1 << 16)
            bytes = UnsafeMutableRawPointer.allocate(byteCount: self.size * self.count, alignment: 8)
            bytes.initializeMemory(as: UInt8.self, repeating: 0, count: self.size * self.count)
        }

        deinit { bytes.deallocate() }

        /// The data as an exit carries it; valid while this storage lives.
        public var data: ExitData { ExitData(base: bytes, size: size, count: count) }
    }
}
