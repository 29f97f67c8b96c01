import API
import Glibc
import Host
import VMMCore
import FoundationEssentials
import NIOHTTP1
import VMM

/// `swiftvmm control`: each request as the API calls it takes (ControlCommand), the replies as
/// lines of `key=value` words, or the API's own JSON with `json`. A request the API refuses is a
/// reply with an error (its `fault_message`); a socket that cannot be reached is a thrown error.
public enum ControlClient {
    public struct Reply: Sendable, Equatable {
        /// The lines to print (JSON with `json`).
        public var text: String
        /// Why the request failed, when it did.
        public var error: String?

        static func failed(_ why: String) -> Reply { Reply(text: "", error: why) }
    }

    public static func send(_ request: String, to socketPath: String, json: Bool = false, timeoutSeconds: Int64 = 10) throws(ControlError) -> Reply {
        let command: ControlCommand
        do { command = try ControlCommand.parse(request) } catch { return .failed(error.description) }
        return try perform(command, to: socketPath, json: json, timeoutSeconds: timeoutSeconds)
    }

    /// Carries out one parsed request.
    public static func perform(_ command: ControlCommand, to socketPath: String, json: Bool = false, timeoutSeconds: Int64 = 10) throws(ControlError) -> Reply {
        let client = APIClient(socketPath: socketPath, timeoutSeconds: timeoutSeconds)
        return try Exchange(client: client, json: json).perform(command)
    }

    /// Starts a live migration of the VM behind `socketPath` and follows it (GET /migrate every
    /// 100 ms), handing each new round's line to `progress`, until it completes or fails.
    public static func migrate(socket socketPath: String, destination: String, downtimeMilliseconds: Int, timeoutSeconds: Int,
                               naive: Bool, json: Bool, progress: (String) -> Void) throws(ControlError) -> Reply {
        let client = APIClient(socketPath: socketPath, timeoutSeconds: 30)
        return try Exchange(client: client, json: json).perform {
            let body = try JSONEncoder().encode(MigrateBody(destination_url: destination, downtime_ms: downtimeMilliseconds,
                                                            timeout_s: timeoutSeconds, mode: naive ? "naive" : "precopy"))
            _ = try $0.call(.PUT, "/migrate", body: String(decoding: body, as: UTF8.self))
            var shown = -1
            while true {
                let (status, raw) = try $0.get(MigrationStatus.self, "/migrate")
                if status.iteration != shown || status.state == "completed" || status.state == "failed" {
                    shown = status.iteration
                    progress(Exchange.line(status))
                }
                switch status.state {
                case "completed": return $0.done([Exchange.line(status)], raw: raw)
                case "failed": return Reply(text: json ? raw : "", error: status.error ?? "the migration failed")
                default: usleep(100_000)
                }
            }
        }
    }

    /// "0,2-3" as [0, 2, 3]; nil for anything else. CPU numbers stay below 8192 (Linux's
    /// largest NR_CPUS), and so does the list's length, however many ranges repeat.
    public static func cpuList(_ text: String) -> [Int]? {
        var cpus: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(bounds.count), let first = bounds[0], let last = bounds[bounds.count - 1],
                  first >= 0, first <= last, last < 8192, cpus.count + (last - first) < 8192 else { return nil }
            cpus += Array(first...last)
        }
        return cpus.isEmpty ? nil : cpus
    }
}

/// One request's calls; each step either yields its decoded reply or ends the request with the
/// API's fault message.
private struct Exchange {
    let client: APIClient
    let json: Bool

    struct Refused: Error { let reply: ControlClient.Reply }

    func perform(_ command: ControlCommand) throws(ControlError) -> ControlClient.Reply {
        try perform { try $0.reply(to: command) }
    }

    /// Runs `steps`; a refusal is the reply, an unreachable socket the thrown error.
    func perform(_ steps: (Exchange) throws -> ControlClient.Reply) throws(ControlError) -> ControlClient.Reply {
        do { return try steps(self) } catch let error as ControlError { throw error } catch let refused as Refused {
            return refused.reply
        } catch {
            return .failed("\(error)")
        }
    }

