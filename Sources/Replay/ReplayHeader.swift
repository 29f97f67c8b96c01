import VMMCore

/// What a replay must rebuild exactly: the machine's configuration, the files it booted (each
/// with its digest, so a log from another image is refused), and the inputs fixed at start (the
/// virtual clock's rate, the RTC's wall-clock start). The layout is in docs/replay.md.
public struct ReplayHeader: Sendable, Equatable {
    public struct File: Sendable, Equatable {
        public var path: String
        public var size: UInt64
        public var digest: UInt64
        public init(path: String, size: UInt64, digest: UInt64) { (self.path, self.size, self.digest) = (path, size, digest) }
    }

    public var image: File
    public var format = "", entry = ""
    public var loadAddress: UInt64?
    public var memorySize: UInt64 = 0
    public var commandLine = ""
    public var testDevices = false
    public var interruptControllers = true
    public var balloon = false
    public var balloonTarget: UInt64 = 0
    public var balloonStatsMilliseconds: UInt64 = 0
    public var balloonDeflateOnOOM = true
    public var acpi = ""
    public var vmwareBackdoor = false
    public var cpuidVendor = ""
    public var modules: [File] = []
    public var initrd: File?
    /// How far the virtual clock moves per counted exit.
    public var nanosecondsPerExit: UInt64 = 1000
    /// The RTC's wall-clock time at virtual time 0.
    public var rtcStartSeconds: Int64 = 0
    public var rtcStartNanoseconds: Int64 = 0

    public init(image: File) { self.image = image }

    static let maximumModules = 64

    /// Magic, version, body length, body checksum, body.
    public var encoded: [UInt8] {
        var body = StateWriter()
        func file(_ file: File) {
            body.string(file.path)
            body.u64(file.size)
            body.u64(file.digest)
        }
        file(image)
        body.string(format)
        body.string(entry)
        body.bool(loadAddress != nil)
        body.u64(loadAddress ?? 0)
        body.u64(memorySize)
        body.string(commandLine)
        for flag in [testDevices, interruptControllers, balloon] { body.bool(flag) }
        body.u64(balloonTarget)
        body.u64(balloonStatsMilliseconds)
        body.bool(balloonDeflateOnOOM)
        body.string(acpi)
        body.bool(vmwareBackdoor)
        body.string(cpuidVendor)
        body.u32(UInt32(modules.count))
        modules.forEach(file)
        body.bool(initrd != nil)
        if let initrd { file(initrd) }
        body.u64(nanosecondsPerExit)
        body.i64(rtcStartSeconds)
        body.i64(rtcStartNanoseconds)
        var writer = StateWriter()
        writer.raw(ReplayLog.magic)
        writer.u32(ReplayLog.version)
        writer.u32(UInt32(body.bytes.count))
        writer.u64(Digest.of(body.bytes))
        writer.raw(body.bytes)
        return writer.bytes
    }

    /// Bytes before the header's body: magic, version, length, checksum.
    public static let prefixSize = 24

    /// The body's length from the prefix, after checking magic and version.
    public static func bodyLength(prefix bytes: [UInt8]) throws(ReplayLogError) -> (length: Int, checksum: UInt64) {
        guard bytes.count >= prefixSize, Array(bytes[0..<8]) == ReplayLog.magic else { throw .notALog }
        let version = UInt32(LittleEndian.load(bytes, at: 8, size: 4))
        guard version == ReplayLog.version else { throw .version(version) }
        let length = Int(LittleEndian.load(bytes, at: 12, size: 4))
        guard length <= ReplayLog.maximumHeader else { throw .corrupt("a header of \(length) bytes") }
        return (length, LittleEndian.load(bytes, at: 16, size: 8))
    }

    /// A header read through `read`, which returns the next `count` bytes of the log (fewer, or
    /// nil, when the log ends or fails first): the prefix, then the body it announces, both
    /// checked. Returns the header and the bytes it took, where the first chunk starts.
    public static func read(_ read: (_ count: Int) -> [UInt8]?) throws(ReplayLogError) -> (header: ReplayHeader, size: Int) {
        let (length, checksum) = try bodyLength(prefix: read(prefixSize) ?? [])
        guard let body = read(length), body.count == length else { throw .corrupt("the header is cut off") }
        return (try ReplayHeader(body: body, checksum: checksum), prefixSize + length)
    }

    /// The header from its body, checked against the prefix's checksum.
    public init(body: [UInt8], checksum: UInt64) throws(ReplayLogError) {
        guard Digest.of(body) == checksum else { throw .corrupt("the header does not match its checksum") }
        var reader = StateReader(body, context: "header")
        do {
            func file() throws(StateError) -> File {
                File(path: try reader.string("path"), size: try reader.u64("size"), digest: try reader.u64("digest"))
            }
            image = try file()
            format = try reader.string("format", maximum: 32)
            entry = try reader.string("entry", maximum: 32)
            let hasLoadAddress = try reader.bool("load address given")
            let address = try reader.u64("load address")
            loadAddress = hasLoadAddress ? address : nil
            memorySize = try reader.u64("memory size")
            commandLine = try reader.string("command line")
            testDevices = try reader.bool("test devices")
            interruptControllers = try reader.bool("interrupt controllers")
            balloon = try reader.bool("balloon")
            balloonTarget = try reader.u64("balloon target")
            balloonStatsMilliseconds = try reader.u64("balloon statistics interval")
            balloonDeflateOnOOM = try reader.bool("deflate on OOM")
            acpi = try reader.string("acpi", maximum: 32)
            vmwareBackdoor = try reader.bool("vmware backdoor")
            cpuidVendor = try reader.string("cpuid vendor", maximum: 32)
            let count = try reader.count("modules", maximum: Self.maximumModules)
            for _ in 0..<count { modules.append(try file()) }
            initrd = try reader.bool("initrd given") ? try file() : nil
            nanosecondsPerExit = try reader.u64("nanoseconds per exit")
            rtcStartSeconds = try reader.i64("RTC start")
            rtcStartNanoseconds = try reader.i64("RTC start nanoseconds")
            try reader.finish()
        } catch { throw .corrupt(error.description) }
        guard nanosecondsPerExit >= 1, nanosecondsPerExit <= 1_000_000_000 else { throw .corrupt("\(nanosecondsPerExit) ns per exit") }
        guard (0..<1_000_000_000).contains(rtcStartNanoseconds) else { throw .corrupt("RTC start nanoseconds \(rtcStartNanoseconds)") }
    }
}
