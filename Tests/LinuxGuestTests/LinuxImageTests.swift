@testable import Boot
import Foundation
import Loaders
import Testing

/// The loaders against the real kernels `make test-linux` fetched and built: Debian's bzImage and
/// its extracted vmlinux, our small vmlinux; and truncated or corrupted copies of them, which the
/// command line refuses with one line and status 66.
@Suite struct LinuxImageTests {
    func bytes(_ file: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: Linux.kernels + "/" + file))) }

    @Test func debiansBzImageHeaderAndZeroPage() throws {
        guard Linux.require("stock/vmlinuz") else { return }
        let image = try bytes("stock/vmlinuz")
        #expect(LinuxKernel.isBzImage(image))
        let kernel = try LinuxKernel.loadBzImage(image)
        let header = kernel.header
        #expect(header.version >= 0x020F, "boot protocol \(String(header.version, radix: 16))")
        #expect(header.xloadflags & 1 != 0 && header.loadFlags & 1 != 0 && header.relocatable)
        #expect(header.preferredAddress == 0x100_0000 && header.kernelAlignment == 0x20_0000)
        #expect(header.commandLineSize == 2047 && header.initSize > UInt32(image.count))
        #expect(kernel.kernel.entry == 0x100_0200)
        #expect(kernel.kernel.segments[0].bytes.count == image.count - (header.setupSectors + 1) * 512)
        // The zero page keeps the kernel's own header bytes and adds ours.
        let page = ZeroPage(headerBytes: kernel.headerBytes, commandLineAddress: 0x51000, commandLineSize: header.commandLineSize,
                            initrd: (0x1F00_0000, 0x1000), e820: [.init(base: 0, size: 0x9FC00, type: 1)], rsdpAddress: 0xE0000).bytes
        #expect(Array(page[0x1F1..<0x202]) == Array(image[0x1F1..<0x202]))
        #expect(Array(page[0x202..<0x206]) == Array("HdrS".utf8) && page[0x210] == 0xFF && page[0x1E8] == 1)
    }

    @Test func vmlinuxKernelsEnterAtStartup64() throws {
        guard Linux.require("stock/vmlinux", "small/vmlinux") else { return }
        for file in ["stock/vmlinux", "small/vmlinux"] {
            let kernel = try LinuxKernel.loadVmlinux(try bytes(file))
            #expect(kernel.kernel.entry == 0x100_0000, "\(file): entry \(String(kernel.kernel.entry, radix: 16))")
            #expect(kernel.kernel.segments.allSatisfy { $0.address >= 0x100_0000 }, "\(file)")
        }
    }

    @Test func truncatedAndCorruptedKernelsGetOneLine() throws {
        guard Linux.require("stock/vmlinuz", "small/vmlinux") else { return }
        let directory = NSTemporaryDirectory() + "swiftvmm-badkernels-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bzImage = try bytes("stock/vmlinuz"), vmlinux = try bytes("small/vmlinux")
        var noMagic = bzImage
        noMagic.replaceSubrange(0x202..<0x206, with: [0, 0, 0, 0])
        var badELF = vmlinux
        badELF[4] = 9 // neither ELFCLASS32 nor ELFCLASS64
        let cases: [(String, [UInt8])] = [("truncated-bzimage", Array(bzImage.prefix(bzImage.count / 2))),
                                          ("setup-only", Array(bzImage.prefix(0x300))), ("no-hdrs", noMagic),
                                          ("truncated-vmlinux", Array(vmlinux.prefix(vmlinux.count / 3))), ("bad-elf", badELF)]
        for (name, contents) in cases {
            let path = directory + "/" + name
            try Data(contents).write(to: URL(fileURLWithPath: path))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Linux.binary)
            process.arguments = ["run", "--kernel", path, "--memory", "256M"]
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 66 && text.hasPrefix("swiftvmm: ") && text.split(separator: "\n").count == 1,
                    "\(name): status \(process.terminationStatus): \(text)")
        }
    }
}
