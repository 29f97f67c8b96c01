import Boot
import Host
import Glibc
import Replay
import VMMCore

/// Between a configuration and a log's header: what a recording writes, and the configuration
/// a replay rebuilds from it, its files checked against the digests the recording took.
enum ReplaySetup {
    /// A file the machine boots from, as the header names it (an absolute path when it can be
    /// resolved, so a replay from another directory finds it).
    static func file(_ path: String, limit: UInt64) throws(VMMError) -> ReplayHeader.File {
        let bytes = try ImageFile.read(path, limit: limit)
        return ReplayHeader.File(path: absolute(path), size: UInt64(bytes.count), digest: Digest.of(bytes))
    }

    static func absolute(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func header(for config: VMConfig, rtcStart: (seconds: Int64, nanoseconds: Int64)) throws(VMMError) -> ReplayHeader {
        var header = ReplayHeader(image: try file(config.imagePath, limit: config.memorySize))
        header.format = config.format.rawValue
        header.entry = config.entry.rawValue
        header.loadAddress = config.loadAddress
        header.memorySize = config.memorySize
        header.commandLine = config.commandLine
        header.testDevices = config.testDevices
        header.interruptControllers = config.interruptControllers
        header.balloon = config.balloon
        header.balloonTarget = config.balloonTarget
        header.balloonStatsMilliseconds = UInt64(config.balloonStatsInterval * 1000)
        header.balloonDeflateOnOOM = config.balloonDeflateOnOOM
        header.acpi = config.acpi?.rawValue ?? ""
        header.vmwareBackdoor = config.vmwareBackdoor
        header.cpuidVendor = config.cpuidVendor.rawValue
        for module in config.modules { header.modules.append(try file(module, limit: config.memorySize)) }
        header.initrd = try config.initrd.map { path throws(VMMError) in try file(path, limit: config.memorySize) }
        header.nanosecondsPerExit = config.nanosecondsPerExit
        (header.rtcStartSeconds, header.rtcStartNanoseconds) = rtcStart
        return header
    }

    /// The configuration a log's header describes, with `runtime`'s own choices (serial output,
    /// statistics, logging); every file must still have the digest it was recorded with.
    static func config(from header: ReplayHeader, runtime: VMConfig, log: String) throws(VMMError) -> VMConfig {
        func bad(_ why: String) -> VMMError { .replayLog("replay log \(log): \(why)") }
        var config = runtime
        config.imagePath = header.image.path
        guard let format = ImageFormat(rawValue: header.format), let entry = EntryMode(rawValue: header.entry),
              let vendor = CPUIDTable.Vendor(rawValue: header.cpuidVendor) else {
            throw bad("corrupt: unknown image format, entry mode or CPUID vendor in the header")
        }
        (config.format, config.entry, config.cpuidVendor) = (format, entry, vendor)
        // Checked before any file is read for its digest: the size bounds what is read.
        guard header.memorySize >= Layout.minimumRAM, header.memorySize <= Layout.maximumRAM else {
            throw bad("corrupt: memory size \(header.memorySize) is out of range")
        }
        if header.acpi.isEmpty { config.acpi = nil } else {
            guard let acpi = ACPITables.Mode(rawValue: header.acpi) else { throw bad("corrupt: unknown ACPI mode \(header.acpi.printableExcerpt())") }
            config.acpi = acpi
        }
        config.loadAddress = header.loadAddress
        config.memorySize = header.memorySize
        config.commandLine = header.commandLine
        config.testDevices = header.testDevices
        config.interruptControllers = header.interruptControllers
        config.balloon = header.balloon
        config.balloonTarget = header.balloonTarget
        config.balloonStatsInterval = Double(header.balloonStatsMilliseconds) / 1000
        config.balloonDeflateOnOOM = header.balloonDeflateOnOOM
        config.vmwareBackdoor = header.vmwareBackdoor
        config.modules = header.modules.map(\.path)
        config.initrd = header.initrd?.path
        config.cpus = 1
        config.deterministic = true
        config.recordPath = nil
        config.nanosecondsPerExit = header.nanosecondsPerExit
        config.rtcStart = (header.rtcStartSeconds, header.rtcStartNanoseconds)
        for recorded in [header.image] + header.modules + (header.initrd.map { [$0] } ?? []) {
            let here: ReplayHeader.File
            do { here = try file(recorded.path, limit: header.memorySize) } catch {
                throw bad("the recording booted \(recorded.path.printableExcerpt()), which cannot be read here: \(error)")
            }
            guard here.digest == recorded.digest, here.size == recorded.size else {
                throw bad("recorded from another image: \(recorded.path.printableExcerpt()) had \(recorded.size) bytes with digest \(ReplayDriver.hex(recorded.digest)), now \(here.size) bytes with digest \(ReplayDriver.hex(here.digest))")
            }
        }
        return config
    }
}