    /// One migration status as a line of key=value words.
    static func line(_ status: MigrationStatus) -> String {
        var words = ["state=\(status.state)", "iteration=\(status.iteration)", "pages_sent=\(status.pages_sent)",
                     "mib_sent=\(status.bytes_sent >> 20)", "dirty_pages=\(status.dirty_pages)",
                     "dirty_mib_s=\(formatOneDecimal(status.dirty_rate_mib_s))", "bandwidth_mib_s=\(formatOneDecimal(status.bandwidth_mib_s))"]
        if let estimate = status.estimated_downtime_ms { words.append("estimated_downtime_ms=\(formatOneDecimal(estimate))") }
        words.append("elapsed_ms=\(formatOneDecimal(status.elapsed_ms))")
        if let downtime = status.downtime_ms { words.append("downtime_ms=\(formatOneDecimal(downtime))") }
        return words.joined(separator: " ")
    }

    /// Calls `method path`; a 2xx reply's body, or Refused with the fault message.
    func call(_ method: HTTPMethod, _ path: String, body: String? = nil) throws -> [UInt8] {
        let response = try client.send(method, path, body: body)
        guard (200..<300).contains(response.status) else {
            let fault = (try? JSONDecoder().decode(Fault.self, from: Data(response.body)))?.fault_message
            let why = fault ?? "HTTP \(response.status) from \(method) \(path)"
            throw Refused(reply: ControlClient.Reply(text: json ? response.text : "", error: why))
        }
        return response.body
    }

    func get<T: Decodable>(_ type: T.Type, _ path: String) throws -> (T, raw: String) {
        let body = try call(.GET, path)
        do { return (try JSONDecoder().decode(T.self, from: Data(body)), String(decoding: body, as: UTF8.self)) } catch {
            throw Refused(reply: .failed("GET \(path): the reply is not what the API documents"))
        }
    }

    func done(_ lines: [String], raw: String) -> ControlClient.Reply {
        ControlClient.Reply(text: json ? raw : lines.joined(separator: "\n"), error: nil)
    }

