import Devices
import Testing
import VMMCore
import KVM
@testable import Boot

@Suite struct PlatformTests {
    @Test func portWindowsDoNotOverlapAndFitThePortSpace() {
        let devices = Platform.portDevices
        for device in devices {
            guard case .ports(let base, let count) = device.window else { Issue.record("\(device.name) is not a port device"); continue }
            #expect(count > 0 && base + count <= 0x1_0000, "\(device.name)")
        }
        for (index, first) in devices.enumerated() {
            for second in devices[(index + 1)...] {
                #expect(!first.window.range.overlaps(second.window.range), "\(first.name) overlaps \(second.name)")
            }
        }
        var bus = Bus() // the machine's own check: every window inserts
        for device in devices { #expect(throws: Never.self) { try bus.insert(PCTestDevice.Scratch(size: 1), at: device.window.range) } }
    }

    @Test func interruptsAreDistinctAndVirtioAvoidsTheFixedOnes() {
        let fixed = [Platform.pit, Platform.com1, Platform.cmos].compactMap(\.irq)
        #expect(fixed == [0, 4, 8])
        let virtio = (0..<Platform.virtioMaximum).map { Platform.virtio($0) }
        let all = fixed + virtio.compactMap(\.irq)
        #expect(Set(all).count == all.count)
        #expect(all.allSatisfy { $0 < 24 }) // IOAPIC inputs
    }

    @Test func virtioWindowsAreTheTransportsAndSitInTheMMIOHole() {
        for index in 0..<Platform.virtioMaximum {
            let device = Platform.virtio(index)
            #expect(device.window == .mmio(0xC000_0000 + UInt64(index) * 0x1000, size: VirtioMMIORegister.windowSize))
            #expect(device.window.base >= Layout.mmioHoleStart && device.window.base + device.window.length <= Layout.ioAPIC)
            #expect(device.acpi == .init(name: "VR0\(index)", hid: "LNRO0005"))
        }
        #expect(Platform.linuxCommandLine(virtio: 0) == "virtio_mmio.device=512@0xc0000000:5")
    }

    @Test func theDSDTDescribesTheSerialAndTheClock() {
        #expect(Platform.acpiISADevices.map { $0.acpi?.hid } == ["PNP0501", "PNP0B00"])
        #expect(Platform.com1.window == .ports(0x3F8, count: 8) && Platform.cmos.window == .ports(0x70, count: 2))
    }
}

@Suite struct MemoryMapTests {
    @Test func regionsAreOrderedAndDisjoint() {
        for size in [2 * Layout.mib, 128 * Layout.mib, 3 * Layout.gib, 5 * Layout.gib] {
            let regions = MemoryMap(ramSize: size).regions
            for (first, second) in zip(regions, regions.dropFirst()) { #expect(first.end <= second.base, "\(size): \(first.name)") }
            let ram = regions.filter { $0.kind == .ram }.reduce(UInt64(0)) { $0 + $1.length }
            // All RAM is listed but the VGA/ROM window and the reserved bits below 1 MiB.
            #expect(ram == size - (Layout.lowReservedEnd - Layout.mpTable), "\(size)")
        }
    }

    @Test func firmwareViewMergesTheReservedTopOfTheFirstMiB() {
        let view = MemoryMap(ramSize: 128 * Layout.mib).firmwareView
        #expect(view.map { [$0.base, $0.length, UInt64($0.kind.rawValue)] } == [
            [0, 0x9_FC00, 1], [0x9_FC00, 0x400, 2], [0xE_0000, 0x2_0000, 2], [0x10_0000, 127 * Layout.mib, 1],
        ])
    }

    @Test func bootInfoViewReservesTheFirstMiBAndSplitsAtTheHole() {
        let view = MemoryMap(ramSize: 4 * Layout.gib).bootInfoView
        #expect(view.map { [$0.base, $0.length, UInt64($0.kind.rawValue)] } == [
            [0, Layout.mib, 2], [Layout.mib, 3 * Layout.gib - Layout.mib, 1], [4 * Layout.gib, Layout.gib, 1],
        ])
        let map = MemoryMap(ramSize: 4 * Layout.gib)
        #expect(map.lowerKiB == 639 && map.upperKiB == UInt32((3 * Layout.gib - Layout.mib) / 1024))
    }
}

@Suite struct BootProtocolSelectionTests {
    let options = BootOptions(imagePath: "/test/kernel", ramSize: 64 * Layout.mib)

    /// A flat binary: HLT.
    @Test func aFlatBinaryBootsNativelyAndVCPU0StartsAlone() throws {
        let boot = try BootProtocols.select([0xF4], options: options)
        #expect(boot is NativeBoot && boot.image.entry == Layout.defaultLongLoadAddress)
        #expect(boot.entryState(vcpu: 1, reset: SpecialRegisters()) == nil) // waits for INIT/SIPI
        #expect(boot.entryState(vcpu: 0, reset: SpecialRegisters())?.registers.rdi == Layout.bootInfo)
    }

    @Test func aMultibootHeaderPicksMultiboot() throws {
        // magic, flags (bit 16: the a.out addresses follow), checksum, then header/load/end/bss/entry.
        var image = [UInt8](repeating: 0x90, count: 64)
        let flags: UInt32 = 1 << 16
        let words: [UInt32] = [0x1BAD_B002, flags, 0 &- (0x1BAD_B002 &+ flags), 0x10_0000, 0x10_0000, 0x10_0040, 0x10_0040, 0x10_0020]
        for (index, word) in words.enumerated() { LittleEndian.store(word, into: &image, at: index * 4) }
        let boot = try BootProtocols.select(image, options: options)
        #expect(boot is MultibootProtocol && boot.image.entry == 0x10_0020)
    }

    @Test func filesForOtherProtocolsAreRefused() {
        var withInitrd = options
        withInitrd.initrd = BootFile(path: "/test/initrd", bytes: [1])
        #expect(throws: BootError.invalid("--initrd needs a Linux kernel (--kernel)")) { try BootProtocols.select([0xF4], options: withInitrd) }
        var withModule = options
        withModule.modules = [BootFile(path: "/test/module", bytes: [1])]
        #expect(throws: BootError.invalid("--module needs a multiboot kernel")) { try BootProtocols.select([0xF4], options: withModule) }
    }

    @Test func anImageOverTheBootStructuresNamesThem() {
        var low = options
        low.loadAddress = Layout.bootInfo // a flat binary loaded onto the boot-info block
        #expect(throws: BootError.self) { try BootProtocols.select([0xF4], options: low) }
        do { _ = try BootProtocols.select([0xF4], options: low) } catch {
            #expect(error.description.contains("boot-info block"), "\(error)")
        }
    }
}
