import CKVM
import Glibc

/// Which state calls this KVM has, found once per VM: the snapshot code saves what they give and
/// a restore must find the same calls on the destination.
public struct KVMStateSupport: Sendable, Equatable {
    /// Bytes of KVM_GET_XSAVE2's area (KVM_CAP_XSAVE2), 4096 for the legacy KVM_GET_XSAVE.
    public let xsaveSize: Int
    /// KVM_GET/SET_SREGS2 (adds the PAE page-directory pointers).
    public let specialRegisters2: Bool
    /// The MSRs KVM wants saved (KVM_GET_MSR_INDEX_LIST), at most `maximumMSRs`.
    public let msrIndices: [UInt32]

    public static let maximumMSRs = 1024
    /// The largest XSAVE area accepted (a snapshot's claim is checked against it).
    public static let maximumXSAVESize = 1 << 20
}

extension KVMSystem {
    /// What this KVM can save and restore.
    public func stateSupport() throws(KVMError) -> KVMStateSupport {
        let xsave2 = Int(max(0, ckvm_ioctl_val(fd, CKVM_CHECK_EXTENSION, UInt(KVM_CAP_XSAVE2))))
        let sregs2 = ckvm_ioctl_val(fd, CKVM_CHECK_EXTENSION, UInt(KVM_CAP_SREGS2)) > 0
        var indices = [UInt32](repeating: 0, count: KVMStateSupport.maximumMSRs)
        let count = indices.withUnsafeMutableBufferPointer { ckvm_msr_index_list(fd, $0.baseAddress, UInt32($0.count)) }
        guard count >= 0 else { throw KVMError("KVM_GET_MSR_INDEX_LIST", errno: errno) }
        let size = min(max(xsave2, MemoryLayout<kvm_xsave>.size), KVMStateSupport.maximumXSAVESize)
        return KVMStateSupport(xsaveSize: size, specialRegisters2: sregs2,
                               msrIndices: Array(indices.prefix(min(Int(count), KVMStateSupport.maximumMSRs))))
    }
}

/// Everything KVM holds for one vCPU, each part as the bytes of its linux/kvm.h structure
/// (x86-64 layout), so a snapshot can store it and a restore hand it back unchanged.
public struct VCPUState: Sendable, Equatable {
    public var registers: [UInt8] = []
    /// kvm_sregs2 when `specialRegisters2`, else kvm_sregs.
    public var specialRegisters: [UInt8] = []
    public var specialRegisters2 = false
    public var xsave: [UInt8] = []
    public var xcrs: [UInt8] = []
    public var debugRegisters: [UInt8] = []
    public var localAPIC: [UInt8] = []
    public var events: [UInt8] = []
    public var mpState: UInt32 = 0
    /// (index, value) of every MSR KVM listed that this vCPU could read.
    public var msrs: [(index: UInt32, value: UInt64)] = []

    public init() {}

    public static func == (a: VCPUState, b: VCPUState) -> Bool {
        a.registers == b.registers && a.specialRegisters == b.specialRegisters && a.specialRegisters2 == b.specialRegisters2
            && a.xsave == b.xsave && a.xcrs == b.xcrs && a.debugRegisters == b.debugRegisters && a.localAPIC == b.localAPIC
            && a.events == b.events && a.mpState == b.mpState
            && a.msrs.map(\.index) == b.msrs.map(\.index) && a.msrs.map(\.value) == b.msrs.map(\.value)
    }

    /// The byte count each fixed-size part must have, to check a snapshot's parts before use.
    public static func expectedSizes(specialRegisters2: Bool) -> [String: Int] {
        ["registers": MemoryLayout<kvm_regs>.size,
         "special registers": specialRegisters2 ? MemoryLayout<kvm_sregs2>.size : MemoryLayout<kvm_sregs>.size,
         "xcrs": MemoryLayout<kvm_xcrs>.size, "debug registers": MemoryLayout<kvm_debugregs>.size,
         "local APIC": MemoryLayout<kvm_lapic_state>.size, "events": MemoryLayout<kvm_vcpu_events>.size]
    }
}

/// The raw-structure ioctls: one place turns a C structure into bytes and back.
private enum RawState {
    /// Runs a GET ioctl into a zeroed `T` and returns its bytes.
    static func get<T>(_ fd: Int32, _ request: UInt, _ name: String, _ empty: T) throws(KVMError) -> [UInt8] {
        var value = empty
        _ = try retryingEINTR(name) { ckvm_ioctl_ptr(fd, request, &value) }
        return withUnsafeBytes(of: &value) { Array($0) }
    }

