import Foundation
import Glibc
import Host
import Synchronization
import Testing

/// A test's HTTP client over the API's Unix socket: raw requests in, status and body out.
struct RawHTTPClient {
    let path: String

    struct Reply { let status: Int; let body: String; var contentType = "" }

    /// Sends `raw` bytes on a new connection and reads one reply (nil: none within `timeout`).
    func exchange(_ raw: [UInt8], timeout: Int = 10_000) -> Reply? {
        guard let fd = try? SocketEndpoint.unix(path: path).connect(for: "test") else { return nil }
        let socket = FileDescriptor(rawValue: fd)
        defer { socket.close() }
        guard (try? socket.writeAll(raw, socket: true)) != nil else { return nil }
        return read(socket, timeout: timeout)
    }

    func request(_ method: String, _ target: String, _ body: String? = nil) -> Reply? {
        exchange(Array(Self.format(method, target, body).utf8))
    }

    static func format(_ method: String, _ target: String, _ body: String?) -> String {
        var text = "\(method) \(target) HTTP/1.1\r\nHost: localhost\r\n"
        if let body { text += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        return text + "\r\n" + (body ?? "")
    }

    /// One response: the head, then Content-Length bytes of body.
    func read(_ socket: FileDescriptor, timeout: Int) -> Reply? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Clocks.monotonicSeconds() + Double(timeout) / 1000
        while Clocks.monotonicSeconds() < deadline {
            if let reply = Self.parse(bytes) { return reply }
            guard let events = try? socket.poll(.readable, milliseconds: 100), !events.isEmpty else { continue }
            guard let count = try? socket.read(into: &buffer), count > 0 else { return Self.parse(bytes) }
            bytes += buffer[0..<count]
        }
        return nil
    }

    /// Replies to pipelined requests on `socket`: each one's status in order, until `count` came
    /// or `seconds` passed, and all the text read.
    static func pipelinedReplies(_ socket: FileDescriptor, count: Int, seconds: Double) -> (statuses: [Int], text: String) {
        var statuses: [Int] = []
        var raw: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Clocks.monotonicSeconds() + seconds
        while statuses.count < count && Clocks.monotonicSeconds() < deadline {
            guard let events = try? socket.poll(.readable, milliseconds: 100), !events.isEmpty,
                  let read = try? socket.read(into: &buffer), read > 0 else { continue }
            raw += buffer[0..<read]
            statuses = String(decoding: raw, as: UTF8.self).components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
        }
        return (statuses, String(decoding: raw, as: UTF8.self))
    }

    static func parse(_ bytes: [UInt8]) -> Reply? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let head = text[..<split.lowerBound].split(separator: "\r\n")
        guard let statusLine = head.first, let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
        func header(_ name: String) -> String? {
            head.dropFirst().compactMap { line -> String? in
                let parts = line.split(separator: ":", maxSplits: 1)
                return parts.count == 2 && parts[0].lowercased() == name ? parts[1].trimmingCharacters(in: .whitespaces) : nil
            }.first
        }
        let length = header("content-length").flatMap { Int($0) } ?? 0
        let body = text[split.upperBound...]
        guard body.utf8.count >= length else { return nil }
        return Reply(status: status, body: String(body), contentType: header("content-type") ?? "")
    }
}

/// Every request and reply of a test, for tools/api-validate.py to check against docs/openapi.yaml.
final class ExchangeRecorder {
    let client: RawHTTPClient
    var exchanges: [[String: Any]] = []

    init(client: RawHTTPClient) { self.client = client }

    func request(_ method: String, _ path: String, _ body: String? = nil) -> RawHTTPClient.Reply? { call(method, path, body) }

    func call(_ method: String, _ path: String, _ body: String? = nil) -> RawHTTPClient.Reply? {
        let reply = client.request(method, path, body)
        if let reply {
            exchanges.append(["method": method, "path": path.split(separator: "?").first.map(String.init) ?? path,
                              "status": reply.status, "body": reply.body,
                              "content_type": reply.contentType.split(separator: ";").first.map(String.init) ?? ""])
        }
        return reply
    }

