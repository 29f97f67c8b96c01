import CKVM
import Glibc

/// A KVM virtual machine: memory slots and vCPU creation.
public final class VirtualMachine: Sendable {
    let fd: Int32
    let vcpuMmapSize: Int

    init(fd: Int32, vcpuMmapSize: Int) {
        self.fd = fd
        self.vcpuMmapSize = vcpuMmapSize
    }

    deinit { close(fd) }

    /// Maps `size` bytes of host memory at `hostAddress` into guest-physical space at `guestAddress`.
    /// With `logDirty`, KVM records which pages the guest writes (KVM_GET_DIRTY_LOG); setting a
    /// slot again with the same addresses turns that on or off.
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64,
                                    hostAddress: UInt, logDirty: Bool = false) throws(KVMError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: logDirty ? CKVM_MEM_LOG_DIRTY_PAGES : 0, guest_phys_addr: guestAddress,
                                                 memory_size: size, userspace_addr: UInt64(hostAddress))
        _ = try retryingEINTR("KVM_SET_USER_MEMORY_REGION(slot \(slot))") {
            ckvm_ioctl_ptr(fd, CKVM_SET_USER_MEMORY_REGION, &region)
        }
    }

    /// The pages of slot `slot` (of `pages` pages) the guest wrote since the last call (or since
    /// logging began), as a bitmap of 64-page words; collecting re-arms the logging.
    public func dirtyLog(slot: UInt32, pages: Int) throws(KVMError) -> [UInt64] {
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        _ = try retryingEINTR("KVM_GET_DIRTY_LOG(slot \(slot))") {
            bitmap.withUnsafeMutableBufferPointer { ckvm_get_dirty_log(fd, slot, $0.baseAddress) }
        }
        return bitmap
    }

    /// Places the three pages Intel VMX needs for real-mode emulation (unused by other backends).
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        _ = try retryingEINTR("KVM_SET_TSS_ADDR") { ckvm_ioctl_val(fd, CKVM_SET_TSS_ADDR, UInt(address)) }
    }

    /// Places the identity-map page Intel VMX needs for unrestricted-guest-less real mode.
    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var value = address
        _ = try retryingEINTR("KVM_SET_IDENTITY_MAP_ADDR") {
            ckvm_ioctl_ptr(fd, CKVM_SET_IDENTITY_MAP_ADDR, &value)
        }
    }

    /// Creates the in-kernel interrupt controllers: two 8259 PICs, an IOAPIC and a LAPIC per vCPU.
    /// Must come before the first vCPU.
    public func createIRQChip() throws(KVMError) {
        _ = try retryingEINTR("KVM_CREATE_IRQCHIP") { ckvm_ioctl_val(fd, CKVM_CREATE_IRQCHIP, 0) }
    }

    /// Creates KVM's own i8254 PIT: ports 0x40-0x43, and port 0x61 (channel 2's gate and output)
    /// handled in the kernel.
    public func createKernelPIT() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY) // without it KVM leaves port 0x61 unclaimed
        _ = try retryingEINTR("KVM_CREATE_PIT2") { ckvm_ioctl_ptr(fd, CKVM_CREATE_PIT2, &config) }
    }

    /// Drives interrupt line `gsi` of the in-kernel PIC/IOAPIC. Callable from any thread.
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        _ = try retryingEINTR("KVM_IRQ_LINE(\(gsi))") { ckvm_ioctl_ptr(fd, CKVM_IRQ_LINE, &line) }
    }

    /// Sets an interrupt line and says what became of it (KVM_IRQ_LINE_STATUS): > 0 delivered,
    /// 0 coalesced (the controller still had one pending), < 0 masked or ignored.
    public func setIRQLineReportingStatus(_ gsi: UInt32, level: Bool) throws(KVMError) -> Int32 {
        var status: Int32 = 1
        _ = try retryingEINTR("KVM_IRQ_LINE_STATUS(\(gsi))") { ckvm_irq_line_status(fd, gsi, level ? 1 : 0, &status) }
        return status
    }

    /// Creates vCPU `id` and maps its kvm_run structure.
    public func createVCPU(id: UInt32) throws(KVMError) -> VCPU {
        let vcpufd = try retryingEINTR("KVM_CREATE_VCPU(\(id))") { ckvm_ioctl_val(fd, CKVM_CREATE_VCPU, UInt(id)) }
        do {
            return try VCPU(fd: vcpufd, id: id, mmapSize: vcpuMmapSize)
        } catch {
            close(vcpufd)
            throw error
        }
    }
}
