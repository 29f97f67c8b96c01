import CKVM
import Glibc

/// What KVM_SET_GUEST_DEBUG arms on a vCPU: single-stepping, int3 exits, and up to four
/// instruction breakpoints in the debug registers.
public struct GuestDebug: Sendable, Equatable {
    /// Exit with a debug exit (exception 1, DR6.BS) after every instruction.
    public var singleStep = false
    /// Make int3 exit to the VMM (exception 3) instead of reaching the guest's IDT.
    public var softwareBreakpoints = false
    /// Execution breakpoints in DR0-DR3 (at most `maxHardwareBreakpoints`).
    public var hardwareBreakpoints: [UInt64] = []

    public static let maxHardwareBreakpoints = 4

    public init(singleStep: Bool = false, softwareBreakpoints: Bool = false, hardwareBreakpoints: [UInt64] = []) {
        self.singleStep = singleStep
        self.softwareBreakpoints = softwareBreakpoints
        self.hardwareBreakpoints = hardwareBreakpoints
    }

    /// Nothing armed: guest debugging off.
    public var isOff: Bool { !singleStep && !softwareBreakpoints && hardwareBreakpoints.isEmpty }

    /// DR7 for the armed breakpoints: local enable per slot, R/W = 00 (execute), LEN = 00
    /// (1 byte, as the SDM requires for instruction breakpoints); bit 10 reads as 1.
    var dr7: UInt64 {
        hardwareBreakpoints.indices.reduce(UInt64(0x400)) { $0 | (1 << (2 * UInt64($1))) }
    }
}

/// What KVM_TRANSLATE says about one guest-virtual address on a vCPU.
public struct Translation: Sendable, Equatable {
    public let physicalAddress: UInt64
    public let valid: Bool
    public let writeable: Bool
}

/// x87 and SSE state (KVM_GET_FPU), for debuggers.
public struct FPUState: Sendable, Equatable {
    /// st0-st7 as 10-byte extended values.
    public var st: [[UInt8]] = Array(repeating: Array(repeating: 0, count: 10), count: 8)
    public var fcw: UInt16 = 0x37f, fsw: UInt16 = 0
    /// Abridged tag word as KVM reports it (one bit per register).
    public var ftwx: UInt8 = 0
    public var lastOpcode: UInt16 = 0
    public var lastIP: UInt64 = 0, lastDP: UInt64 = 0
    /// xmm0-xmm15, 16 bytes each.
    public var xmm: [[UInt8]] = Array(repeating: Array(repeating: 0, count: 16), count: 16)
    public var mxcsr: UInt32 = 0x1f80

    public init() {}
}

extension VCPU {
    /// Arms (or with `.init()` disarms) guest debugging on this vCPU. Like every register call,
    /// only while the vCPU is not inside KVM_RUN.
    public func setGuestDebug(_ debug: GuestDebug) throws(KVMError) {
        guard debug.hardwareBreakpoints.count <= GuestDebug.maxHardwareBreakpoints else {
            throw KVMError("KVM_SET_GUEST_DEBUG", errno: ENOSPC)
        }
        var request = kvm_guest_debug()
        if !debug.isOff {
            request.control = UInt32(KVM_GUESTDBG_ENABLE)
            if debug.singleStep { request.control |= UInt32(KVM_GUESTDBG_SINGLESTEP) }
            if debug.softwareBreakpoints { request.control |= UInt32(KVM_GUESTDBG_USE_SW_BP) }
            if !debug.hardwareBreakpoints.isEmpty {
                request.control |= UInt32(KVM_GUESTDBG_USE_HW_BP)
                withUnsafeMutableBytes(of: &request.arch.debugreg) { raw in
                    let registers = raw.bindMemory(to: UInt64.self)
                    for (slot, address) in debug.hardwareBreakpoints.enumerated() { registers[slot] = address }
                    registers[7] = debug.dr7
                }
            }
        }
        _ = try retryingEINTR("KVM_SET_GUEST_DEBUG") { ckvm_ioctl_ptr(fd, CKVM_SET_GUEST_DEBUG, &request) }
    }

    /// Translates a guest-virtual address through the vCPU's current paging mode.
    public func translate(_ virtualAddress: UInt64) throws(KVMError) -> Translation {
        var request = kvm_translation()
        request.linear_address = virtualAddress
        _ = try retryingEINTR("KVM_TRANSLATE") { ckvm_ioctl_ptr(fd, CKVM_TRANSLATE, &request) }
        return Translation(physicalAddress: request.physical_address, valid: request.valid != 0,
                           writeable: request.writeable != 0)
    }

