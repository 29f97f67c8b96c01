import API
import Host
import Synchronization
import VMM

/// The API's request handling: each input is a sequence of requests (a line "METHOD PATH", then
/// body lines up to a line "."), run through the router of a VM being configured and then, after
/// the first InstanceStart, of a running one (a stand-in VM, no KVM). HTTP framing is SwiftNIO's;
/// this is everything after it: routing, strict JSON decoding, the session's rules.
enum APITarget {
    final class StandInVM: RunningVM, Sendable {
        let paused = Atomic<Bool>(false)
        var isPaused: Bool { paused.load(ordering: .relaxed) }
        var isStopping: Bool { false }
        func pause() { paused.store(true, ordering: .relaxed) }
        func resume() { paused.store(false, ordering: .relaxed) }
        func stop() {}
        func guestResidentBytes() -> Int { 0 }
        func pageSharing() -> PageSharing? { nil }
        func guestStealNanoseconds() -> [UInt64?] { [nil] }
        var balloonHandle: (any BalloonHandle)? { nil }
        func vcpuThreadIDs() -> [Int32?] { [nil] }
        func liveExitCounts() -> [[ExitStatistics.Reason: UInt64]] { [[.ioOut: 3]] }
        /// Writes nothing: the fuzzer must not create files wherever an input names.
        func saveSnapshot(statePath: String, memoryPath: String, diff: Bool) throws(SnapshotError) -> SnapshotReport {
            guard isPaused else { throw .notPaused }
            return SnapshotReport(stateBytes: 0, memoryBytesWritten: 0, guestRAM: 0, stateMilliseconds: 0, memoryMilliseconds: 0)
        }
        /// Connects nowhere: the fuzzer must not reach out to the endpoints an input names.
        func startMigration(_ request: MigrationRequest) throws(MigrationError) { throw .refused("the fuzzer migrates nothing") }
        func migrationProgress() -> MigrationProgress? { nil }
        let buttonPresses = Atomic<Int>(0)
        func pressPowerButton() -> Bool { buttonPresses.add(1, ordering: .relaxed); return true }
    }

    static func requests(_ data: [UInt8]) {
        let session = VMSession(instanceID: "fuzz", base: VMConfig(imagePath: "")) { request in
            guard case .boot(let config) = request else { return .failure(.badRequest("the fuzzer restores no snapshots")) }
            return config.memorySize > 64 << 20 ? .failure(.badRequest("too big for the fuzzer")) : .success(StandInVM())
        }
        let router = APIRouter(session: session)
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)[...]
        while let head = lines.popFirst() {
            let words = head.split(separator: " ", maxSplits: 1)
            guard words.count == 2 else { continue }
            var body: [Substring] = []
            while let line = lines.popFirst(), line != "." { body.append(line) }
            _ = router.handle(APIRequest(method: String(words[0]), path: String(words[1]), body: Array(body.joined(separator: "\n").utf8)))
        }
    }

    static let seed = """
        GET /
        .
        PUT /machine-config
        {"vcpu_count": 2, "mem_size_mib": 64, "smt": false, "huge_pages": "Transparent"}
        .
        PATCH /machine-config
        {"mem_size_mib": 32}
        .
        PUT /boot-source
        {"kernel_image_path": "/fuzz/vmlinux", "boot_args": "console=ttyS0", "initrd_path": "/fuzz/initrd"}
        .
        PUT /balloon
        {"amount_mib": 8, "deflate_on_oom": true, "stats_polling_interval_s": 1}
        .
        GET /vm/config
        .
        PUT /actions
        {"action_type": "InstanceStart"}
        .
        PATCH /vm
        {"state": "Paused"}
        .
        GET /balloon/statistics
        .
        PATCH /balloon
        {"amount_mib": 4}
        .
        GET /swiftvmm/memory
        .
        GET /swiftvmm/balloon
        .
        PUT /swiftvmm/actions
        {"action_type": "Stop"}
        .
        GET /nowhere?x=1
        .
        """
}
