import Foundation
import Testing
@testable import FuzzTargets

/// The committed corpora replay without a crash (every campaign's findings stay fixed), and the
/// seeds start the fuzzer deep inside the devices rather than at their first register.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus").standardized.path

    static func inputs(_ target: FuzzTarget) -> [String] {
        let folder = corpus + "/" + target.rawValue
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.sorted().filter { !$0.hasPrefix(".") }.map { folder + "/" + $0 }
    }

    @Test(arguments: FuzzTarget.allCases)
    func corpusReplays(_ target: FuzzTarget) throws {
        let files = Self.inputs(target)
        #expect(!files.isEmpty, "Fuzz/corpus/\(target.rawValue) has no inputs (swiftvmm-fuzz seed writes the seeds)")
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: file), "\(file) unreadable")
            target.run(Array(data))
        }
    }

    @Test func theBalloonSeedsInflateDeflateAndReport() {
        let seeds = FuzzSeeds.seeds(for: .virtioBalloon)
        let counters = VirtioTarget.balloon(seeds["inflate-deflate-stats"]!)
        #expect(counters.inflated == 16 && counters.deflated == 8, "\(counters)")
        #expect(counters.released == 16 * 4096 || counters.releaseCalls > 0, "\(counters)")
        let stats = VirtioTarget.balloon(seeds["stats"]!)
        #expect(stats.statsUpdates >= 1, "\(stats)")
    }

    @Test func theNetSeedSendsReceivesAndAnnounces() {
        let counters = VirtioTarget.net(FuzzSeeds.seeds(for: .virtioNet)["send-receive-announce"]!)
        #expect(counters.txFrames == 1 && counters.rxFrames == 1 && counters.rxDropped == 1, "\(counters)")
        #expect(counters.announcements == 1 && counters.controlCommands == 1, "\(counters)")
    }

    @Test func theBlockSeedReachesEveryRequestType() {
        let counters = VirtioTarget.block(FuzzSeeds.seeds(for: .virtioBlock)["write-read-flush-id"]!)
        #expect(counters.writes == 1 && counters.reads == 1 && counters.flushes == 1 && counters.getIDs == 1 && counters.writeZeroes == 1, "\(counters)")
        #expect(counters.errors == 0 && counters.malformed == 0 && counters.bytesRead == 1024, "\(counters)")
    }

    @Test func theShareSeedServesItsCalls() {
        // 19 calls (the read with its block at 2^40 is ignored); the three escapes and the stat
        // through a link out fail, everything else succeeds.
        let result = ShareTarget.calls(FuzzSeeds.seeds(for: .share)["calls"]!)
        #expect(result.served == 19, "\(result)")
        #expect(result.succeeded == 15, "\(result)")
    }

    @Test func theACPIPMSeedSleepsTwice() {
        #expect(DeviceTargets.acpiPM(FuzzSeeds.seeds(for: .acpiPM)["sleep-wake"]!) == 2)
    }

    @Test func theUARTSeedTransmits() {
        #expect(DeviceTargets.uart(FuzzSeeds.seeds(for: .uart)["init-echo"]!) >= 6)
    }

    @Test func inputsPastTheEndReadAsZeros() {
        var input = FuzzInput([1, 2, 3])
        #expect(input.little(2) == 0x0201)
        #expect(input.little(4) == 3)
        #expect(input.isAtEnd)
        #expect(input.byte() == 0 && input.take(5).isEmpty)
    }
}
