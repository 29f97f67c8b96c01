import KVM
import Loaders
import VMMCore

/// Booting a multiboot (v1) kernel: where modules and the info block go, the memory map the
/// kernel is told, and the 32-bit protected-mode entry state the spec prescribes.
enum MultibootBoot {
    /// The E820-style map: low RAM below the MP table, the BIOS areas reserved, RAM from 1 MiB to
    /// the MMIO hole and from 4 GiB on.
    static func memoryMap(ramSize: UInt64) -> [MultibootInfo.Region] {
        MemoryMap(ramSize: ramSize).firmwareView.map { MultibootInfo.Region(base: $0.base, length: $0.length, type: $0.kind.rawValue) }
    }

    /// Copies the modules (page-aligned, after the kernel) and the info block (after them) into
    /// memory; returns the info block's address. Nothing lands in the first page of RAM or on a
    /// kernel segment, and everything stays below 4 GiB and inside RAM below the hole.
    static func place(image: LoadedImage, modules: [(path: String, bytes: [UInt8])], commandLine: String,
                      ramSize: UInt64, memory: GuestMemory) throws(BootError) -> UInt32 {
        let page: UInt64 = 0x1000
        func align(_ value: UInt64) -> UInt64 { (value + page - 1) & ~(page - 1) }
        let lowRAMEnd = Layout.ramRanges(size: ramSize)[0].size
        let kernelEnd = image.segments.map { $0.address + $0.memorySize }.max() ?? 0
        var cursor = max(align(kernelEnd), page)
        var placed: [MultibootInfo.Module] = []
        for module in modules {
            let start = cursor, end = start + UInt64(module.bytes.count)
            guard end <= lowRAMEnd else {
                throw .image(path: module.path, .tooLarge(size: module.bytes.count, room: lowRAMEnd > start ? lowRAMEnd - start : 0))
            }
            do { try memory.write(module.bytes, at: start) } catch { throw .memory(error) }
            placed.append(MultibootInfo.Module(start: UInt32(start), end: UInt32(end), string: module.path))
            cursor = align(end)
        }
        let map = MemoryMap(ramSize: ramSize)
        let info = MultibootInfo(memoryLowerKiB: map.lowerKiB, memoryUpperKiB: map.upperKiB,
                                 commandLine: commandLine, modules: placed, memoryMap: memoryMap(ramSize: ramSize))
        let blob = info.bytes(at: UInt32(cursor))
        guard cursor + UInt64(blob.count) <= lowRAMEnd else {
            throw .invalid("no room in guest RAM for the multiboot information after the kernel and modules")
        }
        do { try memory.write(blob, at: cursor) } catch { throw .memory(error) }
        return UInt32(cursor)
    }

    /// 32-bit protected mode, paging off, flat 4 GiB segments, interrupts off (multiboot 3.2).
    static func specialRegisters(from reset: SpecialRegisters, infoAddress: UInt32) -> SpecialRegisters {
        var sregs = reset
        let code = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, present: true,
                           dpl: 0, db: true, s: true, l: false, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, present: true,
                           dpl: 0, db: true, s: true, l: false, g: true)
        sregs.cs = code
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data)
        sregs.gdt = DescriptorTable(base: UInt64(MultibootInfo.gdtAddress(base: infoAddress)), limit: 3 * 8 - 1)
        sregs.idt = DescriptorTable(base: 0, limit: 0x3FF)
        sregs.cr0 = 0x11 // PE | ET
        (sregs.cr3, sregs.cr4, sregs.efer) = (0, 0, 0)
        return sregs
    }

    /// EAX = the boot loader magic, EBX = the info block, EIP = the kernel's entry.
    static func entryRegisters(entry: UInt64, infoAddress: UInt32) -> Registers {
        var regs = Registers()
        regs.rax = UInt64(Multiboot.bootloaderMagic)
        regs.rbx = UInt64(infoAddress)
        regs.rip = entry
        regs.rflags = 0x2
        return regs
    }
}
