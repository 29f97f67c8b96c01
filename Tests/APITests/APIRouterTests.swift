@testable import API
import Devices
import Host
import Synchronization
import Testing
import VMM

/// A VM and balloon that record what the API asked of them.
final class FakeBalloon: BalloonHandle, Sendable {
    struct State { var target: UInt64 = 0; var interval: Double; var statistics: BalloonStatistics? }
    let state: Mutex<State>
    let deflateOnOOM: Bool

    init(interval: Double, deflateOnOOM: Bool = true) {
        state = Mutex(State(interval: interval))
        self.deflateOnOOM = deflateOnOOM
    }
    func setTarget(bytes: UInt64) { state.withLock { $0.target = bytes } }
    func setStatsInterval(seconds: Double) { state.withLock { $0.interval = seconds } }
    var statsIntervalSeconds: Double { state.withLock { $0.interval } }
    var queueErrors: Int { 0 }
    func status() -> BalloonControl.Status {
        state.withLock { state in
            BalloonControl.Status(targetPages: UInt32(state.target / 4096), actualPages: UInt32(state.target / 8192),
                                  counters: BalloonCounters(), statistics: state.statistics, driverReady: true, needsReset: false)
        }
    }
}

final class FakeVM: RunningVM, Sendable {
    let paused = Atomic<Bool>(false)
    let stopped = Atomic<Bool>(false)
    let balloon: FakeBalloon?
    init(balloon: FakeBalloon? = nil, hasPowerButton: Bool = true) { (self.balloon, self.hasPowerButton) = (balloon, hasPowerButton) }
    var isPaused: Bool { paused.load(ordering: .relaxed) }
    var isStopping: Bool { stopped.load(ordering: .relaxed) }
    func pause() { paused.store(true, ordering: .relaxed) }
    func resume() { paused.store(false, ordering: .relaxed) }
    func stop() { stopped.store(true, ordering: .relaxed) }
    func guestResidentBytes() -> Int { 3 << 20 }
    func pageSharing() -> PageSharing? { nil }
    func guestStealNanoseconds() -> [UInt64?] { [2_000_000, nil] }
    var balloonHandle: (any BalloonHandle)? { balloon }
    func vcpuThreadIDs() -> [Int32?] { [nil, nil] }
    func liveExitCounts() -> [[ExitStatistics.Reason: UInt64]] { [[.ioOut: 5, .hlt: 1], [:]] }
    /// The paths of the last snapshot asked for.
    let snapshots = Mutex<[String]>([])
    func saveSnapshot(statePath: String, memoryPath: String, diff: Bool) throws(SnapshotError) -> SnapshotReport {
        guard isPaused else { throw .notPaused }
        snapshots.withLock { $0 = [statePath, memoryPath] + (diff ? ["diff"] : []) }
        return SnapshotReport(stateBytes: 1, memoryBytesWritten: 0, guestRAM: 0, stateMilliseconds: 0, memoryMilliseconds: 0)
    }
    /// The last migration asked for; its progress says it is copying.
    let migrations = Mutex<[MigrationRequest]>([])
    func startMigration(_ request: MigrationRequest) throws(MigrationError) {
        guard migrations.withLock({ $0.isEmpty }) else { throw .refused("a migration is already running") }
        migrations.withLock { $0.append(request) }
    }
    /// Power-button presses; `hasPowerButton` false answers as a VM without the PM registers.
    let buttonPresses = Atomic<Int>(0)
    let hasPowerButton: Bool
    func pressPowerButton() -> Bool {
        guard hasPowerButton else { return false }
        buttonPresses.add(1, ordering: .relaxed)
        return true
    }
    func migrationProgress() -> MigrationProgress? {
        guard let request = migrations.withLock({ $0.last }) else { return nil }
        var progress = MigrationProgress()
        (progress.phase, progress.destination, progress.iteration) = (.copying, request.destination.description, 2)
        return progress
    }
}

@Suite struct APIRouterTests {
    /// A router over a session to be configured, whose starter records the config it got.
    final class Started: Sendable {
        let config = Mutex<VMConfig?>(nil)
        let restore = Mutex<(SnapshotSource, Bool)?>(nil)
        func withLock<R>(_ body: (inout VMConfig?) -> R) -> R { config.withLock { body(&$0) } }
    }

