@testable import Devices
import Foundation
import Glibc
import Testing
import VMMCore

/// The share's confinement and descriptor table, and the hypercall device's decoding, against a
/// temporary directory and guest memory of a few pages (no KVM).
struct ShareDirectoryTests {
    /// A share in a fresh directory, with a sibling directory outside it.
    final class Fixture {
        let root: String, inside: String, outside: String
        init() throws {
            root = NSTemporaryDirectory() + "swiftvmm-share-\(getpid())-\(UUID().uuidString.prefix(8))"
            inside = root + "/share"
            outside = root + "/outside"
            try FileManager.default.createDirectory(atPath: inside, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
            try "secret".write(toFile: outside + "/secret", atomically: false, encoding: .utf8)
            try "hello".write(toFile: inside + "/file", atomically: false, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: inside + "/out", withDestinationPath: "../outside/secret")
            try FileManager.default.createSymbolicLink(atPath: inside + "/outdir", withDestinationPath: outside)
            try FileManager.default.createSymbolicLink(atPath: inside + "/root", withDestinationPath: "/proc/self/root")
            try FileManager.default.createSymbolicLink(atPath: inside + "/here", withDestinationPath: "file")
        }
        deinit { try? FileManager.default.removeItem(atPath: root) }

        func share(readOnly: Bool = false, maxOpenFiles: Int = 8) throws -> ShareDirectory {
            try ShareDirectory(path: inside, readOnly: readOnly, maxOpenFiles: maxOpenFiles)
        }

        var outsideListing: [String] { (try? FileManager.default.contentsOfDirectory(atPath: outside).sorted()) ?? [] }
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func pathsThatLeaveTheShareAreRefused() throws {
        let fixture = try Fixture()
        let share = try fixture.share()
        let exdev = -Int64(EXDEV)
        #expect(share.open(Self.bytes("../outside/secret"), flags: 0, mode: 0) == exdev)
        #expect(share.open(Self.bytes("out"), flags: 0, mode: 0) == exdev)
        #expect(share.open(Self.bytes("outdir/secret"), flags: 0, mode: 0) == exdev)
        #expect(share.open(Self.bytes("root/etc/passwd"), flags: 0, mode: 0) == exdev)
        #expect(share.open(Self.bytes("outdir/new"), flags: 0o101, mode: 0o644) == exdev)
        #expect(share.makeDirectory(Self.bytes("outdir/dir"), mode: 0o755) == exdev)
        #expect(share.rename(Self.bytes("file"), to: Self.bytes("../stolen")) == exdev)
        #expect(share.rename(Self.bytes("file"), to: Self.bytes("outdir/stolen")) == exdev)
        #expect(share.unlink(Self.bytes("outdir/secret")) == exdev)
        #expect(share.changeDirectory(Self.bytes("..")) == exdev)
        // Absolute paths start at the share's root: /etc/passwd is the share's, and absent.
        #expect(share.open(Self.bytes("/etc/passwd"), flags: 0, mode: 0) == -Int64(ENOENT))
        #expect(share.open(Self.bytes("/proc/self/root/etc/passwd"), flags: 0, mode: 0) == -Int64(ENOENT))
        // A link that stays inside works; stat of one that leaves fails the same way.
        #expect(share.open(Self.bytes("here"), flags: 0, mode: 0) == 3)
        if case .failure(let failure) = share.status(path: Self.bytes("out")) { #expect(failure.result == exdev) } else { Issue.record("stat out succeeded") }
        #expect(share.open(Self.bytes("here"), flags: 0o400000, mode: 0) == -Int64(ELOOP)) // O_NOFOLLOW
        #expect(fixture.outsideListing == ["secret"])
        #expect(try String(contentsOfFile: fixture.outside + "/secret", encoding: .utf8) == "secret")
    }

    @Test func descriptorsAreSmallNumbersUpToTheCap() throws {
        let fixture = try Fixture()
        let share = try fixture.share(maxOpenFiles: 4)
        let opened = (0..<6).map { _ in share.open(Self.bytes("file"), flags: 0, mode: 0) }
        #expect(opened == [3, 4, 5, 6, -Int64(EMFILE), -Int64(EMFILE)])
        #expect(share.openFiles == 4)
        #expect(share.close(4) == 0)
        #expect(share.close(4) == -Int64(EBADF))
        #expect(share.open(Self.bytes("file"), flags: 0, mode: 0) == 4) // the lowest free number again
        for descriptor: UInt64 in [0, 1, 2, 7, 1 << 40, UInt64.max] { #expect(share.close(descriptor) == -Int64(EBADF)) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let count = buffer.withUnsafeMutableBytes { share.read(3, into: $0) }
        #expect(count == 5)
        #expect(Array(buffer[..<5]) == Self.bytes("hello"))
        #expect(buffer.withUnsafeMutableBytes { share.read(3, into: $0, at: -1) } == -Int64(EINVAL))
        #expect(share.seek(3, offset: 0, whence: 99) == -Int64(EINVAL))
    }

    @Test func aReadOnlyShareRefusesEveryChange() throws {
        let fixture = try Fixture()
        let share = try fixture.share(readOnly: true)
        let erofs = -Int64(EROFS)
        #expect(share.open(Self.bytes("file"), flags: 1, mode: 0) == erofs)
        #expect(share.open(Self.bytes("file"), flags: 2, mode: 0) == erofs)
        #expect(share.open(Self.bytes("new"), flags: 0o100, mode: 0o644) == erofs)
        #expect(share.open(Self.bytes("file"), flags: 0o1000, mode: 0) == erofs)
        #expect(share.unlink(Self.bytes("file")) == erofs)
        #expect(share.makeDirectory(Self.bytes("d"), mode: 0o755) == erofs)
        #expect(share.removeDirectory(Self.bytes("d")) == erofs)
        #expect(share.rename(Self.bytes("file"), to: Self.bytes("other")) == erofs)
        let fd = share.open(Self.bytes("file"), flags: 0, mode: 0)
        #expect(fd == 3)
        #expect([UInt8](repeating: 1, count: 4).withUnsafeBytes { share.write(3, from: $0) } == erofs)
        #expect(try String(contentsOfFile: fixture.inside + "/file", encoding: .utf8) == "hello")
        #expect(!FileManager.default.fileExists(atPath: fixture.inside + "/new"))
    }

    @Test func theWorkingDirectoryMovesRelativePaths() throws {
        let fixture = try Fixture()
        try FileManager.default.createDirectory(atPath: fixture.inside + "/a/b", withIntermediateDirectories: true)
        let share = try fixture.share()
        #expect(share.workingDirectory() == Self.bytes("/"))
        #expect(share.changeDirectory(Self.bytes("a/./b")) == 0)
        #expect(share.workingDirectory() == Self.bytes("/a/b"))
        #expect(share.open(Self.bytes("../../file"), flags: 0, mode: 0) == 3)
        #expect(share.open(Self.bytes("../../../outside/secret"), flags: 0, mode: 0) == -Int64(EXDEV))
        #expect(share.changeDirectory(Self.bytes("..")) == 0)
        #expect(share.workingDirectory() == Self.bytes("/a"))
        #expect(share.changeDirectory(Self.bytes("/file")) == -Int64(ENOTDIR))
        #expect(share.changeDirectory(Self.bytes("/")) == 0)
        #expect(share.workingDirectory() == Self.bytes("/"))
        #expect(share.open([], flags: 0, mode: 0) == -Int64(ENOENT))
        #expect(share.open([UInt8](repeating: UInt8(ascii: "a"), count: 5000), flags: 0, mode: 0) == -Int64(ENAMETOOLONG))
    }

    @Test func specialFilesAreRefusedWithoutOpeningThem() throws {
        let fixture = try Fixture()
        #expect(mkfifo(fixture.inside + "/fifo", 0o644) == 0)
        let share = try fixture.share()
        // Opening a FIFO for reading would block until a writer came: the probe never opens it.
        #expect(share.open(Self.bytes("fifo"), flags: 0, mode: 0) == -Int64(ENXIO))
        #expect(share.open(Self.bytes("fifo"), flags: 1, mode: 0) == -Int64(ENXIO))
        #expect(share.open(Self.bytes("bad"), flags: 3, mode: 0) == -Int64(EINVAL))
        #expect(share.open(Self.bytes("file"), flags: 0x8000_0000, mode: 0) == -Int64(EINVAL))
        // A created file's mode keeps only the permission bits.
        #expect(share.open(Self.bytes("created"), flags: 0o101, mode: 0o7777) == 3)
        var status = stat()
        #expect(stat(fixture.inside + "/created", &status) == 0)
        #expect(status.st_mode & 0o7000 == 0)
    }

    @Test func aShareMustBeADirectory() throws {
        let fixture = try Fixture()
        #expect(throws: ShareSetupError.self) { try ShareDirectory(path: fixture.inside + "/file", readOnly: false) }
        #expect(throws: ShareSetupError.self) { try ShareDirectory(path: fixture.root + "/missing", readOnly: false) }
    }
}

/// The hypercall device: parameter blocks and buffers in guest RAM, both doorbells.
struct ShareDeviceTests {
    let fixture: ShareDirectoryTests.Fixture
    let memory: GuestMemory
    let device: ShareDevice
    static let ramSize = 64 * 1024

    init() throws {
        fixture = try ShareDirectoryTests.Fixture()
        memory = try GuestMemory(ranges: [(0, Self.ramSize)])
        device = ShareDevice(share: try fixture.share(), memory: memory)
    }

    /// Writes a block at 0x1000 with `arguments`, rings `call` through the MMIO window (or the
    /// ports), and returns the result the device wrote.
    func call(_ call: Hypercall, _ arguments: UInt64..., port: Bool = false) throws -> Int64 {
        let block: UInt64 = 0x1000
        try memory.store(UInt64(0x5A5A), at: block)
        for (index, argument) in arguments.enumerated() { try memory.store(argument, at: block + 8 + UInt64(index) * 8) }
        for index in arguments.count..<4 { try memory.store(UInt64(0), at: block + 8 + UInt64(index) * 8) }
        if port { device.ports.write(offset: UInt64(call.rawValue), size: 4, value: block) } else {
            device.window.write(offset: Hypercall.Window.doorbellOffset + 8 * UInt64(call.rawValue), size: 8, value: block)
        }
        return Int64(bitPattern: try memory.load(UInt64.self, at: block))
    }

    func string(_ text: String, at address: UInt64) throws -> UInt64 {
        try memory.write(Array(text.utf8) + [0], at: address)
        return address
    }

    @Test func theWindowAndThePortIdentifyTheDevice() {
        #expect(device.window.read(offset: Hypercall.Window.magic, size: 4) == UInt64(Hypercall.magic))
        #expect(device.window.read(offset: Hypercall.Window.version, size: 4) == 1)
        #expect(device.window.read(offset: Hypercall.Window.flags, size: 4) == 0)
        #expect(device.window.read(offset: Hypercall.Window.openFileLimit, size: 4) == 8)
        #expect(device.ports.read(offset: 0, size: 4) == UInt64(Hypercall.magic))
    }

    @Test func filesAreReadIntoGuestMemoryThroughEitherDoorbell() throws {
        let path = try string("file", at: 0x2000)
        for port in [false, true] {
            let fd = try call(.open, path, 0, 0, port: port)
            #expect(fd >= 3)
            #expect(try call(.read, UInt64(fd), 0x3000, 100, port: port) == 5)
            #expect(try memory.read(0x3000, length: 5) == Array("hello".utf8))
            #expect(try call(.fstat, UInt64(fd), 0x4000, port: port) == 0)
            #expect(try memory.load(UInt64.self, at: 0x4008) == 5) // size
            #expect(try call(.close, UInt64(fd), port: port) == 0)
        }
        #expect(device.statistics.count(.open).calls == 2)
        #expect(device.statistics.count(.read).calls == 2)
        #expect(device.statistics.report().contains(" open"))
    }

    @Test func buffersAndStringsOutsideRAMAreFaults() throws {
        let efault = -Int64(EFAULT)
        let fd = try call(.open, try string("file", at: 0x2000), 0, 0)
        let end = UInt64(Self.ramSize)
        #expect(try call(.read, UInt64(fd), end - 2, 100) == efault)
        #expect(try call(.read, UInt64(fd), 1 << 40, 1) == efault)
        #expect(try call(.read, UInt64(fd), UInt64.max - 3, 8) == efault)
        #expect(try call(.fstat, UInt64(fd), end - 8) == efault)
        #expect(try call(.getcwd, end - 1, 10) == efault)
        #expect(try call(.getcwd, 0x3000, 1) == -Int64(ERANGE))
        // A length near 2^63 is served short (the transfer limit), into a buffer that is RAM.
        #expect(ShareDirectory.transferLimit > Self.ramSize)
        #expect(try call(.read, UInt64(fd), 0x3000, 1 << 63) == efault) // the capped range passes RAM's end
        // A path that runs into the end of RAM without its NUL.
        try memory.fill(end - 16, length: 16, with: UInt8(ascii: "a"))
        #expect(try call(.open, end - 16, 0, 0) == efault)
        #expect(try call(.open, 1 << 40, 0, 0) == efault)
        try memory.fill(0x5000, length: 5000, with: UInt8(ascii: "b"))
        #expect(try call(.open, 0x5000, 0, 0) == -Int64(ENAMETOOLONG))
        #expect(try call(.clockGettime, 7, 0x3000) == -Int64(EINVAL))
        #expect(try call(.clockGettime, 1, end - 4) == efault)
    }

    @Test func blocksOutsideRAMAndUnknownCallsAreCountedAndIgnored() throws {
        device.window.write(offset: Hypercall.Window.doorbellOffset + 8 * 2, size: 8, value: UInt64(Self.ramSize) - 8)
        device.window.write(offset: Hypercall.Window.doorbellOffset + 8 * 2, size: 8, value: UInt64.max)
        device.ports.write(offset: 2, size: 4, value: 0xFFFF_FFF0)
        try memory.store(UInt64(0x5A5A), at: 0x1000)
        device.window.write(offset: Hypercall.Window.doorbellOffset + 8 * 31, size: 8, value: 0x1000)
        #expect(Int64(bitPattern: try memory.load(UInt64.self, at: 0x1000)) == -Int64(ENOSYS))
        // Accesses that are not doorbells: misaligned, the wrong size, reads.
        device.window.write(offset: Hypercall.Window.doorbellOffset + 3, size: 8, value: 0x1000)
        device.window.write(offset: Hypercall.Window.doorbellOffset + 8, size: 1, value: 0x1000)
        device.ports.write(offset: 1, size: 2, value: 0x1000)
        #expect(device.statistics.totalCalls == 0)
        #expect(device.statistics.report().contains("ignored: blocks outside RAM=3 unknown calls=1"))
    }

    @Test func aClockReadingIsWrittenAsSecondsAndNanoseconds() throws {
        #expect(try call(.clockGettime, 0, 0x3000) == 0)
        let seconds = Int64(bitPattern: try memory.load(UInt64.self, at: 0x3000))
        let nanoseconds = Int64(bitPattern: try memory.load(UInt64.self, at: 0x3008))
        #expect(seconds > 1_577_836_800) // after 2020
        #expect((0..<1_000_000_000).contains(nanoseconds))
    }

    @Test func listingADirectoryFillsLinuxDirents() throws {
        let fd = try call(.open, try string(".", at: 0x2000), 0o200000, 0)
        #expect(fd == 3)
        let bytes = try call(.getdents, UInt64(fd), 0x3000, 4096)
        #expect(bytes > 0)
        var names: [String] = []
        var offset = 0
        let records = try memory.read(0x3000, length: Int(bytes))
        while offset + 19 < records.count {
            let length = Int(records[offset + 16]) | Int(records[offset + 17]) << 8
            let name = records[(offset + 19)...].prefix { $0 != 0 }
            names.append(String(decoding: name, as: UTF8.self))
            guard length > 0 else { break }
            offset += length
        }
        #expect(Set(names).isSuperset(of: ["file", "out", "outdir", "root", "here"]))
        #expect(try call(.getdents, UInt64(fd), 0x3000, 4096) == 0)
        let file = try call(.open, try string("file", at: 0x2000), 0, 0)
        #expect(try call(.getdents, UInt64(file), 0x3000, 4096) == -Int64(ENOTDIR))
    }
}
