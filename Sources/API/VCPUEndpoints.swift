import Host
import Placement
import VMM

/// swiftvmm's own endpoints, beside Firecracker's: what each vCPU thread does on the host.
/// `GET /swiftvmm/vcpus`, `PUT /swiftvmm/vcpus/N/affinity`, `GET /swiftvmm/metrics` (Prometheus).

/// One vCPU as `GET /swiftvmm/vcpus` reports it.
public struct VCPUInfo: Codable, Sendable, Equatable {
    public var index: Int
    /// The vCPU thread's kernel id (nil before it started).
    public var thread_id: Int32?
    /// The host CPU it last ran on, and those it may run on.
    public var host_cpu: Int?
    public var affinity: [Int]
    /// Exits by reason (ExitEvent's names: io-in, io-out, mmio-read, ..., intr) and their sum.
    public var exits: [String: UInt64]
    public var exits_total: UInt64
    /// Host CPU time the thread ran, and time it was runnable but waiting for a CPU (schedstat).
    public var run_time_ns: UInt64
    public var wait_time_ns: UInt64
    /// Steal time as the guest's steal-time record (KVM_FEATURE_STEAL_TIME) holds it: the same
    /// run_delay as wait_time_ns, seen from inside (absent until the guest enables it).
    public var guest_steal_ns: UInt64?
}

struct VCPUList: Codable { var vcpus: [VCPUInfo] }

/// `PUT /swiftvmm/vcpus/N/affinity`.
typealias AffinityUpdate = OneField<CPUsField, [Int]>
enum CPUsField: FieldName { static let name = "cpus" }

enum VCPUEndpoints {
    static func list(_ vm: any RunningVM) -> VCPUList {
        let exits = vm.liveExitCounts()
        let threads = vm.vcpuThreadIDs()
        let steal = vm.guestStealNanoseconds()
        return VCPUList(vcpus: threads.enumerated().map { index, tid in
            let sched = tid.flatMap { ThreadSchedStat.read(thread: $0) }
            let counts = index < exits.count ? exits[index] : [:]
            let byName = Dictionary(uniqueKeysWithValues: counts.filter { $0.value > 0 }.map { ($0.key.rawValue, $0.value) })
            return VCPUInfo(index: index, thread_id: tid, host_cpu: sched?.lastCPU,
                            affinity: tid.flatMap { try? HostThread.affinity(thread: $0) } ?? [],
                            exits: byName, exits_total: counts.filter { $0.key != .interrupted }.values.reduce(0, &+),
                            run_time_ns: sched?.runNanoseconds ?? 0, wait_time_ns: sched?.waitNanoseconds ?? 0,
                            guest_steal_ns: index < steal.count ? steal[index] : nil)
        })
    }

    static func setAffinity(_ vm: any RunningVM, vcpu text: String, body: [UInt8]) throws(APIFailure) {
        let cpus = try StrictJSON.decode(AffinityUpdate.self, from: body).value
        let threads = vm.vcpuThreadIDs()
        guard let index = Int(text), index >= 0, index < threads.count else {
            throw .notFound("no vCPU \(APIRouter.printable(text)) (this VM has \(threads.count))")
        }
        let online = onlineHostCPUs()
        guard !cpus.isEmpty, cpus.count <= online.count, Set(cpus).count == cpus.count else {
            throw .badRequest("cpus must list distinct host CPUs, at least one")
        }
        if let outside = cpus.first(where: { !online.contains($0) }) {
            throw .badRequest("host CPU \(outside) is not online (online: \(online.map(String.init).joined(separator: ",")))")
        }
        guard let tid = threads[index] else { throw .badRequest("vCPU \(index) has not started") }
        do { try HostThread.setAffinity(thread: tid, cpus: cpus) } catch { throw .badRequest("cannot pin vCPU \(index): \(error)") }
    }

    /// The Prometheus text exposition (format 0.0.4) of the VMs' counters, each sample labelled
    /// with its VM's `instance` (one family per metric, every VM's samples in it).
    static func prometheus(_ vms: [(instance: String, vm: any RunningVM)], requests: [Int: UInt64]) -> String {
        var text = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            guard !samples.isEmpty else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { text += "\(name){\(sample.labels)} \(sample.value)\n" }
        }
        func label(_ value: String) -> String { // names are plain characters (host config), ids may be anything
            value.unicodeScalars.map { $0 == "\"" || $0 == "\\" || $0.value < 0x20 ? "_" : String($0) }.joined()
        }
        let listed = vms.map { (instance: label($0.instance), vm: $0.vm, vcpus: list($0.vm).vcpus) }
        family("swiftvmm_vcpu_exits_total", "counter", "VM exits by vCPU and reason.", listed.flatMap { entry in
            entry.vcpus.flatMap { vcpu in ExitStatistics.Reason.allCases.map { reason in
                ("instance=\"\(entry.instance)\",vcpu=\"\(vcpu.index)\",reason=\"\(reason.rawValue)\"", String(vcpu.exits[reason.rawValue] ?? 0))
            } }
        })
        family("swiftvmm_vcpu_run_seconds_total", "counter", "Host CPU time each vCPU thread ran.", listed.flatMap { entry in
            entry.vcpus.map { ("instance=\"\(entry.instance)\",vcpu=\"\($0.index)\"", seconds($0.run_time_ns)) }
        })
        family("swiftvmm_vcpu_wait_seconds_total", "counter", "Time each vCPU thread was runnable but waiting for a host CPU.",
               listed.flatMap { entry in entry.vcpus.map { ("instance=\"\(entry.instance)\",vcpu=\"\($0.index)\"", seconds($0.wait_time_ns)) } })
        family("swiftvmm_vcpu_guest_steal_seconds_total", "counter", "Steal time each guest's steal-time record reports.",
               listed.flatMap { entry in entry.vcpus.compactMap { vcpu in
                   vcpu.guest_steal_ns.map { ("instance=\"\(entry.instance)\",vcpu=\"\(vcpu.index)\"", seconds($0)) }
               } })
        family("swiftvmm_vm_paused", "gauge", "1 while the VM is paused.",
               listed.map { ("instance=\"\($0.instance)\"", $0.vm.isPaused ? "1" : "0") })
        let balloons = listed.compactMap { entry in entry.vm.balloonHandle.map { (instance: entry.instance, status: $0.status()) } }
        family("swiftvmm_balloon_target_bytes", "gauge", "Memory the balloon is asked to hold.",
               balloons.map { ("instance=\"\($0.instance)\"", String($0.status.targetBytes)) })
        family("swiftvmm_balloon_actual_bytes", "gauge", "Memory the guest has put in the balloon.",
               balloons.map { ("instance=\"\($0.instance)\"", String($0.status.actualBytes)) })
        family("swiftvmm_guest_free_bytes", "gauge", "Free memory the guest last reported.", balloons.compactMap { entry in
            entry.status.statistics?[.freeMemory].map { ("instance=\"\(entry.instance)\"", String($0)) }
        })
        family("swiftvmm_api_requests_total", "counter", "API requests answered, by status.",
               requests.keys.sorted().map { ("status=\"\($0)\"", String(requests[$0] ?? 0)) })
        return text
    }

    static func seconds(_ nanoseconds: UInt64) -> String {
        let whole = nanoseconds / 1_000_000_000, fraction = nanoseconds % 1_000_000_000
        let digits = String(fraction)
        return "\(whole).\(String(repeating: "0", count: 9 - digits.count))\(digits)"
    }
}
