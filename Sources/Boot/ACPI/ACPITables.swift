import VMMCore

/// The ACPI tables of every boot path: RSDP → RSDT and XSDT → FADT → DSDT (the ISA and
/// virtio-mmio devices, sleep states), FACS, and the MADT (every vCPU's local APIC, the IOAPIC,
/// ISA overrides). Built as bytes for one base address (Layout.acpiTables, in the BIOS area where
/// kernels scan for the RSDP).
///
/// Two kinds of FADT: `full`, a PC's (PM1a event and control blocks, the PM timer, the reset
/// register, SCI on IRQ 9, a FACS with the waking vector; \_S3 and \_S5), and `reduced`, the
/// hardware-reduced one Linux boots with by default (a sleep control register for power-off only).
public struct ACPITables: Sendable {
    /// Which FADT, and with it which power-management hardware the guest is told about.
    public enum Mode: String, Sendable, CaseIterable {
        case full, reduced
    }

    public var cpus: Int
    public var mode: Mode = .reduced
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
    /// The \_S5 sleep type the guest writes to power off, and \_S3's (suspend to RAM; full mode).
    public static let powerOffSleepType: UInt8 = 5
    public static let suspendSleepType: UInt8 = 1
    /// The PM1a event block (status, enable), PM1a control block and PM timer (full mode).
    public var pmPorts = (event: UInt16(Platform.acpiPM.window.base), control: UInt16(Platform.acpiPM.window.base + 4),
                          timer: UInt16(Platform.acpiPM.window.base + 8))
    /// The SCI's ISA IRQ (full mode).
    public static let sciIRQ: UInt8 = 9
    /// Where the FACS sits in the blob (64-byte aligned), so the wake path can find the vector.
    public static let facsOffset = 0x40
    public init(cpus: Int, virtioDevices: [PlatformDevice], mode: Mode = .reduced) {
        self.cpus = cpus
        self.virtioDevices = virtioDevices
        self.mode = mode
    }

