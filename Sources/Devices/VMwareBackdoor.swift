/// The VMware backdoor port as QEMU's PC offers it (`--vmware-backdoor`): a 32-bit `in` of port
/// 0x5658 with EAX = 0x564D5868 ("VMXh") and the command in ECX's low 16 bits answers in EAX,
/// EBX and ECX. GETVERSION (10) is what guests use to detect a VMware-compatible hypervisor:
/// EAX = 6, EBX = the magic, ECX = the VMX type (2). Unlike every other port, it sets registers
/// besides the one the `in` fills, so the vCPU runner calls it with the registers in hand.
public enum VMwareBackdoor {
    public static let port: UInt16 = 0x5658
    public static let magic: UInt32 = 0x564D_5868
    public static let getVersion: UInt16 = 10
    public static let version: UInt32 = 6
    public static let vmxType: UInt32 = 2

    public struct Registers: Equatable, Sendable {
        public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32
        public init(eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32) { (self.eax, self.ebx, self.ecx, self.edx) = (eax, ebx, ecx, edx) }
    }

    /// The registers after the `in`: nil without the magic in EAX (the port then reads all-ones,
    /// as an unclaimed port does). An unknown command answers EAX = all-ones, others unchanged.
    public static func call(_ registers: Registers) -> Registers? {
        guard registers.eax == magic else { return nil }
        var result = registers
        switch UInt16(truncatingIfNeeded: registers.ecx) {
        case getVersion:
            result.eax = version
            result.ebx = magic
            result.ecx = vmxType
        default:
            result.eax = UInt32.max
        }
        return result
    }
}
