import Glibc

/// The VMM process's memory as /proc/self/status reports it, in KiB.
public struct ProcessMemory: Sendable, Equatable {
    /// Peak resident set (VmHWM).
    public var peakResident: Int
    /// Current anonymous (private) and file-backed (code, shared libraries) resident memory.
    public var anonymous: Int
    public var fileBacked: Int

    public init(peakResident: Int, anonymous: Int, fileBacked: Int) {
        (self.peakResident, self.anonymous, self.fileBacked) = (peakResident, anonymous, fileBacked)
    }

    /// Reads /proc/self/status; nil where it is unavailable.
    public static func current() -> ProcessMemory? {
        readTextFile("/proc/self/status").flatMap(parse(status:))
    }

    /// Parses the VmHWM, RssAnon and RssFile lines of a /proc/PID/status text.
    public static func parse(status: String) -> ProcessMemory? {
        var values: [String: Int] = [:]
        for line in status.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == ":" || $0 == " " || $0 == "\t" })
            if parts.count >= 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
        }
        guard let peak = values["VmHWM"], let anonymous = values["RssAnon"], let file = values["RssFile"] else { return nil }
        return ProcessMemory(peakResident: peak, anonymous: anonymous, fileBacked: file)
    }

    /// Pss_Anon from /proc/self/smaps_rollup: anonymous memory with each shared page divided
    /// among the mappings that share it (what KSM saves shows here, not in RssAnon).
    public static func proportionalAnonymousKiB() -> Int? {
        guard let text = readTextFile("/proc/self/smaps_rollup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Pss_Anon:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        }
        return nil
    }

    /// The `--stats` memory line: peak RSS and what of it is guest memory.
    public func report(guestResidentKiB guest: Int) -> String {
        "memory: peak_rss_kib=\(peakResident) anon_kib=\(anonymous) file_kib=\(fileBacked) guest_resident_kib=\(guest) "
            + "overhead_kib=\(peakResident - guest) anon_overhead_kib=\(anonymous - guest)"
    }
}

/// A whole small text file (/proc), or nil.
public func readTextFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var text = ""
    var buffer = [CChar](repeating: 0, count: 512)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        text += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return text
}
