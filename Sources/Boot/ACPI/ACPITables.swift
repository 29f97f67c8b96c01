/// The ACPI tables swiftvmm hands a Linux guest: RSDP → XSDT → FADT (hardware-reduced, with a
/// sleep control register for power-off) → DSDT (virtio-mmio devices, \_S5), and the MADT
/// (every vCPU's local APIC, the IOAPIC, ISA overrides). Built as bytes for one base address.
public struct ACPITables: Sendable {
    public var cpus: Int
    /// virtio-mmio devices (Platform.virtio), described with their window and interrupt.
    public var virtioDevices: [PlatformDevice]
    /// Legacy ISA devices described by their PNP id, ports and interrupt. On a hardware-reduced
    /// machine Linux sets up no ISA interrupts of its own (no 8259), so the UART's and the RTC's
    /// interrupts reach it only through these descriptions.
    public var isaDevices: [PlatformDevice] = Platform.acpiISADevices
    public var localAPIC: UInt32 = 0xFEE0_0000
    public var ioAPIC: UInt32 = 0xFEC0_0000
    /// The port of the hardware-reduced sleep control (and status) register.
    public var sleepControlPort = UInt16(Platform.sleepControl.window.base)
    /// The \_S5 sleep type the guest writes to power off.
    public static let powerOffSleepType: UInt8 = 5

    public init(cpus: Int, virtioDevices: [PlatformDevice]) {
        self.cpus = cpus
        self.virtioDevices = virtioDevices
    }

    static let oemID = Array("SWVMM ".utf8)
    static let oemTableID = Array("SWIFTVMM".utf8)

    /// The tables laid out from `base` (16-byte aligned pieces); the RSDP comes first.
    public func bytes(at base: UInt64) -> (blob: [UInt8], rsdp: UInt64) {
        var blob: [UInt8] = []
        func place(_ table: [UInt8]) -> UInt64 {
            while blob.count % 16 != 0 { blob.append(0) }
            let address = base + UInt64(blob.count)
            blob += table
            return address
        }
        let rsdpAddress = place([UInt8](repeating: 0, count: 36))
        let dsdt = place(Self.table("DSDT", revision: 2, body: dsdtBody))
        let fadt = place(Self.table("FACP", revision: 6, body: fadtBody(dsdt: dsdt)))
        let madt = place(Self.table("APIC", revision: 5, body: madtBody))
        let xsdt = place(Self.table("XSDT", revision: 1, body: le(fadt, 8) + le(madt, 8)))
        let rsdp = Self.rsdp(xsdt: xsdt)
        blob.replaceSubrange(0..<36, with: rsdp)
        return (blob, rsdpAddress)
    }

    /// RSDP revision 2: checksum over the first 20 bytes, extended checksum over all 36.
    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var bytes = Array("RSD PTR ".utf8) + [0] + oemID + [2] + le(0, 4) + le(36, 4) + le(xsdt, 8) + [0, 0, 0, 0]
        bytes[8] = checksum(bytes[0..<20])
        bytes[32] = checksum(bytes)
        return bytes
    }

    /// A system description table: the 36-byte header, then `body`, with its checksum.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var bytes = Array(signature.utf8) + le(UInt64(36 + body.count), 4) + [revision, 0] + oemID + oemTableID
            + le(1, 4) + Array("SVMM".utf8) + le(1, 4) + body
        bytes[9] = checksum(bytes)
        return bytes
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt8 {
        0 &- bytes.reduce(UInt8(0)) { $0 &+ $1 }
    }

    var dsdtBody: [UInt8] {
        let devices = virtioDevices.enumerated().map { index, device in
            AML.device(device.acpi?.name ?? "VR" + String(index, radix: 16).uppercased().leftPadded(2), [
                .name("_HID", .string(device.acpi?.hid ?? "LNRO0005")),
                .name("_UID", .integer(UInt64(index))),
                .name("_CRS", .resources([.memory32Fixed(base: UInt32(truncatingIfNeeded: device.window.base),
                                                         length: UInt32(truncatingIfNeeded: device.window.length), writable: true),
                                          .interrupt(device.irq ?? 0, levelTriggered: true, activeLow: false)])),
            ])
        }
        let isa = isaDevices.enumerated().map { index, device in
            AML.device(device.acpi?.name ?? "ISA\(index)", [
                .name("_HID", .string(device.acpi?.hid ?? "PNP0C02")),
                .name("_UID", .integer(UInt64(index))),
                .name("_CRS", .resources([.io(base: UInt16(truncatingIfNeeded: device.window.base), length: UInt8(clamping: device.window.length)),
                                          .interrupt(device.irq ?? 0, levelTriggered: false, activeLow: false)])),
            ])
        }
        // \_S5: sleep type values for SLP_TYPa/b, as a hardware-reduced FADT's sleep control expects.
        let s5 = AML.name("\\_S5_", .package([.integer(UInt64(Self.powerOffSleepType)), .integer(0)]))
        return AML.scope("\\_SB_", isa + devices).bytes + s5.bytes
    }

    /// FADT revision 6 (276 bytes): HW_REDUCED_ACPI, the DSDT, and a sleep control/status
    /// register pair in I/O space (generic address structures).
    func fadtBody(dsdt: UInt64) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 276 - 36)
        func put(_ value: UInt64, _ offset: Int, _ width: Int) {
            body.replaceSubrange((offset - 36)..<(offset - 36 + width), with: le(value, width))
        }
        put(dsdt & 0xFFFF_FFFF, 40, 4)
        put(1 << 20 | 1 << 4, 112, 4) // flags: HW_REDUCED_ACPI, PWR_BUTTON (no fixed power button)
        put(1, 131, 1) // FADT minor version 1 (ACPI 6.1)
        put(dsdt, 140, 8) // X_DSDT
        // Sleep control (244) and status (256) registers: I/O space, 8 bits, byte access.
        for offset in [244, 256] {
            body.replaceSubrange((offset - 36)..<(offset - 36 + 12),
                                 with: [1, 8, 0, 1] + le(UInt64(sleepControlPort), 8))
        }
        put(Array("SWIFTVMM".utf8).reversed().reduce(0) { $0 << 8 | UInt64($1) }, 268, 8) // hypervisor vendor identity
        return body
    }

    var madtBody: [UInt8] {
        var body = le(UInt64(localAPIC), 4) + le(1, 4) // PCAT_COMPAT: there are 8259s too
        for cpu in 0..<cpus { body += [0, 8, UInt8(cpu), UInt8(cpu)] + le(1, 4) } // processor local APIC, enabled
        body += [1, 12, 0, 0] + le(UInt64(ioAPIC), 4) + le(0, 4) // IOAPIC id 0 at GSI base 0
        // ISA IRQ 0 is GSI 0 on this machine (not the PC-typical 2), stated so the guest does not assume otherwise.
        body += [2, 10, 0, 0] + le(0, 4) + le(0, 2)
        return body
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