    /// The FACS's guest-physical address for tables placed at `base`.
    public static func facsAddress(base: UInt64) -> UInt64 { base + UInt64(facsOffset) }
    /// Offsets in the FACS: the 32-bit firmware waking vector, and the 64-bit one.
    public static let wakingVectorOffset: UInt64 = 12, extendedWakingVectorOffset: UInt64 = 24

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
        while blob.count < Self.facsOffset { blob.append(0) }
        let facs = place(Self.facs) // at facsOffset: 64-byte aligned, as the FACS must be
        let dsdt = place(Self.table("DSDT", revision: 2, body: dsdtBody))
        let fadt = place(Self.table("FACP", revision: 6, body: fadtBody(dsdt: dsdt, facs: facs)))
        let madt = place(Self.table("APIC", revision: 5, body: madtBody))
        let xsdt = place(Self.table("XSDT", revision: 1, body: le(fadt, 8) + le(madt, 8)))
        let rsdt = place(Self.table("RSDT", revision: 1, body: le(fadt, 4) + le(madt, 4)))
        let rsdp = Self.rsdp(xsdt: xsdt, rsdt: rsdt)
        blob.replaceSubrange(0..<36, with: rsdp)
        return (blob, rsdpAddress)
    }

    /// Writes the tables at Layout.acpiTables (the RSDP first, 16-byte aligned in the BIOS area).
    public func write(to memory: GuestMemory) throws(BootError) {
        let (blob, _) = bytes(at: Layout.acpiTables)
        guard UInt64(blob.count) <= Layout.acpiTablesEnd - Layout.acpiTables else { throw .invalid("ACPI tables too large") }
        do { try memory.write(blob, at: Layout.acpiTables) } catch { throw .memory(error) }
    }

    /// RSDP revision 2: checksum over the first 20 bytes, extended checksum over all 36.
    static func rsdp(xsdt: UInt64, rsdt: UInt64) -> [UInt8] {
        var bytes = Array("RSD PTR ".utf8) + [0] + oemID + [2] + le(rsdt, 4) + le(36, 4) + le(xsdt, 8) + [0, 0, 0, 0]
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
        // \_S5 (and in full mode \_S3): sleep type values for SLP_TYPa/b.
        let s5 = AML.name("\\_S5_", .package([.integer(UInt64(Self.powerOffSleepType)), .integer(0)]))
        let s3 = AML.name("\\_S3_", .package([.integer(UInt64(Self.suspendSleepType)), .integer(0)]))
        return AML.scope("\\_SB_", isa + devices).bytes + (mode == .full ? s3.bytes : []) + s5.bytes
    }

    /// The FACS (64 bytes): signature, length, hardware signature, the waking vectors (zero until
    /// the guest sets them before it sleeps), the global lock, flags, version 2.
    static var facs: [UInt8] {
        var bytes = Array("FACS".utf8) + le(64, 4) + le(0x5357_564D, 4) + le(0, 4) + le(0, 4) + le(0, 4) + le(0, 8) + [2, 0, 0, 0]
        bytes += le(0, 4) // OSPM flags
        while bytes.count < 64 { bytes.append(0) }
        return bytes
    }

    /// FADT revision 6 (276 bytes). Reduced: HW_REDUCED_ACPI, the DSDT, and a sleep control/status
    /// register pair in I/O space. Full: SCI on IRQ 9, no SMI command port (ACPI mode is always
    /// on: SCI_EN reads 1), the PM1a blocks and the 32-bit PM timer in I/O space (both as the
    /// legacy fields and as generic address structures), the reset register (0xcf9 <- 6), the
    /// CMOS century register, the FACS.
    func fadtBody(dsdt: UInt64, facs: UInt64) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 276 - 36)
        func put(_ value: UInt64, _ offset: Int, _ width: Int) {
            body.replaceSubrange((offset - 36)..<(offset - 36 + width), with: le(value, width))
        }
        /// A generic address structure in I/O space: `bits` wide, accessed with `access` (1 byte,
        /// 2 word, 3 dword).
        func io(_ offset: Int, port: UInt16, bits: UInt8, access: UInt8) {
            body.replaceSubrange((offset - 36)..<(offset - 36 + 12), with: [1, bits, 0, access] + le(UInt64(port), 8))
        }
        put(dsdt & 0xFFFF_FFFF, 40, 4)
        put(1, 131, 1) // FADT minor version 1 (ACPI 6.1)
        put(dsdt, 140, 8) // X_DSDT
        switch mode {
        case .reduced:
            put(1 << 20 | 1 << 4, 112, 4) // flags: HW_REDUCED_ACPI, PWR_BUTTON (no fixed power button)
            // Sleep control (244) and status (256) registers: I/O space, 8 bits, byte access.
            for offset in [244, 256] { io(offset, port: sleepControlPort, bits: 8, access: 1) }
        case .full:
            put(facs & 0xFFFF_FFFF, 36, 4) // FIRMWARE_CTRL
            put(UInt64(Self.sciIRQ), 46, 2)
            put(UInt64(pmPorts.event), 56, 4) // PM1a_EVT_BLK
            put(UInt64(pmPorts.control), 64, 4) // PM1a_CNT_BLK
            put(UInt64(pmPorts.timer), 76, 4) // PM_TMR_BLK
            put(4, 88, 1); put(2, 89, 1); put(4, 91, 1) // PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN
            put(0x32, 108, 1) // CENTURY: the CMOS register holding it
            put(1, 109, 2) // IAPC_BOOT_ARCH: LEGACY_DEVICES (the UART, the RTC, the PIT); no 8042
            // flags: WBINVD, PROC_C1, SLP_BUTTON (none fixed), TMR_VAL_EXT (32-bit timer), RESET_REG_SUP
            put(1 << 0 | 1 << 2 | 1 << 5 | 1 << 8 | 1 << 10, 112, 4)
            io(116, port: UInt16(Platform.resetControl.window.base), bits: 8, access: 1)
            put(0x06, 128, 1) // RESET_VALUE: RST_CPU | SYS_RST
            put(facs, 132, 8) // X_FIRMWARE_CTRL
            io(148, port: pmPorts.event, bits: 32, access: 2)
            io(172, port: pmPorts.control, bits: 16, access: 2)
            io(208, port: pmPorts.timer, bits: 32, access: 3)
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
        // The SCI (full mode): ISA IRQ 9 on GSI 9, level-triggered, active high.
        if mode == .full { body += [2, 10, 0, Self.sciIRQ] + le(UInt64(Self.sciIRQ), 4) + le(0b1101, 2) }
        return body
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