    /// Runs a SET ioctl with `bytes` as a `T`; `bytes` must be exactly its size.
    static func set<T>(_ fd: Int32, _ request: UInt, _ name: String, _ bytes: [UInt8], as empty: T) throws(KVMError) {
        var value = empty
        guard bytes.count == MemoryLayout<T>.size else { throw KVMError(name, errno: EINVAL) }
        // Safe: the sizes were checked equal, and T is a plain C structure (any bytes are a value).
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes) }
        _ = try retryingEINTR(name) { ckvm_ioctl_ptr(fd, request, &value) }
    }

    /// A GET or SET with a byte buffer of `size` (XSAVE2's area is larger than kvm_xsave),
    /// 64-byte aligned as XSAVE wants.
    static func area(_ fd: Int32, _ request: UInt, _ name: String, _ bytes: [UInt8]?, size: Int) throws(KVMError) -> [UInt8] {
        // Safe: the buffer is `size` bytes, lent to this one ioctl and freed before returning;
        // KVM reads or writes at most the size it reported for XSAVE2 (or sizeof(kvm_xsave)).
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        if let bytes {
            guard bytes.count == size else { throw KVMError(name, errno: EINVAL) }
            buffer.copyBytes(from: bytes)
        }
        _ = try retryingEINTR(name) { ckvm_ioctl_ptr(fd, request, buffer.baseAddress) }
        return Array(buffer)
    }
}

