import Glibc

/// What the kernel's KSM daemon (ksmd) is set to do: host-wide settings, which belong to the
/// administrator; swiftvmm only reads them (/sys/kernel/mm/ksm).
public struct KSMStatus: Sendable, Equatable {
    /// /sys/kernel/mm/ksm/run: 0 stopped, 1 merging, 2 unmerging.
    public var run: Int
    /// Pages ksmd scans each time it wakes, and how long it sleeps between.
    public var pagesToScan: Int
    public var sleepMilliseconds: Int
    /// Host-wide: KSM pages in use, and mappings that share them (the pages saved).
    public var pagesShared: Int
    public var pagesSharing: Int

    public static let directory = "/sys/kernel/mm/ksm"

    /// nil when the kernel has no KSM.
    public static func read(directory: String = directory) -> KSMStatus? {
        func value(_ name: String) -> Int? {
            readTextFile(directory + "/" + name).flatMap { Int($0.split(separator: "\n").first ?? "") }
        }
        guard let run = value("run") else { return nil }
        return KSMStatus(run: run, pagesToScan: value("pages_to_scan") ?? 0, sleepMilliseconds: value("sleep_millisecs") ?? 0,
                         pagesShared: value("pages_shared") ?? 0, pagesSharing: value("pages_sharing") ?? 0)
    }

    /// One line for the start of a run that asked for page sharing.
    public var summary: String {
        switch run {
        case 1:
            return "ksmd is running: \(pagesToScan) pages every \(sleepMilliseconds) ms"
        case 2:
            return "ksmd is unmerging every page (/sys/kernel/mm/ksm/run is 2): nothing merges"
        default:
            return "ksmd is not running (/sys/kernel/mm/ksm/run is \(run)): nothing merges until an administrator starts it (docs/host.md)"
        }
    }
}

/// How the resident pages of some memory are backed, from the kernel's own page information:
/// /proc/self/pagemap gives, for each virtual page, whether it is present, whether this is the
/// only mapping of its frame (PM_MMAP_EXCLUSIVE) and the frame number. A present page mapped more
/// than once is shared: in a VMM that never forks, only KSM maps an anonymous page twice; the
/// zero page (mapped by every page read but never written) is recognised by its frame. Exact, not
/// an estimate, and one read of 32 KiB covers 16 MiB; frame numbers need CAP_SYS_ADMIN.
public struct PageSharing: Sendable, Equatable {
    /// Resident pages whose frame backs other mappings too (merged by KSM, here or elsewhere).
    public var ksmPages: Int = 0
    /// Resident pages mapped to the kernel's zero page (read but never written).
    public var zeroPages: Int = 0
    /// Resident pages of this mapping's own.
    public var privatePages: Int = 0
    public var pageSize: Int = 4096

    public init(pageSize: Int = 4096) { self.pageSize = pageSize }

    public var sharedPages: Int { ksmPages &+ zeroPages }
    public var sharedBytes: UInt64 { UInt64(sharedPages) &* UInt64(pageSize) }
    public var privateBytes: UInt64 { UInt64(privatePages) &* UInt64(pageSize) }

    /// The `--stats` line.
    public var report: String {
        let kib = pageSize / 1024
        return "page sharing: shared_kib=\(sharedPages &* kib) ksm_kib=\(ksmPages &* kib) zero_kib=\(zeroPages &* kib) private_kib=\(privatePages &* kib)"
    }

    public static func += (left: inout PageSharing, right: PageSharing) {
        left.ksmPages &+= right.ksmPages
        left.zeroPages &+= right.zeroPages
        left.privatePages &+= right.privatePages
    }

    // pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
    static let present: UInt64 = 1 << 63
    static let exclusive: UInt64 = 1 << 56
    static let frameMask: UInt64 = (1 << 55) - 1
    /// Pages read per pagemap call: 32 KiB of entries, 16 MiB of memory.
    static let chunkPages = 4096

    /// Counts the resident pages of each `(address, length)` range of this process (page-aligned
    /// host mappings, such as guest RAM's).
    public static func measure(_ ranges: [(address: UInt, length: Int)]) throws(HostError) -> PageSharing {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pagemap = try openForReading("/proc/self/pagemap")
        defer { pagemap.close() }
        guard let zero = zeroFrame else { throw .invalid("cannot find the zero page's frame in /proc/self/pagemap") }
        var total = PageSharing(pageSize: pageSize)
        for range in ranges {
            let firstPage = Int(range.address / UInt(pageSize))
            let pages = max(0, range.length) / pageSize
            var done = 0
            while done < pages {
                let count = min(chunkPages, pages - done)
                total += try classify(try words(pagemap, count: count, at: firstPage &+ done, what: "/proc/self/pagemap"), zeroFrame: zero)
                done += count
            }
        }
        return total
    }

    /// Sorts pagemap entries: absent pages are not counted, a page mapped only here is private, a
    /// shared one is the zero page or a KSM page.
    static func classify(_ entries: [UInt64], zeroFrame: UInt64) throws(HostError) -> PageSharing {
        var result = PageSharing()
        for entry in entries where entry & present != 0 {
            let frame = entry & frameMask
            guard frame != 0 else { throw .invalid("/proc/self/pagemap hides page frames: page accounting needs CAP_SYS_ADMIN") }
            if entry & exclusive != 0 { result.privatePages += 1 } else if frame == zeroFrame { result.zeroPages += 1 } else { result.ksmPages += 1 }
        }
        return result
    }

    /// The zero page's frame, found once: a page of a fresh mapping that is read but never written
    /// is mapped to it.
    static let zeroFrame: UInt64? = {
        let size = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let page = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), page != MAP_FAILED else { return nil }
        defer { munmap(page, size) }
        // Safe: one byte of the page just mapped, read-only; the read maps the zero page.
        guard page.load(as: UInt8.self) == 0, let pagemap = try? openForReading("/proc/self/pagemap") else { return nil }
        defer { pagemap.close() }
        guard let entry = try? words(pagemap, count: 1, at: Int(UInt(bitPattern: page) / UInt(size)), what: "pagemap").first,
              entry & present != 0, entry & frameMask != 0 else { return nil }
        return entry & frameMask
    }()

    /// `count` 64-bit little-endian words from word `index` of `file`.
    private static func words(_ file: FileDescriptor, count: Int, at index: Int, what: String) throws(HostError) -> [UInt64] {
        let (offset, overflow) = Int64(index).multipliedReportingOverflow(by: 8)
        guard !overflow else { throw .invalid("\(what): offset out of range") }
        let bytes: [UInt8]
        do { bytes = try file.readAll(count: count * 8, at: offset) } catch { throw .call("pread \(what)", error) }
        guard bytes.count == count * 8 else { throw .invalid("\(what): short read") }
        return (0..<count).map { word in
            (0..<8).reduce(UInt64(0)) { value, byte in value | UInt64(bytes[word * 8 + byte]) << (8 * UInt64(byte)) }
        }
    }

    private static func openForReading(_ path: String) throws(HostError) -> FileDescriptor {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .call("open \(path)", Errno.current) }
        return FileDescriptor(rawValue: fd)
    }
}