    /// Runs the validator over every exchange so far; a mismatch fails the test.
    func validate(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = Harness.temporaryPath("exchanges.json")
        defer { try? FileManager.default.removeItem(atPath: file) }
        try JSONSerialization.data(withJSONObject: exchanges).write(to: URL(fileURLWithPath: file))
        let result = try runProgram("/usr/bin/env", ["python3", Harness.packageRoot + "/tools/api-validate.py",
                                                      Harness.packageRoot + "/docs/openapi.yaml", file])
        #expect(result.status == 0, "tools/api-validate.py (needs python3 with openapi-core: tools/setup.sh test installs it): \(result)",
                sourceLocation: sourceLocation)
    }
}

/// A swiftvmm process serving the API, stopped at the end of the test.
final class APIProcess {
    let process = Process()
    let socket = Harness.temporaryPath("api.sock")
    let outPath = Harness.temporaryPath("api.out")
    var client: RawHTTPClient { RawHTTPClient(path: socket) }

    init(_ arguments: [String]) throws {
        FileManager.default.createFile(atPath: outPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        // Before any "--": what follows it is the guest's command line.
        let split = arguments.firstIndex(of: "--") ?? arguments.count
        process.arguments = Array(arguments[..<split]) + ["--api-sock", socket] + Array(arguments[split...])
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }

    func wait(_ what: String, seconds: Double = 30, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline { if condition() { return true }; usleep(20_000) }
        Issue.record("timed out waiting for \(what)")
        return false
    }

    /// The exit status once the process ended by itself within `seconds`.
    func exitStatus(within seconds: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: outPath)
    }
}

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct APIServerTests {
    /// Firecracker's getting-started sequence, with curl: boot source, machine config, start.
    @Test func curlConfiguresAndStartsAVMOnServe() throws {
        requireGuests("hello.elf")
        let api = try APIProcess(["serve"])
        guard api.wait("the API socket", { FileManager.default.fileExists(atPath: api.socket) }) else { return }
        var info = stat()
        #expect(lstat(api.socket, &info) == 0 && info.st_mode & 0o777 == 0o600, "socket mode \(String(info.st_mode & 0o777, radix: 8))")
        func curl(_ method: String, _ path: String, _ body: String? = nil) throws -> RunResult {
            try runProgram("/usr/bin/curl", ["-sS", "--unix-socket", api.socket, "-X", method, "-w", "\n%{http_code}",
                                             "http://localhost" + path] + (body.map { ["-H", "Content-Type: application/json", "-d", $0] } ?? []))
        }
        let before = try curl("GET", "/")
        #expect(before.stdout.contains(#""state":"Not started""#) && before.stdout.hasSuffix("\n200"), "\(before)")
        let boot = try curl("PUT", "/boot-source", #"{"kernel_image_path": "\#(Harness.guest("hello.elf"))", "boot_args": "greeting=1"}"#)
        #expect(boot.stdout == "\n204", "\(boot)")
        let machine = try curl("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 96}"#)
        #expect(machine.stdout == "\n204", "\(machine)")
        let start = try curl("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(start.stdout == "\n204" || start.stderr.contains("Empty reply") || start.status == 7, "\(start)") // the guest may end first
        let status = api.exitStatus()
        #expect(status == 1, "hello ends with status 1: \(String(describing: status))")
        #expect(api.output.contains("Hello from a swiftvmm guest! cpl=3 ram=96 MiB cpus=2"), "\(api.output)")
        #expect(!FileManager.default.fileExists(atPath: api.socket), "the socket is removed at exit")
    }

    /// `run --api-sock`: the balloon set through the API takes memory from the guest and the
    /// process's RSS drops by it; statistics come back with Firecracker's names.
    @Test func theBalloonThroughTheAPIReturnsMemory() throws {
        requireGuests("memhog.elf")
        let api = try APIProcess(["run", Harness.guest("memhog.elf"), "--memory", "256M", "--balloon", "--balloon-stats-interval", "0.2",
                                  "--cmdline", "phases=touch:96M,free:96M,serve"])
        guard api.wait("the guest to serve its balloon", { api.output.contains("memhog: serving") }) else { return }
        let client = api.client
        guard api.wait("statistics", { client.request("GET", "/balloon/statistics")?.body.contains("free_memory") == true }) else { return }
        let rssBefore = try #require(Self.anonymousKiB(api.process.processIdentifier))
        #expect(client.request("PATCH", "/balloon", #"{"amount_mib": 64}"#)?.status == 204)
        guard api.wait("the balloon to hold 64 MiB", { client.request("GET", "/balloon/statistics")?.body.contains(#""actual_mib":64,"#) == true })
        else { return }
        let rssAfter = try #require(Self.anonymousKiB(api.process.processIdentifier))
        #expect(rssBefore - rssAfter >= 60 * 1024, "RssAnon \(rssBefore) -> \(rssAfter) KiB after ballooning 64 MiB")
        let stats = client.request("GET", "/balloon/statistics")
        for field in ["target_pages", "actual_pages", "target_mib", "free_memory", "total_memory", "available_memory"] {
            #expect(stats?.body.contains(#""\#(field)":"#) == true, "\(field) in \(stats?.body ?? "no reply")")
        }
        #expect(client.request("PATCH", "/vm", #"{"state": "Paused"}"#)?.status == 204)
        #expect(client.request("GET", "/")?.body.contains(#""state":"Paused""#) == true)
        #expect(client.request("PATCH", "/vm", #"{"state": "Resumed"}"#)?.status == 204)
        #expect(client.request("PUT", "/boot-source", #"{"kernel_image_path": "/x"}"#)?.status == 400) // pre-boot only
    }

    /// 50 clients at once, mixed requests, while the guest runs: every one answered, the guest
    /// still serving its balloon afterwards.
    @Test func fiftyConcurrentClientsAreAllAnswered() throws {
        requireGuests("memhog.elf")
        let api = try APIProcess(["run", Harness.guest("memhog.elf"), "--memory", "128M", "--balloon", "--cmdline", "phases=serve"])
        guard api.wait("the guest", { api.output.contains("memhog: serving") }) else { return }
        let client = api.client
        let requests: [(String, String, String?)] = [
            ("GET", "/", nil), ("GET", "/machine-config", nil), ("GET", "/vm/config", nil), ("GET", "/balloon", nil),
            ("PATCH", "/balloon", #"{"amount_mib": 0}"#), ("GET", "/version", nil), ("PUT", "/machine-config", #"{"vcpu_count": 1}"#),
        ]
        let answered = Mutex(0), wrong = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 50) { worker in
            for round in 0..<10 {
                let (method, path, body) = requests[(worker + round) % requests.count]
                let reply = client.request(method, path, body)
                let expected = method == "PUT" ? 400 : method == "PATCH" ? 204 : 200
                if reply?.status == expected { answered.withLock { $0 += 1 } } else {
                    wrong.withLock { $0.append("\(method) \(path): \(reply.map { "\($0.status) \($0.body)" } ?? "no reply")") }
                }
            }
        }
        #expect(answered.withLock { $0 } == 500, "\(wrong.withLock { $0.prefix(5) })")
        #expect(client.request("PATCH", "/balloon", #"{"amount_mib": 16}"#)?.status == 204)
        #expect(api.wait("the guest to inflate after the flood", { api.output.contains("balloon 16 MiB (target 16 MiB)") }))
    }

    /// Malformed and hostile requests each get a 4xx with a fault message, and the server keeps
    /// serving.
    @Test func malformedRequestsAreRefusedAndTheServerKeepsServing() throws {
        requireGuests("memhog.elf")
        let api = try APIProcess(["run", Harness.guest("memhog.elf"), "--memory", "128M", "--cmdline", "phases=serve"])
        guard api.wait("the API socket", { api.client.request("GET", "/")?.status == 200 }) else { return }
        let client = api.client
        // Half a request, then silence: held open while every other client is served.
        let silent = try SocketEndpoint.unix(path: api.socket).connect(for: "test")
        defer { close(silent) }
        _ = try? FileDescriptor(rawValue: silent).writeAll(Array("PUT /balloon HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"amo".utf8), socket: true)

        let cases: [(String, [UInt8], Int, String)] = [
            ("bad JSON", Array(RawHTTPClient.format("PUT", "/machine-config", "{nope").utf8), 400, "not valid JSON"),
            ("wrong type", Array(RawHTTPClient.format("PATCH", "/vm", #"{"state": 1}"#).utf8), 400, "'state' must be a string"),
            ("unknown path", Array(RawHTTPClient.format("GET", "/secrets", nil).utf8), 404, "no such resource"),
            ("wrong method", Array(RawHTTPClient.format("POST", "/vm", "{}").utf8), 405, "takes PATCH"),
            ("huge body", Array("PUT /boot-source HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n".utf8), 413, "larger than"),
            ("body over the limit", Array(RawHTTPClient.format("PUT", "/boot-source", String(repeating: "x", count: 70_000)).utf8), 413, "larger than"),
            ("binary garbage", [0x00, 0xFF, 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + Array("\r\n\r\n".utf8), 400, "malformed HTTP request"),
        ]
        for (name, bytes, status, reason) in cases {
            let reply = client.exchange(bytes)
            #expect(reply?.status == status && reply?.body.contains(reason) == true, "\(name): \(reply.map { "\($0.status) \($0.body)" } ?? "no reply")")
            #expect(client.request("GET", "/")?.status == 200, "still serving after \(name)")
        }
        // Keep-alive and pipelining: three requests in one write, three replies in order.
        let pipelined = RawHTTPClient.format("GET", "/version", nil) + RawHTTPClient.format("GET", "/nowhere", nil) + RawHTTPClient.format("GET", "/", nil)
        if let fd = try? SocketEndpoint.unix(path: api.socket).connect(for: "test") {
            let socket = FileDescriptor(rawValue: fd)
            defer { socket.close() }
            try socket.writeAll(Array(pipelined.utf8), socket: true)
            let statuses = RawHTTPClient.pipelinedReplies(socket, count: 3, seconds: 10).statuses
            #expect(statuses == [200, 404, 200], "pipelined replies: \(statuses)")
        }
    }

    /// Every endpoint, before and after boot, with good and bad requests: each reply checked
    /// against docs/openapi.yaml by openapi-core (tools/api-validate.py), which also checks that
    /// the Firecracker-shaped schemas use only Firecracker's field names.
    @Test func everyReplyMatchesTheOpenAPIDocument() throws {
        requireGuests("memhog.elf")
        let api = try APIProcess(["serve"])
        guard api.wait("the API socket", { FileManager.default.fileExists(atPath: api.socket) }) else { return }
        let recorder = ExchangeRecorder(client: api.client)
        func call(_ method: String, _ path: String, _ body: String? = nil) -> RawHTTPClient.Reply? { recorder.call(method, path, body) }
        for (method, path, body) in [
            ("GET", "/", nil), ("GET", "/version", nil), ("GET", "/machine-config", nil), ("GET", "/vm/config", nil),
            ("GET", "/balloon", nil), ("GET", "/balloon/statistics", nil), ("PATCH", "/vm", #"{"state": "Paused"}"#),
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "extra": 1}"#),
            ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128}"#), ("PATCH", "/machine-config", #"{"vcpu_count": 2}"#),
            ("PUT", "/boot-source", #"{"kernel_image_path": "\#(Harness.guest("memhog.elf"))", "boot_args": "phases=serve"}"#),
            ("PUT", "/balloon", #"{"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}"#),
            ("GET", "/balloon", nil), ("GET", "/vm/config", nil), ("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#),
            ("PUT", "/logger", #"{"level": "Warning"}"#), ("PUT", "/logger", #"{"level": "Loud"}"#),
            ("PUT", "/metrics", #"{"metrics_path": "/nonexistent/dir/m"}"#),
            ("PUT", "/actions", #"{"action_type": "InstanceStart"}"#),
        ] as [(String, String, String?)] { _ = call(method, path, body) }
        guard api.wait("the guest", { api.output.contains("memhog: serving") }) else { return }
        for (method, path, body) in [
            ("GET", "/", nil), ("PATCH", "/vm", #"{"state": "Paused"}"#), ("GET", "/", nil), ("PATCH", "/vm", #"{"state": "Resumed"}"#),
            ("PATCH", "/balloon", #"{"amount_mib": 8}"#), ("GET", "/balloon", nil), ("GET", "/vm/config", nil),
            ("PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 2}"#), ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 64}"#),
            ("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#), ("GET", "/nowhere", nil), ("DELETE", "/vm", nil),
            ("GET", "/machine-config?x=1", nil), ("GET", "/swiftvmm/vcpus", nil), ("GET", "/swiftvmm/metrics", nil),
            ("PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": [0, 1]}"#), ("PUT", "/swiftvmm/vcpus/9/affinity", #"{"cpus": [0]}"#),
            ("GET", "/swiftvmm/memory", nil), ("GET", "/swiftvmm/balloon", nil), ("PUT", "/swiftvmm/actions", #"{"action_type": "Reset"}"#),
        ] as [(String, String, String?)] { _ = call(method, path, body) }
        guard api.wait("statistics", { call("GET", "/balloon/statistics")?.body.contains("free_memory") == true }) else { return }
        #expect(call("PUT", "/swiftvmm/actions", #"{"action_type": "Stop"}"#)?.status == 204)
        #expect(api.exitStatus() == 72)
        #expect(recorder.exchanges.count >= 30)
        try recorder.validate()
    }

    /// swiftvmm's own endpoints: per-vCPU counters that move while the guest runs (never a stale
    /// snapshot), pinning a vCPU thread, and a Prometheus endpoint prometheus-client parses.
    @Test func vcpuCountersAreLiveAndAVCPUCanBePinned() throws {
        requireGuests("timer.elf")
        // The timer guest takes PIT and RTC interrupts for several seconds: exits keep coming.
        let api = try APIProcess(["run", Harness.guest("timer.elf"), "--pit", "emulated"])
        let client = api.client
        func vcpus() -> [[String: Any]] {
            guard let body = client.request("GET", "/swiftvmm/vcpus")?.body.data(using: .utf8),
                  let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return [] }
            return object["vcpus"] as? [[String: Any]] ?? []
        }
        func total() -> Int { (vcpus().first?["exits_total"] as? Int) ?? 0 }
        guard api.wait("vCPU exits", { total() > 0 }) else { return }
        let first = total()
        guard api.wait("more exits, counted live", { total() > first }) else { return }
        let vcpu = try #require(vcpus().first)
        #expect(vcpu["thread_id"] is Int && vcpu["run_time_ns"] is Int && (vcpu["affinity"] as? [Int])?.isEmpty == false, "\(vcpu)")
        #expect(client.request("PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": [1]}"#)?.status == 204)
        #expect((vcpus().first?["affinity"] as? [Int]) == [1])
        #expect(api.wait("the vCPU to run on host CPU 1", { (vcpus().first?["host_cpu"] as? Int) == 1 }))
        #expect(client.request("PUT", "/swiftvmm/vcpus/0/affinity", #"{"cpus": [0, 1]}"#)?.status == 204)

        let metrics = try #require(client.request("GET", "/swiftvmm/metrics"))
        let file = Harness.temporaryPath("metrics.txt")
        defer { try? FileManager.default.removeItem(atPath: file) }
        try metrics.body.write(toFile: file, atomically: true, encoding: .utf8)
        let parse = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
            exits = sum(s.value for s in families["swiftvmm_vcpu_exits"].samples)
            assert exits > 0, exits
            assert families["swiftvmm_vcpu_run_seconds"].type == "counter"
            print("families", len(families), "exits", int(exits))
            """
        let result = try runProgram("/usr/bin/env", ["python3", "-c", parse, file])
        #expect(result.status == 0 && result.stdout.hasPrefix("families "), "prometheus-client (tools/setup.sh test installs it): \(result)")
    }

    /// PUT /logger sends the VMM's log lines to a file at the level asked; PUT /metrics writes a
    /// JSON line of counters on FlushMetrics (and every 60 s).
    @Test func loggerAndMetricsGoWhereTheAPISays() throws {
        requireGuests("memhog.elf")
        let api = try APIProcess(["serve"])
        guard api.wait("the API socket", { FileManager.default.fileExists(atPath: api.socket) }) else { return }
        let client = api.client
        let log = Harness.temporaryPath("vmm.log"), metrics = Harness.temporaryPath("metrics.jsonl")
        defer { for path in [log, metrics] { try? FileManager.default.removeItem(atPath: path) } }
        #expect(client.request("PUT", "/logger", #"{"log_path": "\#(log)", "level": "Info", "show_level": true}"#)?.status == 204)
        #expect(client.request("PUT", "/logger", #"{"level": "Loud"}"#)?.body.contains("level must be") == true)
        #expect(client.request("PUT", "/metrics", #"{"metrics_path": "\#(metrics)"}"#)?.status == 204)
        #expect(client.request("PUT", "/metrics", #"{"metrics_path": "\#(metrics)"}"#)?.body.contains("already configured") == true)
        #expect(client.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(Harness.guest("memhog.elf"))", "boot_args": "phases=serve"}"#)?.status == 204)
        #expect(client.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)?.status == 204)
        guard api.wait("the guest", { api.output.contains("memhog: serving") }) else { return }
        #expect(client.request("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#)?.status == 204)
        let logged = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(logged.contains(" info swiftvmm: [VMM] VM built: 1 vCPU(s), 128 MiB RAM"), "log file: \(logged)")
        let lines = ((try? String(contentsOfFile: metrics, encoding: .utf8)) ?? "").split(separator: "\n")
        let line = try #require(lines.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }, "\(lines)")
        #expect((line["vm"] as? [String: Any])?["state"] as? String == "Running", "\(line)")
        #expect(((line["vcpus"] as? [[String: Any]])?.first?["exits_total"] as? Int ?? 0) > 0, "\(line)")
        #expect(line["utc_timestamp_ms"] is Int && (line["api_server"] as? [String: Any])?["replies"] != nil, "\(line)")
    }

    /// `swiftvmm host --api-sock`: the host's last period, a VM's vCPUs and balloon, and every
    /// VM's counters in one Prometheus exposition.
    @Test func hostModeServesItsVMs() throws {
        requireGuests("cpuburn.elf", "memhog.elf")
        let config = Harness.temporaryPath("host.json")
        defer { try? FileManager.default.removeItem(atPath: config) }
        try """
            {"period": 0.5, "placement": "round-robin", "memoryPolicy": "none", "vms": [
              {"name": "burn", "image": "\(Harness.guest("cpuburn.elf"))", "memory": "32M", "cmdline": "duty=10"},
              {"name": "hog", "image": "\(Harness.guest("memhog.elf"))", "memory": "128M", "balloon": true, "cmdline": "phases=serve"}]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let api = try APIProcess(["host", config, "--duration", "60", "--quiet"])
        let client = ExchangeRecorder(client: api.client)
        guard api.wait("a period", { client.request("GET", "/swiftvmm/host")?.status == 200 }) else { return }
        let host = client.request("GET", "/swiftvmm/host")?.body ?? ""
        #expect(host.contains(#""name":"burn""#) && host.contains(#""name":"hog""#) && host.contains(#""pcpus""#), "\(host)")
        #expect(client.request("GET", "/swiftvmm/host/vms/burn/vcpus")?.body.contains(#""exits_total""#) == true)
        #expect(client.request("GET", "/swiftvmm/host/vms/nobody/vcpus")?.status == 404)
        #expect(client.request("PATCH", "/swiftvmm/host/vms/burn/balloon", #"{"amount_mib": 8}"#)?.body.contains("no balloon") == true)
        #expect(client.request("PATCH", "/swiftvmm/host/vms/hog/balloon", #"{"amount_mib": 16}"#)?.status == 204)
        #expect(api.wait("hog's balloon", { client.request("GET", "/swiftvmm/host/vms/hog/balloon/statistics")?.body.contains(#""actual_mib":16,"#) == true }))
        let metrics = client.request("GET", "/swiftvmm/metrics")?.body ?? ""
        #expect(metrics.contains(#"swiftvmm_vcpu_exits_total{instance="burn",vcpu="0",reason="#) && metrics.contains(#"swiftvmm_balloon_actual_bytes{instance="hog"} 16777216"#),
                "\(metrics)")
        #expect(metrics.components(separatedBy: "# TYPE swiftvmm_vcpu_exits_total").count == 2, "one family for every VM")
        try client.validate()
    }

    /// A termination signal before InstanceStart ends serve with 128+N and removes the socket.
    @Test func serveEndsOnASignalBeforeTheVMStarts() throws {
        let api = try APIProcess(["serve"])
        guard api.wait("the API socket", { api.client.request("GET", "/")?.status == 200 }) else { return }
        kill(api.process.processIdentifier, SIGTERM)
        #expect(api.exitStatus() == 128 + SIGTERM)
        #expect(!FileManager.default.fileExists(atPath: api.socket))
    }

    @Test func theSocketNeverReplacesAFileThatIsNoSocket() throws {
        let path = Harness.temporaryPath("not-a-socket")
        FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try swiftvmm(["serve", "--api-sock", path])
        #expect(result.status == 70 && result.stderr.contains("exists and is not a socket") && result.stderr.split(separator: "\n").count == 1, "\(result)")
        #expect((try? String(contentsOfFile: path, encoding: .utf8)) == "keep me")
    }

    static func anonymousKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") }
        return line.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") }
    }
}