    /// The guest's MXCSR, from its XSAVE area (legacy region, byte 24). KVM_GET_FPU's copy is
    /// not it on every KVM: on PVM it reads 0 and KVM_SET_FPU leaves the live value alone.
    public func mxcsr() throws(KVMError) -> UInt32 {
        try withXSAVEArea(write: false) { $0.load(fromByteOffset: Self.xsaveMXCSROffset, as: UInt32.self) }
    }

    /// Replaces MXCSR only (KVM_GET_XSAVE, then KVM_SET_XSAVE with the rest unchanged).
    public func setMXCSR(_ value: UInt32) throws(KVMError) {
        try withXSAVEArea(write: true) { $0.storeBytes(of: value, toByteOffset: Self.xsaveMXCSROffset, as: UInt32.self) }
    }

    static let xsaveMXCSROffset = 24

    /// Runs `body` on the vCPU's 4 KiB XSAVE area (struct kvm_xsave), writing it back when asked.
    private func withXSAVEArea<R>(write: Bool, _ body: (UnsafeMutableRawPointer) -> R) throws(KVMError) -> R {
        // Safe: the buffer is exactly sizeof(struct kvm_xsave), 64-byte aligned as XSAVE wants,
        // lent to the two ioctls and `body` only for this call, and freed before returning.
        let size = MemoryLayout<kvm_xsave>.size
        let area = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { area.deallocate() }
        area.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        _ = try retryingEINTR("KVM_GET_XSAVE") { ckvm_ioctl_ptr(fd, CKVM_GET_XSAVE, area) }
        let result = body(area)
        if write { _ = try retryingEINTR("KVM_SET_XSAVE") { ckvm_ioctl_ptr(fd, CKVM_SET_XSAVE, area) } }
        return result
    }

    /// The vCPU's x87/SSE registers.
    public func fpu() throws(KVMError) -> FPUState {
        var raw = kvm_fpu()
        _ = try retryingEINTR("KVM_GET_FPU") { ckvm_ioctl_ptr(fd, CKVM_GET_FPU, &raw) }
        var state = FPUState()
        withUnsafeBytes(of: raw.fpr) { bytes in
            for index in 0..<8 { state.st[index] = Array(bytes[(index * 16)..<(index * 16 + 10)]) }
        }
        withUnsafeBytes(of: raw.xmm) { bytes in
            for index in 0..<16 { state.xmm[index] = Array(bytes[(index * 16)..<(index * 16 + 16)]) }
        }
        (state.fcw, state.fsw, state.ftwx, state.lastOpcode) = (raw.fcw, raw.fsw, raw.ftwx, raw.last_opcode)
        (state.lastIP, state.lastDP) = (raw.last_ip, raw.last_dp)
        state.mxcsr = (try? mxcsr()) ?? raw.mxcsr // the XSAVE copy is the live one (see mxcsr())
        return state
    }
}

extension VCPU {
    /// Queues exception `vector` (without an error code) for delivery at the next KVM_RUN
    /// (KVM_GET/SET_VCPU_EVENTS), as if the instruction at rip had raised it.
    public func injectException(_ vector: UInt8) throws(KVMError) {
        var events = kvm_vcpu_events()
        _ = try retryingEINTR("KVM_GET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd, CKVM_GET_VCPU_EVENTS, &events) }
        events.exception.injected = 1
        events.exception.nr = vector
        events.exception.has_error_code = 0
        events.exception.error_code = 0
        events.flags = 0 // change only the exception state
        _ = try retryingEINTR("KVM_SET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd, CKVM_SET_VCPU_EVENTS, &events) }
    }

    /// Queues interrupt `vector` for delivery through the guest's IDT at the next KVM_RUN, as an
    /// `int imm8` whose RIP was already moved past it would deliver it at CPL 0 (the frame's
    /// return address is the current RIP). False, with nothing changed, when an event is
    /// already being delivered.
    public func injectInterrupt(_ vector: UInt8) throws(KVMError) -> Bool {
        var events = kvm_vcpu_events()
        _ = try retryingEINTR("KVM_GET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd, CKVM_GET_VCPU_EVENTS, &events) }
        guard events.interrupt.injected == 0, events.exception.injected == 0, events.exception.pending == 0 else { return false }
        events.interrupt.injected = 1
        events.interrupt.nr = vector
        events.interrupt.soft = 0
        events.flags = 0
        _ = try retryingEINTR("KVM_SET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd, CKVM_SET_VCPU_EVENTS, &events) }
        return true
    }
}
