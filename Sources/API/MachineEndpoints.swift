import Host
import VMM

/// swiftvmm's own endpoints for the VM as a whole, beside Firecracker's: the VMM's memory
/// (`GET /swiftvmm/memory`), the balloon device's state and counters (`GET /swiftvmm/balloon`)
/// and ending the run (`PUT /swiftvmm/actions` with `Stop`). `swiftvmm control` is built on them.

/// `GET /swiftvmm/memory`: the VMM process's memory (/proc/self/status) and how much of it is
/// guest RAM the host holds, in KiB; the overheads are what the VMM itself costs.
public struct MemoryInfo: Codable, Sendable, Equatable {
    public var peak_rss_kib: Int
    public var anon_kib: Int
    public var file_kib: Int
    public var guest_resident_kib: Int
    public var overhead_kib: Int
    public var anon_overhead_kib: Int
    public var guest_memory_mib: Int
    /// With page sharing (`--page-sharing`): resident guest RAM backed by KSM or the zero page,
    /// and the VM's own; the process's proportional share (Pss_Anon), which sharing lowers
    /// while RSS still counts a shared page in every mapping.
    public var shared_kib: Int?
    public var private_kib: Int?
    public var pss_anon_kib: Int?

    init(_ memory: ProcessMemory, guestResidentKiB guest: Int, guestMemoryMiB: Int, sharing: PageSharing? = nil) {
        peak_rss_kib = memory.peakResident
        anon_kib = memory.anonymous
        file_kib = memory.fileBacked
        guest_resident_kib = guest
        overhead_kib = memory.peakResident &- guest
        anon_overhead_kib = memory.anonymous &- guest
        guest_memory_mib = guestMemoryMiB
        if let sharing {
            shared_kib = Int(clamping: sharing.sharedBytes / 1024)
            private_kib = Int(clamping: sharing.privateBytes / 1024)
            pss_anon_kib = ProcessMemory.proportionalAnonymousKiB()
        }
    }
}

/// `GET /swiftvmm/balloon`: what Firecracker's balloon endpoints leave out: whether the guest's
/// driver is ready, the exact sizes, and the device's counters since boot.
public struct BalloonDeviceInfo: Codable, Sendable, Equatable {
    public var driver_ready: Bool
    public var needs_reset: Bool
    public var target_kib: UInt64
    public var actual_kib: UInt64
    /// Pages the guest put in and took out, released to the host and in how many calls.
    public var inflated_pages: UInt64
    public var deflated_pages: UInt64
    public var released_pages: UInt64
    public var release_calls: UInt64
    /// Guest requests refused: PFNs outside RAM, buffers of the wrong shape, statistics of the
    /// wrong length, queues the device had to give up on.
    public var rejected_pfns: UInt64
    public var rejected_buffers: UInt64
    public var stats_updates: UInt64
    public var stats_rejected: UInt64
    public var queue_errors: Int

    init(_ status: BalloonControl.Status, queueErrors: Int) {
        let counters = status.counters
        driver_ready = status.driverReady
        needs_reset = status.needsReset
        target_kib = status.targetBytes / 1024
        actual_kib = status.actualBytes / 1024
        inflated_pages = counters.inflated
        deflated_pages = counters.deflated
        released_pages = counters.released
        release_calls = counters.releaseCalls
        rejected_pfns = counters.rejectedPFNs
        rejected_buffers = counters.rejectedBuffers
        stats_updates = counters.statsUpdates
        stats_rejected = counters.statsRejected
        queue_errors = queueErrors
    }
}

/// `PUT /swiftvmm/actions`.
typealias SwiftVMMAction = OneField<ActionTypeField, String>

enum MachineEndpoints {
    static func memory(_ vm: any RunningVM, guestMemoryMiB: Int) throws(APIFailure) -> MemoryInfo {
        guard let process = ProcessMemory.current() else { throw .internalError("cannot read /proc/self/status") }
        return MemoryInfo(process, guestResidentKiB: vm.guestResidentBytes() / 1024, guestMemoryMiB: guestMemoryMiB, sharing: vm.pageSharing())
    }

    static func balloon(_ handle: any BalloonHandle) -> BalloonDeviceInfo {
        BalloonDeviceInfo(handle.status(), queueErrors: handle.queueErrors)
    }

    /// `Stop` ends the run as a host stop does (status 72); the reply comes before the VM is gone.
    /// `PowerButton` presses the ACPI power button: it wakes a guest suspended to RAM (S3).
    static func action(_ vm: any RunningVM, _ type: String) throws(APIFailure) {
        switch type {
        case "Stop": vm.stop()
        case "PowerButton":
            guard vm.pressPowerButton() else {
                throw .badRequest("this VM has no ACPI power button (it comes with the interrupt controllers)")
            }
        default: throw .badRequest("action_type must be Stop or PowerButton, not '\(APIRouter.printable(type))'")
        }
    }
}