    func reply(to command: ControlCommand) throws -> ControlClient.Reply {
        switch command {
        case .nothing:
            return ControlClient.Reply(text: "", error: nil)
        case .help:
            return ControlClient.Reply(text: ControlCommand.summary, error: nil)
        case .info:
            let (info, raw) = try get(InstanceInfo.self, "/")
            return done(["id=\(info.id) state=\(info.state.replacingSpaces) vmm_version=\(info.vmm_version) app_name=\(info.app_name)"], raw: raw)
        case .balloonStatus:
            let lines = try balloonLines()
            return done(lines.text, raw: lines.raw)
        case .balloonTarget(let text):
            guard let size = ByteSize(parsing: text) else { return .failed("'\(text.printableExcerpt())' is not a size (bytes, K, M or G)") }
            guard size.bytes % (1 << 20) == 0 else { return .failed("the balloon's target is a whole number of MiB, not \(size)") }
            guard size.bytes >> 20 <= UInt64(Int32.max) else { return .failed("balloon target \(size) is more than any guest's memory") }
            _ = try call(.PATCH, "/balloon", body: #"{"amount_mib": \#(size.bytes >> 20)}"#)
            let (device, raw) = try get(BalloonDeviceInfo.self, "/swiftvmm/balloon")
            return done(["balloon: target_kib=\(device.target_kib)"], raw: raw)
        case .memory:
            let (memory, raw) = try get(MemoryInfo.self, "/swiftvmm/memory")
            return done([Self.line(memory)], raw: raw)
        case .vcpus:
            let (list, raw) = try get(VCPUListReply.self, "/swiftvmm/vcpus")
            return done(list.vcpus.flatMap(Self.lines), raw: raw)
        case .pin(let vcpu, let cpus):
            guard let list = ControlClient.cpuList(cpus) else { return .failed("'\(cpus.printableExcerpt())' is not a list of host CPUs (e.g. 1 or 0,2-3)") }
            guard let index = Int(vcpu), index >= 0 else { return .failed("'\(vcpu.printableExcerpt())' is not a vCPU number") }
            _ = try call(.PUT, "/swiftvmm/vcpus/\(index)/affinity", body: #"{"cpus": [\#(list.map(String.init).joined(separator: ", "))]}"#)
            let (after, raw) = try get(VCPUListReply.self, "/swiftvmm/vcpus")
            let pinned = after.vcpus.first { $0.index == index }
            return done(["vcpu\(index): affinity=\(Self.ranges(pinned?.affinity ?? list))"], raw: raw)
        case .stats:
            let (list, vcpusRaw) = try get(VCPUListReply.self, "/swiftvmm/vcpus")
            let (memory, memoryRaw) = try get(MemoryInfo.self, "/swiftvmm/memory")
            var lines = list.vcpus.flatMap(Self.lines)
            var raw = #"{"vcpus":\#(vcpusRaw),"memory":\#(memoryRaw)"#
            // A VM without a balloon leaves its lines out; every other refusal is the reply.
            if let balloon = try? balloonLines() {
                lines += balloon.text
                raw += #","balloon":\#(balloon.raw)"#
            }
            lines.append(Self.line(memory))
            return done(lines, raw: raw + "}")
        case .pause, .resume:
            let state = command == .pause ? "Paused" : "Resumed"
            _ = try call(.PATCH, "/vm", body: #"{"state": "\#(state)"}"#)
            let (info, raw) = try get(InstanceInfo.self, "/")
            return done(["state=\(info.state.replacingSpaces)"], raw: raw)
        case .powerButton:
            _ = try call(.PUT, "/swiftvmm/actions", body: #"{"action_type": "PowerButton"}"#)
            return done(["pressed"], raw: #"{"action_type":"PowerButton"}"#)
        case .stop:
            _ = try call(.PUT, "/swiftvmm/actions", body: #"{"action_type": "Stop"}"#)
            return done(["stopping"], raw: #"{"action_type":"Stop"}"#)
        case .snapshot(let statePath, let memoryPath, let thenStop, let diff):
            return try snapshot(state: Self.absolute(statePath), memory: Self.absolute(memoryPath), thenStop: thenStop, diff: diff)
        }
    }

    /// Pause if running, create, then resume what this paused (or stop the VM when asked).
    func snapshot(state statePath: String, memory memoryPath: String, thenStop: Bool, diff: Bool) throws -> ControlClient.Reply {
        let (before, _) = try get(InstanceInfo.self, "/")
        let wasRunning = before.state == "Running"
        if wasRunning { _ = try call(.PATCH, "/vm", body: #"{"state": "Paused"}"#) }
        let body = try JSONEncoder().encode(["snapshot_type": diff ? "Diff" : "Full", "snapshot_path": statePath, "mem_file_path": memoryPath])
        let start = Clocks.monotonicSeconds()
        do { _ = try call(.PUT, "/snapshot/create", body: String(decoding: body, as: UTF8.self)) } catch {
            if wasRunning { _ = try? call(.PATCH, "/vm", body: #"{"state": "Resumed"}"#) }
            throw error
        }
        let seconds = Clocks.monotonicSeconds() - start
        var after = "paused"
        if thenStop {
            _ = try call(.PUT, "/swiftvmm/actions", body: #"{"action_type": "Stop"}"#)
            after = "stopped"
        } else if wasRunning {
            _ = try call(.PATCH, "/vm", body: #"{"state": "Resumed"}"#)
            after = "resumed"
        }
        let milliseconds = formatOneDecimal(seconds * 1000)
        return done(["state_file=\(statePath)", "memory_file=\(memoryPath)", "milliseconds=\(milliseconds)", "vm=\(after)"],
                    raw: String(decoding: try JSONEncoder().encode(["state_file": statePath, "memory_file": memoryPath,
                                                                    "milliseconds": milliseconds, "vm": after]), as: UTF8.self))
    }

    /// A path as the VMM must see it: relative ones are the client's, not the server's.
    static func absolute(_ path: String) -> String {
        guard !path.hasPrefix("/") else { return path }
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return String(cString: buffer) + "/" + path
    }

    /// The balloon's configuration, device counters and the guest's statistics (when it polls them).
    func balloonLines() throws -> (text: [String], raw: String) {
        let (config, configRaw) = try get(BalloonConfiguration.self, "/balloon")
        let (device, deviceRaw) = try get(BalloonDeviceInfo.self, "/swiftvmm/balloon")
        var text = [
            "balloon: driver_ready=\(device.driver_ready ? 1 : 0) needs_reset=\(device.needs_reset ? 1 : 0) "
                + "deflate_on_oom=\(config.deflate_on_oom ? 1 : 0) stats_polling_interval_s=\(config.stats_polling_interval_s)",
            "balloon: target_kib=\(device.target_kib) actual_kib=\(device.actual_kib) inflated=\(device.inflated_pages) "
                + "deflated=\(device.deflated_pages) released=\(device.released_pages) release_calls=\(device.release_calls) "
                + "rejected_pfns=\(device.rejected_pfns) rejected_buffers=\(device.rejected_buffers) stats_updates=\(device.stats_updates) "
                + "stats_rejected=\(device.stats_rejected) queue_errors=\(device.queue_errors)",
        ]
        var raw = #"{"config":\#(configRaw),"device":\#(deviceRaw)"#
        if config.stats_polling_interval_s > 0 {
            let (statistics, statisticsRaw) = try get(StatisticsFields.self, "/balloon/statistics")
            let reported = statistics.guestValues
            if !reported.isEmpty { text.append("balloon stats: " + reported.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) }
            raw += #","statistics":\#(statisticsRaw)"#
        }
        return (text, raw + "}")
    }

    static func line(_ memory: MemoryInfo) -> String {
        "memory: peak_rss_kib=\(memory.peak_rss_kib) anon_kib=\(memory.anon_kib) file_kib=\(memory.file_kib) "
            + "guest_resident_kib=\(memory.guest_resident_kib) overhead_kib=\(memory.overhead_kib) "
            + "anon_overhead_kib=\(memory.anon_overhead_kib) guest_memory_mib=\(memory.guest_memory_mib)"
            + (memory.shared_kib.map { " shared_kib=\($0)" } ?? "") + (memory.private_kib.map { " private_kib=\($0)" } ?? "")
            + (memory.pss_anon_kib.map { " pss_anon_kib=\($0)" } ?? "")
    }

    static func lines(_ vcpu: VCPUInfo) -> [String] {
        var lines = ["vcpu\(vcpu.index): exits=\(vcpu.exits_total) thread=\(vcpu.thread_id.map(String.init) ?? "-") "
                     + "host_cpu=\(vcpu.host_cpu.map(String.init) ?? "-") affinity=\(ranges(vcpu.affinity)) "
                     + "run_ms=\(vcpu.run_time_ns / 1_000_000) wait_ms=\(vcpu.wait_time_ns / 1_000_000)"
                     + (vcpu.guest_steal_ns.map { " guest_steal_ms=\($0 / 1_000_000)" } ?? "")]
        let reasons = vcpu.exits.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        if !reasons.isEmpty { lines.append("  by reason: " + reasons.joined(separator: " ")) }
        return lines
    }

    /// "0-1,3" for [0, 1, 3].
    static func ranges(_ cpus: [Int]) -> String {
        var parts: [String] = []
        var index = 0
        let sorted = cpus.sorted()
        while index < sorted.count {
            var end = index
            while end + 1 < sorted.count, sorted[end + 1] == sorted[end] + 1 { end += 1 }
            parts.append(end == index ? "\(sorted[index])" : "\(sorted[index])-\(sorted[end])")
            index = end + 1
        }
        return parts.isEmpty ? "-" : parts.joined(separator: ",")
    }

}

/// The fault reply every refused request carries.
private struct Fault: Decodable { var fault_message: String }
private struct MigrateBody: Encodable { var destination_url: String; var downtime_ms: Int; var timeout_s: Int; var mode: String }

/// `GET /swiftvmm/vcpus`.
private struct VCPUListReply: Decodable { var vcpus: [VCPUInfo] }

/// `GET /balloon/statistics`, read loosely: the guest's statistics are whichever fields it sent.
private struct StatisticsFields: Decodable {
    var guestValues: [(key: String, value: UInt64)]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        let sizes: Set<String> = ["target_pages", "actual_pages", "target_mib", "actual_mib"]
        guestValues = try container.allKeys.filter { !sizes.contains($0.stringValue) }.sorted { $0.stringValue < $1.stringValue }
            .map { (key: $0.stringValue, value: try container.decode(UInt64.self, forKey: $0)) }
    }
}

private extension String {
    /// "Not started" as one word of a `key=value` line.
    var replacingSpaces: String { split(separator: " ").joined(separator: "_") }
}
