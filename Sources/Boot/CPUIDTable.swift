import KVM

/// The CPUID table each vCPU gets: KVM's supported leaves, with the hypervisor bit set, per-vCPU
/// APIC IDs, a swiftvmm vendor leaf at 0x40000000 and KVM's own leaves moved to 0x40000100 (or,
/// with `vendor: .kvm`, KVM's leaves left at 0x40000000 and swiftvmm's at 0x40000100, for
/// kernels that look for kvmclock only at 0x40000001).
public enum CPUIDTable {
    /// Whose hypervisor leaves come first (`--cpuid-vendor`).
    public enum Vendor: String, Sendable, CaseIterable {
        case swiftvmm, kvm
    }

    /// "swiftvmm" followed by four NULs, as EBX, ECX, EDX.
    public static let signature: (UInt32, UInt32, UInt32) = (0x6669_7773, 0x6D6D_7674, 0)
    public static let hypervisorBase: UInt32 = 0x4000_0000
    public static let kvmBase: UInt32 = 0x4000_0100

    /// `paravirtual` false (deterministic mode) offers none of KVM's paravirtual features:
    /// kvmclock and steal time are written by KVM at moments the VMM cannot place.
    public static func build(supported: [CPUIDEntry], vcpu: Int, cpuCount: Int, vendor: Vendor = .swiftvmm, paravirtual: Bool = true) -> [CPUIDEntry] {
        var table: [CPUIDEntry] = []
        for var entry in supported {
            if !paravirtual && entry.function == hypervisorBase + 1 { (entry.eax, entry.edx) = (0, 0) }
            switch entry.function {
            case 1:
                entry.ecx |= 1 << 31 // running under a hypervisor
                entry.ebx = entry.ebx & 0x0000_FFFF | UInt32(min(cpuCount, 255)) << 16 | UInt32(vcpu & 0xFF) << 24
                entry.edx |= 1 << 28 // HTT: the logical-processor count field is valid
            case 0xB, 0x1F:
                entry.edx = UInt32(vcpu)
            case hypervisorBase...(hypervisorBase + 0xFF) where vendor == .swiftvmm:
                // KVM's leaves ("KVMKVMKVM" and its features) stay reachable one block up, where
                // guests that scan 0x40000000 + n * 0x100 for known signatures find them.
                entry.function = entry.function - hypervisorBase + kvmBase
                if entry.function == kvmBase { entry.eax = max(entry.eax, hypervisorBase + 1) - hypervisorBase + kvmBase }
            default:
                break
            }
            table.append(entry)
        }
        switch vendor {
        case .swiftvmm:
            table.append(CPUIDEntry(function: hypervisorBase, eax: hypervisorBase,
                                    ebx: signature.0, ecx: signature.1, edx: signature.2))
        case .kvm:
            // KVM's own leaves stay where it put them; ours answers one block up.
            table.removeAll { (kvmBase...(kvmBase + 0xFF)).contains($0.function) }
            table.append(CPUIDEntry(function: kvmBase, eax: kvmBase, ebx: signature.0, ecx: signature.1, edx: signature.2))
        }
        return table
    }
}
