import Foundation
import Glibc
@testable import Host
import Testing

/// Page accounting from pagemap entries (present bit, exclusive bit, frame number).
@Suite struct PageSharingTests {
    func entry(frame: UInt64, exclusive: Bool) -> UInt64 { PageSharing.present | (exclusive ? PageSharing.exclusive : 0) | frame }

    @Test func classifiesResidentPagesByHowOftenTheirFrameIsMapped() throws {
        // Frames 10-13 mapped only here, 20 shared (three times), 30 the zero page (twice); two
        // entries not present (one swapped out).
        let entries = [entry(frame: 10, exclusive: true), entry(frame: 11, exclusive: true), entry(frame: 12, exclusive: true),
                       entry(frame: 13, exclusive: true), entry(frame: 20, exclusive: false), 0, entry(frame: 20, exclusive: false),
                       entry(frame: 30, exclusive: false), entry(frame: 20, exclusive: false), 1 << 62, entry(frame: 30, exclusive: false)]
        let result = try PageSharing.classify(entries, zeroFrame: 30)
        #expect(result.privatePages == 4 && result.ksmPages == 3 && result.zeroPages == 2, "\(result)")
        #expect(result.sharedBytes == 5 * 4096 && result.privateBytes == 4 * 4096)
        #expect(result.report == "page sharing: shared_kib=20 ksm_kib=12 zero_kib=8 private_kib=16")
    }

    @Test func hiddenFramesAreAnErrorNotAGuess() throws {
        // Without CAP_SYS_ADMIN pagemap shows frame 0 for every present page.
        #expect(throws: HostError.self) { try PageSharing.classify([entry(frame: 0, exclusive: true)], zeroFrame: 30) }
        #expect(try PageSharing.classify([0, 0], zeroFrame: 30) == PageSharing())
        #expect(PageSharing.zeroFrame != nil && PageSharing.zeroFrame != 0, "the tests run as root: the zero page's frame is visible")
    }

    /// This process's own memory, through the real files (the tests run as root).
    @Test func measuresThisProcessesMemory() throws {
        let size = 64 * 4096
        let mapping = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        defer { munmap(mapping, size) }
        // Safe: every offset is inside the mapping just made. Half the pages written, a quarter
        // only read (the zero page), the rest untouched.
        for page in 0..<32 { mapping.storeBytes(of: UInt8(page + 1), toByteOffset: page * 4096, as: UInt8.self) }
        var sum = 0
        for page in 32..<48 { sum &+= Int(mapping.load(fromByteOffset: page * 4096, as: UInt8.self)) }
        #expect(sum == 0)
        let result = try PageSharing.measure([(address: UInt(bitPattern: mapping), length: size)])
        #expect(result.privatePages == 32 && result.zeroPages == 16 && result.ksmPages == 0, "\(result)")
    }

    @Test func readsKSMSettingsAndSaysWhetherAnythingMerges() throws {
        let directory = NSTemporaryDirectory() + "ksm-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(KSMStatus.read(directory: directory) == nil)
        for (name, value) in [("run", "0\n"), ("pages_to_scan", "100\n"), ("sleep_millisecs", "20\n"), ("pages_sharing", "7\n")] {
            try value.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
        }
        let stopped = try #require(KSMStatus.read(directory: directory))
        #expect(stopped.pagesToScan == 100 && stopped.sleepMilliseconds == 20 && stopped.pagesSharing == 7 && stopped.pagesShared == 0)
        #expect(stopped.summary.hasPrefix("ksmd is not running (/sys/kernel/mm/ksm/run is 0)"))
        try "1\n".write(toFile: directory + "/run", atomically: true, encoding: .utf8)
        #expect(KSMStatus.read(directory: directory)?.summary == "ksmd is running: 100 pages every 20 ms")
    }
}