    func configuring(vm: FakeVM = FakeVM(), fail: APIFailure? = nil) -> (APIRouter, Started) {
        let started = Started()
        let session = VMSession(instanceID: "test-1", base: VMConfig(imagePath: "")) { request in
            switch request {
            case .boot(let config): started.withLock { $0 = config }
            case .restore(let source, _, let resume): started.restore.withLock { $0 = (source, resume) }
            }
            if let fail { return .failure(fail) }
            return .success(vm)
        }
        return (APIRouter(session: session), started)
    }

    func call(_ router: APIRouter, _ method: String, _ path: String, _ body: String = "") -> (Int, String) {
        let response = router.handle(APIRequest(method: method, path: path, body: Array(body.utf8)))
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    @Test func drivesAreConfiguredBeforeBootRootFirst() {
        let (router, started) = configuring()
        #expect(call(router, "PUT", "/boot-source", #"{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}"#).0 == 204)
        #expect(call(router, "PUT", "/drives/data", #"{"drive_id": "data", "path_on_host": "/d.img", "is_root_device": false}"#).0 == 204)
        #expect(call(router, "PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "/r.img", "is_root_device": true, "is_read_only": true, "cache_type": "Unsafe"}"#).0 == 204)
        for (path, body, why) in [
            ("/drives/other", #"{"drive_id": "data", "path_on_host": "/x", "is_root_device": false}"#, "differs from the path"),
            ("/drives/second", #"{"drive_id": "second", "path_on_host": "/x", "is_root_device": true}"#, "already the root device"),
            ("/drives/x", #"{"drive_id": "x", "path_on_host": "", "is_root_device": false}"#, "must not be empty"),
            ("/drives/x", #"{"drive_id": "x", "path_on_host": "/x", "is_root_device": false, "rate_limiter": {}}"#, "rate_limiter"),
            ("/drives/x", #"{"drive_id": "x", "path_on_host": "/x", "is_root_device": false, "io_engine": "Async"}"#, "io_engine"),
            ("/drives/x", #"{"drive_id": "x", "path_on_host": "/x", "is_root_device": false, "partuuid": "zz;rm"}"#, "partuuid"),
            ("/drives/x", #"{"drive_id": "x", "path_on_host": "/x"}"#, "is_root_device"),
            ("/drives/a%20b", #"{"drive_id": "a%20b", "path_on_host": "/x", "is_root_device": false}"#, "drive_id"),
        ] {
            let reply = call(router, "PUT", path, body)
            #expect(reply.0 == 400 && reply.1.contains(why), "\(path) \(body): \(reply)")
        }
        #expect(call(router, "GET", "/drives/data").0 == 405)
        let shown = call(router, "GET", "/vm/config")
        #expect(shown.1.contains(#""drive_id":"data""#) && shown.1.contains(#""is_read_only":true"#), "\(shown)")
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#).0 == 204)
        let config = started.withLock { $0 }
        #expect(config?.disks == [DiskConfig(path: "/r.img", readOnly: true, id: "rootfs"), DiskConfig(path: "/d.img", readOnly: false, id: "data")])
        #expect(config?.commandLine == "console=ttyS0 root=/dev/vda ro")
        #expect(call(router, "PUT", "/drives/late", #"{"drive_id": "late", "path_on_host": "/x", "is_root_device": false}"#).0 == 400)
    }

    @Test func networkInterfacesAreConfiguredBeforeBoot() {
        let (router, started) = configuring()
        #expect(call(router, "PUT", "/boot-source", #"{"kernel_image_path": "/k"}"#).0 == 204)
        #expect(call(router, "PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:00:00:00:01"}"#).0 == 204)
        for (path, body, why) in [
            ("/network-interfaces/eth1", #"{"iface_id": "eth0", "host_dev_name": "tap1"}"#, "differs from the path"),
            ("/network-interfaces/eth1", #"{"iface_id": "eth1", "host_dev_name": "tap/1"}"#, "host_dev_name"),
            ("/network-interfaces/eth1", #"{"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "01:00:00:00:00:01"}"#, "guest_mac"),
            ("/network-interfaces/eth1", #"{"iface_id": "eth1", "host_dev_name": "tap1", "rx_rate_limiter": {}}"#, "rate limiters"),
        ] {
            let reply = call(router, "PUT", path, body)
            #expect(reply.0 == 400 && reply.1.contains(why), "\(path) \(body): \(reply)")
        }
        #expect(call(router, "GET", "/vm/config").1.contains(#""host_dev_name":"tap0""#))
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#).0 == 204)
        #expect(started.withLock { $0 }?.nets == [NetConfig(tap: "tap0", mac: [2, 0, 0, 0, 0, 1], id: "eth0")])
    }

    @Test func snapshotCreateNeedsAPausedVMAndTwoPaths() {
        let vm = FakeVM()
        let router = APIRouter(session: VMSession(instanceID: "snap", running: vm, config: VMConfig(imagePath: "/g")))
        let body = #"{"snapshot_type": "Full", "snapshot_path": "/tmp/s.state", "mem_file_path": "/tmp/s.mem"}"#
        let running = call(router, "PUT", "/snapshot/create", body)
        #expect(running.0 == 400 && running.1.contains("paused"))
        #expect(call(router, "PATCH", "/vm", #"{"state": "Paused"}"#).0 == 204)
        #expect(call(router, "PUT", "/snapshot/create", body).0 == 204)
        #expect(vm.snapshots.withLock { $0 } == ["/tmp/s.state", "/tmp/s.mem"])
        #expect(call(router, "PUT", "/snapshot/create", #"{"snapshot_type": "Diff", "snapshot_path": "/a", "mem_file_path": "/b"}"#).0 == 204)
        #expect(vm.snapshots.withLock { $0 } == ["/a", "/b", "diff"])
        #expect(call(router, "PUT", "/snapshot/create", #"{"snapshot_type": "Half", "snapshot_path": "/a", "mem_file_path": "/b"}"#).0 == 400)
        #expect(call(router, "PUT", "/snapshot/create", #"{"snapshot_path": "/a", "mem_file_path": "/a"}"#).0 == 400)
        #expect(call(router, "PUT", "/snapshot/create", #"{"snapshot_path": "", "mem_file_path": "/b"}"#).0 == 400)
        #expect(call(router, "PUT", "/snapshot/create", #"{"snapshot_path": "/a", "mem_file_path": "/b", "extra": 1}"#).0 == 400)
        #expect(call(router, "PUT", "/snapshot/load", #"{"snapshot_path": "/a", "mem_file_path": "/b"}"#).0 == 400) // already running
    }

    @Test func migrateStartsOneMigrationAndReportsIt() {
        let vm = FakeVM()
        let router = APIRouter(session: VMSession(instanceID: "mig", running: vm, config: VMConfig(imagePath: "/g")))
        #expect(call(router, "GET", "/migrate").0 == 400)
        #expect(call(router, "PUT", "/migrate", #"{"destination_url": "ftp:x"}"#).0 == 400)
        #expect(call(router, "PUT", "/migrate", #"{"destination_url": "tcp:127.0.0.1:4444", "mode": "sideways"}"#).0 == 400)
        #expect(call(router, "PUT", "/migrate", #"{"destination_url": "tcp:127.0.0.1:4444", "downtime_ms": 20, "timeout_s": 5}"#).0 == 204)
        let request = vm.migrations.withLock { $0.first }
        #expect(request == MigrationRequest(destination: .tcp(host: "127.0.0.1", port: 4444), downtimeMilliseconds: 20, timeoutSeconds: 5))
        let second = call(router, "PUT", "/migrate", #"{"destination_url": "unix:/tmp/m.sock"}"#)
        #expect(second.0 == 400 && second.1.contains("already running"))
        let status = call(router, "GET", "/migrate")
        #expect(status.0 == 200 && status.1.contains(#""state":"copying""#) && status.1.contains(#""iteration":2"#), "\(status)")
    }

    @Test func snapshotLoadTakesAFileBackendBeforeTheVMStarts() {
        let (router, started) = configuring()
        #expect(call(router, "PUT", "/snapshot/load", #"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}}"#).0 == 400)
        #expect(call(router, "PUT", "/snapshot/load", #"{"snapshot_path": "/s"}"#).0 == 400)
        #expect(call(router, "PUT", "/snapshot/load", #"{"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}"#).0 == 400)
        #expect(started.restore.withLock { $0 } == nil)
        let loaded = call(router, "PUT", "/snapshot/load", #"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}, "resume_vm": true}"#)
        #expect(loaded.0 == 204)
        let request = started.restore.withLock { $0 }
        #expect(request?.0 == SnapshotSource(statePath: "/s", memoryPath: "/m") && request?.1 == true)
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#).0 == 400)
    }

    @Test func theGettingStartedSequenceBootsWithTheConfiguredMachine() {
        let (router, started) = configuring()
        #expect(call(router, "GET", "/").1 == #"{"app_name":"swiftvmm","id":"test-1","state":"Not started","vmm_version":"\#(VMM.version)"}"#)
        #expect(call(router, "PUT", "/boot-source", #"{"kernel_image_path": "/k/vmlinux", "boot_args": "console=ttyS0"}"#).0 == 204)
        #expect(call(router, "PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#).0 == 204)
        #expect(call(router, "PATCH", "/machine-config", #"{"mem_size_mib": 512}"#).0 == 204)
        #expect(call(router, "GET", "/machine-config").1 == #"{"huge_pages":"None","mem_size_mib":512,"smt":false,"track_dirty_pages":false,"vcpu_count":2}"#)
        #expect(call(router, "PUT", "/balloon", #"{"amount_mib": 64, "deflate_on_oom": false, "stats_polling_interval_s": 2}"#).0 == 204)
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#).0 == 204)
        let config = started.withLock { $0 }
        #expect(config?.imagePath == "/k/vmlinux" && config?.commandLine == "console=ttyS0")
        #expect(config?.cpus == 2 && config?.memorySize == 512 << 20)
        #expect(config?.balloon == true && config?.balloonTarget == 64 << 20 && config?.balloonDeflateOnOOM == false
                && config?.balloonStatsInterval == 2)
        #expect(call(router, "GET", "/").1.contains(#""state":"Running""#))
        // Pre-boot only, from now on; a second start is refused.
        #expect(call(router, "PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128}"#)
                == (400, #"{"fault_message":"the requested operation is not supported after starting the microVM"}"#))
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#).0 == 400)
    }

    @Test func aStartWithoutABootSourceOrOneThatFailsLeavesTheVMConfigurable() {
        let (router, _) = configuring(fail: .badRequest("cannot read image /x: No such file or directory"))
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
                == (400, #"{"fault_message":"no boot source: PUT /boot-source first"}"#))
        #expect(call(router, "PUT", "/boot-source", #"{"kernel_image_path": "/x"}"#).0 == 204)
        #expect(call(router, "PUT", "/actions", #"{"action_type": "InstanceStart"}"#).1.contains("No such file"))
        #expect(call(router, "GET", "/").1.contains("Not started"))
        #expect(call(router, "PUT", "/boot-source", #"{"kernel_image_path": "/y"}"#).0 == 204)
    }

    @Test func bodiesAreCheckedStrictly() {
        let (router, _) = configuring()
        let cases: [(String, String, String, String)] = [
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "vcpus": 2}"#, "unknown field 'vcpus'"),
            ("PUT", "/machine-config", #"{"vcpu_count": "1", "mem_size_mib": 128}"#, "'vcpu_count' must be an integer"),
            ("PUT", "/machine-config", #"{"vcpu_count": 1}"#, "missing field 'mem_size_mib'"),
            ("PUT", "/machine-config", #"{"vcpu_count": 0, "mem_size_mib": 128}"#, "vcpu_count must be 1 to 64"),
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 1}"#, "mem_size_mib must be"),
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "smt": true}"#, "smt is not supported"),
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"}"#, "huge_pages must be"),
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 99999999999999999999}"#, "out of range"),
            ("PATCH", "/machine-config", #"{"vcpu_count": 65}"#, "vcpu_count must be 1 to 64"),
            ("PUT", "/boot-source", #"{"boot_args": "x"}"#, "missing field 'kernel_image_path'"),
            ("PUT", "/boot-source", #"{"kernel_image_path": ""}"#, "must not be empty"),
            ("PUT", "/boot-source", #"[1, 2]"#, "must be an object"),
            ("PUT", "/boot-source", #"{"kernel_image_path": "/k", "#, "not valid JSON"),
            ("PUT", "/boot-source", "", "needs a JSON body"),
            ("PUT", "/actions", #"{"action_type": "Reboot"}"#, "action_type must be InstanceStart"),
            ("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#, "i8042"),
            ("PUT", "/balloon", #"{"amount_mib": 64}"#, "missing field 'deflate_on_oom'"),
            ("PUT", "/balloon", #"{"amount_mib": 4096, "deflate_on_oom": true}"#, "more than the guest's 128 MiB"),
            ("PUT", "/balloon", #"{"amount_mib": 1, "deflate_on_oom": true, "stats_polling_interval_s": -1}"#, "stats_polling_interval_s must be"),
            ("PUT", "/balloon", #"{"amount_mib": 1, "deflate_on_oom": true, "free_page_hinting": true}"#, "free_page_hinting"),
            ("PATCH", "/vm", #"{"state": "Paused"}"#, "has not been started"),
            ("GET", "/balloon", "", "no balloon device is configured"),
        ]
        for (method, path, body, reason) in cases {
            let (status, reply) = call(router, method, path, body)
            #expect(status == 400 && reply.hasPrefix(#"{"fault_message":""#) && reply.contains(reason), "\(method) \(path) \(body): \(status) \(reply)")
        }
    }

    @Test func pathsAndMethods() {
        let (router, _) = configuring()
        #expect(call(router, "GET", "/nowhere") == (404, #"{"fault_message":"no such resource: /nowhere"}"#))
        #expect(call(router, "DELETE", "/machine-config") == (405, #"{"fault_message":"/machine-config takes GET, PUT, PATCH, not DELETE"}"#))
        #expect(call(router, "GET", "/machine-config/?x=1").0 == 200)
        #expect(call(router, "GET", "/version").1 == #"{"firecracker_version":"\#(VMM.version)"}"#)
        let hostile = call(router, "GET", "/\u{1b}[2J" + String(repeating: "a", count: 500))
        #expect(hostile.0 == 404 && !hostile.1.contains("\u{1b}") && hostile.1.count < 140, "\(hostile)")
    }

    @Test func aRunningVMIsPausedResumedAndBallooned() {
        let balloon = FakeBalloon(interval: 1)
        let vm = FakeVM(balloon: balloon)
        var config = VMConfig(imagePath: "/g/memhog.elf")
        config.balloon = true
        config.memorySize = 256 << 20
        let router = APIRouter(session: VMSession(instanceID: "run-1", running: vm, config: config))
        #expect(call(router, "PATCH", "/vm", #"{"state": "Paused"}"#).0 == 204)
        #expect(vm.isPaused && call(router, "GET", "/").1.contains(#""state":"Paused""#))
        #expect(call(router, "PATCH", "/vm", #"{"state": "Running"}"#).1.contains("must be Paused or Resumed"))
        #expect(call(router, "PATCH", "/vm", #"{"state": "Resumed"}"#).0 == 204 && !vm.isPaused)
        #expect(call(router, "PATCH", "/balloon", #"{"amount_mib": 100}"#).0 == 204)
        #expect(balloon.status().targetBytes == 100 << 20)
        #expect(call(router, "PATCH", "/balloon", #"{"amount_mib": 257}"#).0 == 400)
        #expect(call(router, "PATCH", "/balloon", #"{"amount_mib": -1}"#).0 == 400)
        #expect(call(router, "GET", "/balloon").1 == #"{"amount_mib":100,"deflate_on_oom":true,"stats_polling_interval_s":1}"#)
        balloon.state.withLock { $0.statistics = BalloonStatistics(values: [.freeMemory: 4096, .totalMemory: 8192], receivedAt: 0) }
        #expect(call(router, "GET", "/balloon/statistics").1
                == #"{"actual_mib":50,"actual_pages":12800,"free_memory":4096,"target_mib":100,"target_pages":25600,"total_memory":8192}"#)
        #expect(call(router, "PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 5}"#).0 == 204)
        #expect(balloon.statsIntervalSeconds == 5)
        #expect(call(router, "PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 0}"#).1.contains("cannot be turned on or off"))
        #expect(call(router, "GET", "/vm/config").1.contains(#""boot-source":{"kernel_image_path":"/g/memhog.elf"}"#))
        #expect(call(router, "PUT", "/boot-source", #"{"kernel_image_path": "/x"}"#).0 == 400)
    }

    @Test func swiftvmmsOwnEndpointsReportVCPUsAndMetrics() {
        let vm = FakeVM(balloon: FakeBalloon(interval: 1))
        let router = APIRouter(session: VMSession(instanceID: "own", running: vm, config: VMConfig(imagePath: "/g")))
        let list = call(router, "GET", "/swiftvmm/vcpus")
        #expect(list.0 == 200 && list.1.contains(#""exits":{"hlt":1,"io-out":5},"exits_total":6"#) && list.1.contains(#""index":1"#), "\(list)")
        #expect(call(router, "PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": [0]}"#).1.contains("has not started"))
        #expect(call(router, "PUT", "/swiftvmm/vcpus/7/affinity", #"{"cpus": [0]}"#).0 == 404)
        #expect(call(router, "PUT", "/swiftvmm/vcpus/x/affinity", #"{"cpus": [0]}"#).0 == 404)
        #expect(call(router, "PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": []}"#).1.contains("at least one"))
        #expect(call(router, "PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": [100000]}"#).1.contains("not online"))
        #expect(call(router, "PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": [0], "x": 1}"#).1.contains("unknown field 'x'"))
        #expect(call(router, "GET", "/swiftvmm/vcpus/0/affinity").0 == 405)
        let metrics = router.handle(APIRequest(method: "GET", path: "/swiftvmm/metrics"))
        let text = String(decoding: metrics.body, as: UTF8.self)
        #expect(metrics.status == 200 && metrics.contentType.hasPrefix("text/plain"))
        #expect(text.contains(#"swiftvmm_vcpu_exits_total{instance="own",vcpu="0",reason="io-out"} 5"#), "\(text)")
        #expect(text.contains("# TYPE swiftvmm_balloon_target_bytes gauge"))
        #expect(text.contains(#"swiftvmm_api_requests_total{status="404"} 2"#), "\(text)")
    }

    @Test func memoryBalloonDeviceAndStopEndpoints() {
        let balloon = FakeBalloon(interval: 1)
        balloon.setTarget(bytes: 8 << 20)
        let vm = FakeVM(balloon: balloon)
        var config = VMConfig(imagePath: "/g")
        config.memorySize = 64 << 20
        let router = APIRouter(session: VMSession(instanceID: "own", running: vm, config: config))
        let memory = call(router, "GET", "/swiftvmm/memory")
        #expect(memory.0 == 200 && memory.1.contains(#""guest_memory_mib":64"#) && memory.1.contains(#""guest_resident_kib":3072"#), "\(memory)")
        let device = call(router, "GET", "/swiftvmm/balloon")
        #expect(device.1.contains(#""actual_kib":4096"#) && device.1.contains(#""driver_ready":true"#)
                && device.1.contains(#""target_kib":8192"#), "\(device)")
        #expect(call(router, "PUT", "/swiftvmm/actions", #"{"action_type": "Reboot"}"#).1.contains("must be Stop"))
        #expect(!vm.isStopping)
        #expect(call(router, "PUT", "/swiftvmm/actions", #"{"action_type": "PowerButton"}"#).0 == 204)
        #expect(vm.buttonPresses.load(ordering: .relaxed) == 1 && !vm.isStopping)
        let buttonless = FakeVM(hasPowerButton: false)
        let noButton = APIRouter(session: VMSession(instanceID: "nb", running: buttonless, config: config))
        #expect(call(noButton, "PUT", "/swiftvmm/actions", #"{"action_type": "PowerButton"}"#).1.contains("no ACPI power button"))
        #expect(call(router, "PUT", "/swiftvmm/actions", #"{"action_type": "Stop"}"#).0 == 204 && vm.isStopping)
        let bare = APIRouter(session: VMSession(instanceID: "bare", running: FakeVM(), config: config))
        #expect(call(bare, "GET", "/swiftvmm/balloon").1.contains("no balloon"))
        let (idle, _) = configuring()
        #expect(call(idle, "PUT", "/swiftvmm/actions", #"{"action_type": "Stop"}"#).1.contains("has not been started"))
        #expect(call(idle, "GET", "/swiftvmm/memory").0 == 400)
    }
}