extension VCPU {
    /// Reads every part of this vCPU's state. The vCPU must be outside KVM_RUN, with any port or
    /// MMIO access it exited for completed (a KVM_RUN with immediate_exit after the exit).
    public func saveState(_ support: KVMStateSupport) throws(KVMError) -> VCPUState {
        var state = VCPUState()
        state.registers = try RawState.get(fd, CKVM_GET_REGS, "KVM_GET_REGS", kvm_regs())
        state.specialRegisters2 = support.specialRegisters2
        state.specialRegisters = support.specialRegisters2
            ? try RawState.get(fd, CKVM_GET_SREGS2, "KVM_GET_SREGS2", kvm_sregs2())
            : try RawState.get(fd, CKVM_GET_SREGS, "KVM_GET_SREGS", kvm_sregs())
        let xsaveRequest = support.xsaveSize > MemoryLayout<kvm_xsave>.size ? CKVM_GET_XSAVE2 : CKVM_GET_XSAVE
        state.xsave = try RawState.area(fd, xsaveRequest, "KVM_GET_XSAVE", nil, size: support.xsaveSize)
        state.xcrs = try RawState.get(fd, CKVM_GET_XCRS, "KVM_GET_XCRS", kvm_xcrs())
        state.debugRegisters = try RawState.get(fd, CKVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", kvm_debugregs())
        state.localAPIC = try RawState.get(fd, CKVM_GET_LAPIC, "KVM_GET_LAPIC", kvm_lapic_state())
        state.events = try RawState.get(fd, CKVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", kvm_vcpu_events())
        var mp = kvm_mp_state()
        _ = try retryingEINTR("KVM_GET_MP_STATE") { ckvm_ioctl_ptr(fd, CKVM_GET_MP_STATE, &mp) }
        state.mpState = mp.mp_state
        for index in support.msrIndices {
            if let value = try modelSpecificRegister(index) { state.msrs.append((index, value)) }
        }
        return state
    }

    /// Puts `state` back, in the order KVM needs: registers, XSAVE, XCRs, special registers (the
    /// APIC base among them) before the local APIC, MSRs, the run state, pending events last.
    /// Throws naming the first part KVM refused; a refused MSR names its index.
    public func restoreState(_ state: VCPUState, _ support: KVMStateSupport) throws(KVMError) {
        try RawState.set(fd, CKVM_SET_REGS, "KVM_SET_REGS", state.registers, as: kvm_regs())
        _ = try RawState.area(fd, CKVM_SET_XSAVE, "KVM_SET_XSAVE", state.xsave, size: support.xsaveSize)
        try RawState.set(fd, CKVM_SET_XCRS, "KVM_SET_XCRS", state.xcrs, as: kvm_xcrs())
        if state.specialRegisters2 {
            try RawState.set(fd, CKVM_SET_SREGS2, "KVM_SET_SREGS2", state.specialRegisters, as: kvm_sregs2())
        } else {
            try RawState.set(fd, CKVM_SET_SREGS, "KVM_SET_SREGS", state.specialRegisters, as: kvm_sregs())
        }
        for msr in state.msrs {
            let set = try retryingEINTR("KVM_SET_MSRS") { ckvm_set_msr(fd, msr.index, msr.value) }
            guard set == 1 else { throw KVMError("KVM_SET_MSRS(0x\(String(msr.index, radix: 16)))", errno: EINVAL) }
        }
        var mp = kvm_mp_state(mp_state: state.mpState)
        _ = try retryingEINTR("KVM_SET_MP_STATE") { ckvm_ioctl_ptr(fd, CKVM_SET_MP_STATE, &mp) }
        try RawState.set(fd, CKVM_SET_LAPIC, "KVM_SET_LAPIC", state.localAPIC, as: kvm_lapic_state())
        try RawState.set(fd, CKVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", state.events, as: kvm_vcpu_events())
        try RawState.set(fd, CKVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", state.debugRegisters, as: kvm_debugregs())
    }

    /// The guest TSC's rate in kHz (KVM_GET_TSC_KHZ), nil when KVM does not say.
    /// KVM's multiprocessing states (KVM_SET_MP_STATE) a VMM sets: running, or reset and
    /// waiting for INIT/SIPI (an AP after the machine wakes from S3).
    public enum MPState: UInt32, Sendable {
        case runnable = 0, initReceived = 2
    }

    public func setMPState(_ state: MPState) throws(KVMError) {
        var mp = kvm_mp_state(mp_state: state.rawValue)
        _ = try retryingEINTR("KVM_SET_MP_STATE") { ckvm_ioctl_ptr(fd, CKVM_SET_MP_STATE, &mp) }
    }

    public func tscKHz() -> UInt32? {
        let value = ckvm_ioctl_val(fd, CKVM_GET_TSC_KHZ, 0)
        return value > 0 ? UInt32(value) : nil
    }

    /// Asks KVM to run the guest TSC at `khz` (KVM_SET_TSC_KHZ); false when it cannot.
    public func setTSCKHz(_ khz: UInt32) -> Bool {
        ckvm_ioctl_val(fd, CKVM_SET_TSC_KHZ, UInt(khz)) == 0
    }
}

/// The VM-wide state KVM holds: the in-kernel interrupt controllers, its PIT, the KVM clock.
public struct VMState: Sendable, Equatable {
    /// kvm_irqchip for the master PIC, the slave PIC and the IOAPIC (empty without an irqchip).
    public var irqchips: [[UInt8]] = []
    /// kvm_pit_state2 (nil without KVM's PIT).
    public var pit: [UInt8]?
    /// The KVM clock's nanoseconds (kvm_clock_data.clock).
    public var clock: UInt64 = 0

    public init() {}

    public static let irqchipSize = MemoryLayout<kvm_irqchip>.size
    public static let pitSize = MemoryLayout<kvm_pit_state2>.size
}

extension VirtualMachine {
    /// Reads the VM-wide state; `irqchip` and `pit` say which parts exist.
    public func saveState(irqchip: Bool, pit: Bool) throws(KVMError) -> VMState {
        var state = VMState()
        if irqchip {
            for chip in UInt32(0)...2 {
                var value = kvm_irqchip()
                value.chip_id = chip
                _ = try retryingEINTR("KVM_GET_IRQCHIP(\(chip))") { ckvm_ioctl_ptr(fd, CKVM_GET_IRQCHIP, &value) }
                state.irqchips.append(withUnsafeBytes(of: &value) { Array($0) })
            }
        }
        if pit { state.pit = try RawState.get(fd, CKVM_GET_PIT2, "KVM_GET_PIT2", kvm_pit_state2()) }
        var clock = kvm_clock_data()
        _ = try retryingEINTR("KVM_GET_CLOCK") { ckvm_ioctl_ptr(fd, CKVM_GET_CLOCK, &clock) }
        state.clock = clock.clock
        return state
    }

    /// Puts the interrupt controllers and the PIT back (before the vCPUs' local APICs).
    public func restoreDevices(_ state: VMState) throws(KVMError) {
        for (index, bytes) in state.irqchips.enumerated() {
            try RawState.set(fd, CKVM_SET_IRQCHIP, "KVM_SET_IRQCHIP(\(index))", bytes, as: kvm_irqchip())
        }
        if let pit = state.pit { try RawState.set(fd, CKVM_SET_PIT2, "KVM_SET_PIT2", pit, as: kvm_pit_state2()) }
    }

    /// Sets the KVM clock (last, just before the vCPUs run): the guest's kvmclock continues from
    /// the saved nanoseconds, as if no time had passed while the VM was saved.
    public func restoreClock(_ nanoseconds: UInt64) throws(KVMError) {
        var clock = kvm_clock_data()
        clock.clock = nanoseconds
        _ = try retryingEINTR("KVM_SET_CLOCK") { ckvm_ioctl_ptr(fd, CKVM_SET_CLOCK, &clock) }
    }
}
