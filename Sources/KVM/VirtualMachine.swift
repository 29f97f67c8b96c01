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
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64,
                                    hostAddress: UInt) throws(KVMError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: 0, guest_phys_addr: guestAddress,
                                                 memory_size: size, userspace_addr: UInt64(hostAddress))
        _ = try retryingEINTR("KVM_SET_USER_MEMORY_REGION(slot \(slot))") {
            ckvm_ioctl_ptr(fd, CKVM_SET_USER_MEMORY_REGION, &region)
        }
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
