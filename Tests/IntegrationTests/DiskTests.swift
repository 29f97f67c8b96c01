import Foundation
import Glibc
import Testing

/// virtio-blk end to end: the disk guest (Guests/disk.c) reads, writes, flushes, zeroes and
/// discards through the runtime's driver, and the test checks the image file on the host.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct DiskTests {
    static let sectors = 8192 // 4 MiB images

    /// A temporary image of `sectors` sectors of seeded pseudo-random bytes.
    static func image(_ name: String, seed: UInt64, sectors: Int = sectors) throws -> String {
        var state = seed | 1
        var bytes = [UInt8](repeating: 0, count: sectors * 512)
        for index in bytes.indices {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            bytes[index] = UInt8(truncatingIfNeeded: state >> 24)
        }
        let path = Harness.temporaryPath(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func contents(_ path: String) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: path) ?? Data()) }

    /// FNV-1a 64, as the guest computes it.
    static func fnv(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf29ce484222325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
        return String(format: "%016llx", hash)
    }

    /// The guest's write pattern (disk.c `pattern`).
    static func pattern(seed: UInt64, sector: UInt64) -> [UInt8] {
        (0..<512).map { offset in
            let x = (sector &+ 1) &* 0x9E3779B97F4A7C15 ^ (seed &+ 1) &* 0xC2B2AE3D27D4EB4F ^ UInt64(offset) &* 0x165667B1
            return UInt8(truncatingIfNeeded: x >> 29)
        }
    }

    static func run(_ disks: [String], _ guestArguments: String, _ options: [String] = []) throws -> RunResult {
        try swiftvmm(["run", Harness.guest("disk.elf")] + disks.flatMap { ["--disk", $0] } + options + ["--cmdline", guestArguments], timeout: 120)
    }

    @Test func theGuestReadsTheImageItsSerialAndNothingPastTheEnd() throws {
        requireGuests("disk.elf")
        let path = try Self.image("read.img", seed: 11)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try Self.run([path + ",id=vol-1.a"], "id=1 sum=1 beyond=1", ["--stats"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("disk 0: capacity 8192 sectors"), "\(result)")
        #expect(result.stdout.contains("read-only 0, seg_max 254, blk_size 512, irq 5"), "\(result)")
        #expect(result.stdout.contains("disk id: 'vol-1.a' status 0"), "\(result)")
        #expect(result.stdout.contains("disk 0 checksum \(Self.fnv(Self.contents(path))) over 8192 sectors"), "\(result)")
        for line in ["beyond-end read: status 1", "straddling read: status 1", "huge sector read: status 1"] {
            #expect(result.stdout.contains(line), "\(result)")
        }
        // 64 KiB per read: 64 reads of data, 3 refused; the stats line is the device's own count.
        #expect(result.stderr.contains("disk vol-1.a: 67 reads (4M)"), "\(result)")
        #expect(result.stderr.contains("3 errors, 0 unsupported, 0 malformed"), "\(result)")
    }

    @Test func writesFlushesAndZeroesLandInTheFileWhereAskedAndNowhereElse() throws {
        requireGuests("disk.elf")
        let path = try Self.image("write.img", seed: 12)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let original = Self.contents(path)
        let written = try Self.run([path], "write=100 count=300 seed=5")
        #expect(written.status == 1, "\(written)")
        for line in ["write 300 sectors at 100: status 0", "flush: status 0", "readback: ok"] { #expect(written.stdout.contains(line), "\(written)") }
        var expected = original
        for sector in 100..<400 { expected.replaceSubrange(sector * 512..<(sector + 1) * 512, with: Self.pattern(seed: 5, sector: UInt64(sector))) }
        #expect(Self.contents(path) == expected, "the file holds the pattern in sectors 100-399 and nothing else changed")
        let zeroed = try Self.run([path], "zeroes=1000 count=40")
        #expect(zeroed.status == 1 && zeroed.stdout.contains("write-zeroes 40 sectors at 1000: status 0") && zeroed.stdout.contains("zeroes readback: ok"), "\(zeroed)")
        expected.replaceSubrange(1000 * 512..<1040 * 512, with: [UInt8](repeating: 0, count: 40 * 512))
        #expect(Self.contents(path) == expected)
        let discarded = try Self.run([path], "discard=2048 count=64")
        #expect(discarded.status == 1 && discarded.stdout.contains("discard 64 sectors at 2048: status 0"), "\(discarded)")
        #expect(Self.contents(path).count == original.count, "discard keeps the file's size")
    }

    @Test func aReadOnlyDiskRefusesEveryChangeAndTheFileStaysAsItWas() throws {
        requireGuests("disk.elf")
        let path = try Self.image("ro.img", seed: 13)
        defer { try? FileManager.default.removeItem(atPath: path) }
        chmod(path, 0o444)
        let before = Self.contents(path)
        var info = stat()
        stat(path, &info)
        let modified = info.st_mtim
        let result = try Self.run([path + ",ro"], "write=0 count=8 discard=0 zeroes=8 sum=1")
        #expect(result.status == 1, "\(result)")
        for line in ["read-only 1", "write 8 sectors at 0: status 1", "discard 8 sectors at 0: status 2", "write-zeroes 8 sectors at 8: status 2",
                     "disk 0 checksum \(Self.fnv(before))"] {
            #expect(result.stdout.contains(line), "\(result)")
        }
        #expect(Self.contents(path) == before)
        stat(path, &info)
        #expect(info.st_mtim.tv_sec == modified.tv_sec && info.st_mtim.tv_nsec == modified.tv_nsec, "the image was never written")
    }

    @Test func hostileRequestsGetErrorStatusesAndAResetBringsTheDiskBack() throws {
        requireGuests("disk.elf")
        let path = try Self.image("hostile.img", seed: 14)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try Self.run([path], "hostile=1", ["--stats"])
        #expect(result.status == 1, "\(result)")
        for line in ["no status byte: used length 0", "short header: used length 1, status 1", "odd length: used length 1, status 1",
                     "unknown type: used length 1, status 2", "buffer outside RAM: used -1, needs reset 1", "after reset: read status 0"] {
            #expect(result.stdout.contains(line), "\(result)")
        }
        #expect(result.stderr.contains("is outside guest RAM; the device needs a reset"), "\(result)")
        #expect(result.stderr.contains("1 queue errors"), "\(result)")
    }

    @Test func severalDisksBesideTheBalloonEachServeTheirOwnImage() throws {
        requireGuests("disk.elf")
        let paths = try (0..<3).map { try Self.image("multi\($0).img", seed: 20 + UInt64($0), sectors: 1024 * ($0 + 1)) }
        defer { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
        let result = try Self.run(paths, "disks=3", ["--balloon"])
        #expect(result.status == 1, "\(result)")
        for (index, path) in paths.enumerated() {
            #expect(result.stdout.contains("disk \(index) checksum \(Self.fnv(Self.contents(path))) over \(1024 * (index + 1)) sectors"), "\(result)")
        }
        // Slots after the balloon's: IRQs 6, 7 and 10 (docs/guest-abi.md).
        let third = try Self.run(paths, "nth=2")
        #expect(third.stdout.contains("capacity 3072 sectors") && third.stdout.contains("irq 7"), "\(third)")
        let withBalloon = try Self.run(paths, "nth=2", ["--balloon"])
        #expect(withBalloon.stdout.contains("irq 10"), "\(withBalloon)")
    }

    @Test func anImageThatShrinksUnderTheGuestGivesIOErrorsNotACrash() throws {
        requireGuests("disk.elf")
        let path = try Self.image("shrink.img", seed: 15)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let process = Process(), outPath = Harness.temporaryPath("shrink.out"), input = Pipe()
        FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("disk.elf"), "--disk", path, "--cmdline", "wait=1 sum=1"]
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = FileHandle.nullDevice
        process.standardInput = input
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        func output() -> String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
        while !output().contains("waiting for input") && process.isRunning && Date() < deadline { usleep(10_000) }
        #expect(truncate(path, 2048 * 512) == 0)
        input.fileHandleForWriting.write(Data("x".utf8))
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        #expect(process.terminationStatus == 3, "the guest's read fails and it ends with V=1:\n\(output())")
        #expect(output().contains("capacity 8192 sectors") && output().contains("read at 2048: status 1"), "\(output())")
    }

    @Test func badDisksAreRefusedWithOneLine() throws {
        requireGuests("disk.elf")
        let directory = Harness.temporaryPath("disk-dir"), fifo = Harness.temporaryPath("disk.fifo"), empty = Harness.temporaryPath("empty.img")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        mkfifo(fifo, 0o600)
        FileManager.default.createFile(atPath: empty, contents: Data(count: 100))
        let image = try Self.image("ok.img", seed: 16, sectors: 8)
        defer { for path in [directory, fifo, empty, image] { try? FileManager.default.removeItem(atPath: path) } }
        let cases: [([String], Int32, String)] = [
            (["--disk", "/nonexistent/disk.img"], 66, "disk /nonexistent/disk.img: No such file or directory"),
            (["--disk", fifo], 66, "not a regular file"),
            (["--disk", directory], 66, "disk \(directory): "),
            (["--disk", directory + ",ro"], 66, "not a regular file"),
            (["--disk", empty], 66, "smaller than one 512-byte sector"),
            (["--disk", image + ",rox"], 64, "is not PATH[,ro][,id=NAME]"),
            (["--disk", image + ",id=has space"], 64, "is not PATH[,ro][,id=NAME]"),
            (["--disk", image + ",id=a", "--disk", image + ",id=a"], 64, "two disks are named a"),
            ((0..<9).flatMap { ["--disk", image + ",id=d\($0)"] }, 64, "need more than the 8 virtio-mmio slots"),
        ]
        for (options, status, message) in cases {
            let result = try swiftvmm(["run", Harness.guest("disk.elf")] + options, timeout: 30)
            #expect(result.status == status, "\(options): \(result)")
            #expect(result.stderr.contains(message), "\(options): \(result)")
            #expect(result.stderr.split(separator: "\n").count <= 2, "\(options): \(result)")
        }
    }

    /// A guest streaming disk writes and reads is snapshotted mid-run and restored: with the
    /// image as shared storage, the joined output is that of an uninterrupted run on a copy, and
    /// both images end the same.
    @Test func aSnapshotWithADiskContinuesExactly() throws {
        requireGuests("disk.elf")
        let reference = try Self.image("stream-ref.img", seed: 17), shared = try Self.image("stream.img", seed: 17)
        let state = Harness.temporaryPath("disk.state"), memory = Harness.temporaryPath("disk.memory")
        defer { for path in [reference, shared, state, memory] { try? FileManager.default.removeItem(atPath: path) } }
        let guest = "stream=12 pause=150"
        let uninterrupted = try Self.run([reference], guest)
        #expect(uninterrupted.status == 1 && uninterrupted.stdout.contains("disk stream done"), "\(uninterrupted)")
        let source = try APIProcess(["run", Harness.guest("disk.elf"), "--disk", shared, "--cmdline", guest])
        guard source.wait("3 stream lines", { source.output.components(separatedBy: "disk seq=").count > 3 }) else { return }
        let saved = try swiftvmm(["snapshot", source.socket, "--state", state, "--memory", memory, "--stop"])
        #expect(saved.status == 0, "\(saved)")
        #expect(source.exitStatus() == 72)
        let before = source.output
        #expect(!before.contains("done"), "the snapshot came before the stream ended: \(before)")
        let restored = try swiftvmm(["run", "--restore", state, "--memory-file", memory], timeout: 120)
        #expect(restored.status == 1, "\(restored)")
        #expect(before + restored.stdout == uninterrupted.stdout, "source then restored:\n\(before)|\n\(restored.stdout)\nuninterrupted:\n\(uninterrupted.stdout)")
        #expect(Self.contents(shared) == Self.contents(reference))
    }

    /// The same stream migrated live to another process (shared storage: the destination opens
    /// the same image): the two outputs joined are the uninterrupted run's, the images equal.
    @Test func aMigratedGuestKeepsWritingTheSameDisk() throws {
        requireGuests("disk.elf")
        let reference = try Self.image("migrate-ref.img", seed: 18), shared = try Self.image("migrate.img", seed: 18)
        defer { for path in [reference, shared] { try? FileManager.default.removeItem(atPath: path) } }
        let guest = "stream=12 pause=150"
        let uninterrupted = try Self.run([reference], guest)
        #expect(uninterrupted.status == 1 && uninterrupted.stdout.contains("disk stream done"), "\(uninterrupted)")
        let endpoint = "unix:" + Harness.temporaryPath("disk-migration.sock")
        let destination = try MigrationTests.Incoming(endpoint)
        let source = try APIProcess(["run", Harness.guest("disk.elf"), "--disk", shared, "--cmdline", guest])
        guard source.wait("3 stream lines", { source.output.components(separatedBy: "disk seq=").count > 3 }) else { return }
        let migrated = try swiftvmm(["migrate", source.socket, endpoint, "--downtime-ms", "300", "--timeout", "30"], timeout: 60)
        #expect(migrated.status == 0 && migrated.stdout.contains("state=completed"), "\(migrated)")
        #expect(source.exitStatus() == 78)
        #expect(destination.exitStatus(within: 60) == 1, "\(destination.errors)")
        #expect(!source.output.contains("done"), "the migration came before the stream ended")
        #expect(source.output + destination.output == uninterrupted.stdout,
                "source then destination:\n\(source.output)|\n\(destination.output)\nuninterrupted:\n\(uninterrupted.stdout)")
        #expect(Self.contents(shared) == Self.contents(reference))
    }
}
