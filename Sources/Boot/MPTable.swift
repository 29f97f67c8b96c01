import VMMCore

/// An Intel MultiProcessor Specification 1.4 table: the floating pointer and a configuration
/// table listing every vCPU's local APIC, the ISA bus, the IOAPIC and how ISA IRQs reach it, so
/// kernels that read MP tables find the CPUs and interrupt routing without ACPI.
public struct MPTable: Sendable {
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    public static let ioAPICAddress: UInt32 = 0xFEC0_0000
    static let localAPICVersion: UInt8 = 0x14
    static let ioAPICVersion: UInt8 = 0x11

    public let cpuCount: Int
    /// CPUID leaf 1 EAX and EDX of the vCPUs, as the processor entries carry them.
    public let cpuSignature: UInt32
    public let cpuFeatures: UInt32

    public init(cpuCount: Int, cpuSignature: UInt32 = 0x600, cpuFeatures: UInt32 = 0x201) {
        self.cpuCount = cpuCount
        self.cpuSignature = cpuSignature
        self.cpuFeatures = cpuFeatures
    }

    /// The IOAPIC's ID: the first ID after the vCPUs' APIC IDs (0 ... cpuCount - 1).
    public var ioAPICID: UInt8 { UInt8(cpuCount) }

    /// The configuration table (written at `configAddress`, Layout.mpConfigTable) and the 16-byte
    /// floating pointer to it (written at Layout.mpTable, the last KiB of base memory where kernels
    /// look). The table is apart because 64 vCPUs need more than that KiB.
    public func bytes(configAt configAddress: UInt32) -> (pointer: [UInt8], configuration: [UInt8]) {
        var table: [UInt8] = []
        var entries = 0
        for cpu in 0..<cpuCount {
            table += [0, UInt8(cpu), Self.localAPICVersion, cpu == 0 ? 0x03 : 0x01] // enabled, BSP
            table += le(cpuSignature) + le(cpuFeatures) + [UInt8](repeating: 0, count: 8)
            entries += 1
        }
        table += [1, 0] + Array("ISA   ".utf8) // bus 0
        table += [2, ioAPICID, Self.ioAPICVersion, 1] + le(Self.ioAPICAddress)
        entries += 2
        for irq in UInt8(0)..<16 where irq != 2 { // ISA IRQ n -> IOAPIC pin n (KVM's default routing)
            table += [3, 0] + le(UInt16(0)) + [0, irq, ioAPICID, irq]
            entries += 1
        }
        table += [4, 3] + le(UInt16(0)) + [0, 0, 0xFF, 0] // ExtINT on every LINT0
        table += [4, 1] + le(UInt16(0)) + [0, 0, 0xFF, 1] // NMI on every LINT1
        entries += 2

        var header = Array("PCMP".utf8) + le(UInt16(44 + table.count)) + [4, 0]
        header += Array("SWIFTVMM".utf8) + Array("SWIFTVMM    ".utf8)
        header += le(UInt32(0)) + le(UInt16(0)) + le(UInt16(entries)) + le(Self.localAPICAddress)
        header += le(UInt16(0)) + [0, 0]
        var config = header + table
        config[7] = Self.checksum(config)

        var pointer = Array("_MP_".utf8) + le(configAddress) + [1, 4, 0] + [0, 0, 0, 0, 0]
        pointer[10] = Self.checksum(pointer)
        return (pointer, config)
    }

    /// Writes the floating pointer and the configuration table where Layout puts them.
    public func write(to memory: GuestMemory) throws(GuestMemoryError) {
        let (pointer, configuration) = bytes(configAt: UInt32(Layout.mpConfigTable))
        try memory.write(pointer, at: Layout.mpTable)
        try memory.write(configuration, at: Layout.mpConfigTable)
    }

    /// The byte that makes all bytes sum to zero (mod 256).
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    private func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { LittleEndian.bytes(value) }
}
