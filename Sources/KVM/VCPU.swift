import CKVM
import Glibc

/// One vCPU: its fd, its kvm_run mapping and register access.
///
/// `@unchecked Sendable`: the fd and mapping are fixed for the object's life. KVM_RUN is made only
/// by the thread that runs the vCPU. Register and debug calls come from that thread, or from a
/// debugger thread while the vCPU thread is parked outside KVM_RUN (KVM serialises vCPU ioctls
/// on the vCPU's own mutex, so a call from another thread is safe, merely not concurrent with a run).
/// Other threads touch nothing else but `immediate_exit` (a byte KVM documents for exactly that
/// purpose) through `requestImmediateExit`.
public final class VCPU: @unchecked Sendable {
    public let id: UInt32
    let fd: Int32
    private let runPage: UnsafeMutablePointer<kvm_run>
    private let mmapSize: Int
    private static let mmioDataOffset = Int(ckvm_run_mmio_data_offset())

    init(fd: Int32, id: UInt32, mmapSize: Int) throws(KVMError) {
        let mapping = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let mapping, mapping != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw KVMError("mmap(kvm_run)", errno: errno)
        }
        self.fd = fd
        self.id = id
        self.mmapSize = mmapSize
        // Safe: KVM maps at least sizeof(kvm_run) bytes (checked in KVMSystem.init).
        self.runPage = mapping.bindMemory(to: kvm_run.self, capacity: 1)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(runPage), mmapSize)
        close(fd)
    }

    /// Enters the guest until the next exit and decodes it.
    @inline(__always)
    public func run() -> VCPUExit {
        if ckvm_ioctl_val(fd, CKVM_RUN, 0) < 0 {
            let code = errno
            return code == EINTR || code == EAGAIN ? .interrupted : .runFailed(errno: code)
        }
        let run = runPage
        let raw = UnsafeMutableRawPointer(run)
        switch run.pointee.exit_reason {
        case UInt32(KVM_EXIT_IO):
            let size = Int(run.pointee.io.size)
            let count = Int(run.pointee.io.count)
            let offset = Int(truncatingIfNeeded: run.pointee.io.data_offset)
            // KVM puts the data inside the mapping; check anyway so ExitData can never reach past it.
            guard size >= 1, size <= 8, count >= 1, offset >= 0, offset &+ size &* count <= mmapSize else {
                return .unknown(reason: UInt32(KVM_EXIT_IO))
            }
            let data = ExitData(base: raw + offset, size: size, count: count)
            let port = run.pointee.io.port
            return run.pointee.io.direction == UInt8(KVM_EXIT_IO_OUT) ? .ioOut(port: port, data: data)
                                                                      : .ioIn(port: port, data: data)
        case UInt32(KVM_EXIT_MMIO):
            let length = Int(run.pointee.mmio.len)
            guard length >= 1, length <= 8 else { return .unknown(reason: UInt32(KVM_EXIT_MMIO)) }
            let data = ExitData(base: raw + VCPU.mmioDataOffset, size: length, count: 1)
            let address = run.pointee.mmio.phys_addr
            return run.pointee.mmio.is_write != 0 ? .mmioWrite(address: address, data: data)
                                                   : .mmioRead(address: address, data: data)
        case UInt32(KVM_EXIT_HLT):
            return .hlt
        case UInt32(KVM_EXIT_SHUTDOWN):
            return .shutdown
        case UInt32(KVM_EXIT_FAIL_ENTRY):
            return .failEntry(reason: run.pointee.fail_entry.hardware_entry_failure_reason,
                              cpu: run.pointee.fail_entry.cpu)
        case UInt32(KVM_EXIT_INTERNAL_ERROR):
            let count = min(Int(run.pointee.internal.ndata), 16)
            let data = withUnsafeBytes(of: run.pointee.internal.data) { Array($0.bindMemory(to: UInt64.self).prefix(count)) }
            return .internalError(suberror: run.pointee.internal.suberror, data: data)
        case UInt32(KVM_EXIT_DEBUG):
            let arch = run.pointee.debug.arch
            return .debug(exception: arch.exception, pc: arch.pc, dr6: arch.dr6, dr7: arch.dr7)
        case UInt32(KVM_EXIT_SYSTEM_EVENT):
            return .systemEvent(type: run.pointee.system_event.type)
        case UInt32(KVM_EXIT_INTR):
            return .interrupted
        case UInt32(KVM_EXIT_IRQ_WINDOW_OPEN):
            return .interruptWindow
        case let reason:
            return .unknown(reason: reason)
        }
    }

    /// Makes the next (or current, once kicked by a signal) KVM_RUN return at once with EINTR.
    /// Callable from any thread.
    public func requestImmediateExit(_ on: Bool) {
        // An atomic store in C: threads race on this byte by design (kick and clear).
        ckvm_set_immediate_exit(runPage, on ? 1 : 0)
    }

    // MARK: a userspace interrupt controller (deterministic mode; no in-kernel irqchip)

    /// Asks KVM to exit (KVM_EXIT_IRQ_WINDOW_OPEN) as soon as the guest can take an interrupt.
    /// Only the vCPU's own thread, between runs.
    public func requestInterruptWindow(_ on: Bool) {
        ckvm_set_request_interrupt_window(runPage, on ? 1 : 0)
    }

    /// Whether KVM_INTERRUPT may inject now: as of the last exit, the guest has IF set and no
    /// interrupt shadow or pending event.
    public var isReadyForInterrupt: Bool { ckvm_ready_for_interrupt(runPage) != 0 }

    /// Queues external interrupt `vector` for delivery at the next KVM_RUN (KVM_INTERRUPT).
    public func injectInterrupt(vector: UInt8) throws(KVMError) {
        var irq = kvm_interrupt(irq: UInt32(vector))
        _ = try retryingEINTR("KVM_INTERRUPT") { ckvm_ioctl_ptr(fd, CKVM_INTERRUPT, &irq) }
    }

    /// With KVM_CAP_SYNC_REGS, KVM stores the general registers in kvm_run at every exit, so
    /// `syncedRIP` costs no system call.
    public func syncRegistersAtExits(_ on: Bool) { ckvm_sync_registers(runPage, on ? 1 : 0) }

    /// RIP as KVM stored it at the last exit (after `syncRegistersAtExits(true)`).
    public var syncedRIP: UInt64 { UInt64(ckvm_synced_rip(runPage)) }

    public func registers() throws(KVMError) -> Registers {
        var regs = kvm_regs()
        _ = try retryingEINTR("KVM_GET_REGS") { ckvm_ioctl_ptr(fd, CKVM_GET_REGS, &regs) }
        return Registers(regs)
    }

    public func setRegisters(_ registers: Registers) throws(KVMError) {
        var regs = registers.raw
        _ = try retryingEINTR("KVM_SET_REGS") { ckvm_ioctl_ptr(fd, CKVM_SET_REGS, &regs) }
    }

    public func specialRegisters() throws(KVMError) -> SpecialRegisters {
        var sregs = kvm_sregs()
        _ = try retryingEINTR("KVM_GET_SREGS") { ckvm_ioctl_ptr(fd, CKVM_GET_SREGS, &sregs) }
        return SpecialRegisters(sregs)
    }

    public func setSpecialRegisters(_ registers: SpecialRegisters) throws(KVMError) {
        var sregs = registers.raw
        _ = try retryingEINTR("KVM_SET_SREGS") { ckvm_ioctl_ptr(fd, CKVM_SET_SREGS, &sregs) }
    }

    /// One model-specific register (KVM_GET_MSRS); nil when KVM does not know it.
    public func modelSpecificRegister(_ index: UInt32) throws(KVMError) -> UInt64? {
        var value: UInt64 = 0
        let read = try retryingEINTR("KVM_GET_MSRS") { ckvm_get_msr(fd, index, &value) }
        return read == 1 ? value : nil
    }

    /// The local APIC's 1 KiB register page (KVM_GET_LAPIC).
    public func localAPICRegisters() throws(KVMError) -> [UInt8] {
        var state = kvm_lapic_state()
        _ = try retryingEINTR("KVM_GET_LAPIC") { ckvm_ioctl_ptr(fd, CKVM_GET_LAPIC, &state) }
        return withUnsafeBytes(of: state.regs) { Array($0) }
    }

    /// Replaces the local APIC's register page (KVM_SET_LAPIC); `registers` must be 1024 bytes.
    public func setLocalAPICRegisters(_ registers: [UInt8]) throws(KVMError) {
        var state = kvm_lapic_state()
        guard registers.count == MemoryLayout.size(ofValue: state.regs) else { throw KVMError("KVM_SET_LAPIC", errno: EINVAL) }
        withUnsafeMutableBytes(of: &state.regs) { $0.copyBytes(from: registers) }
        _ = try retryingEINTR("KVM_SET_LAPIC") { ckvm_ioctl_ptr(fd, CKVM_SET_LAPIC, &state) }
    }

    /// Sets the CPUID table this vCPU's guest sees.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        guard let buffer = ckvm_cpuid2_alloc(UInt32(entries.count)) else { throw KVMError("calloc", errno: ENOMEM) }
        defer { free(buffer) }
        for (index, entry) in entries.enumerated() {
            ckvm_cpuid2_entry(buffer, UInt32(index)).pointee = entry.raw
        }
        _ = try retryingEINTR("KVM_SET_CPUID2") { ckvm_ioctl_ptr(fd, CKVM_SET_CPUID2, buffer) }
    }
}
