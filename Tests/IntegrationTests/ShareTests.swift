import Foundation
import Glibc
import Testing

/// File hypercalls (`--share`): the guest C library against the same program run natively, a
/// hostile guest confined to its share, and the PostMark workload in both builds.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct ShareTests {
    /// A native build of one of the Guests/postmark programs (made beside the guests).
    static func native(_ name: String) -> String { Harness.guests + "/../native/" + name }

    /// Runs the native build of `name` in `directory` with only stdin, stdout and stderr open: a
    /// descriptor leaked from a parallel test's pipe (Foundation's are not close-on-exec; fd 99
    /// once was open, so fscheck's `close 99` gave 0) would change what the reference prints.
    static func runNative(_ name: String, in directory: String, _ arguments: [String] = []) throws -> RunResult {
        let bare = "import os, sys; os.chdir(sys.argv[1]); os.closerange(3, 65536); os.execv(sys.argv[2], sys.argv[2:])"
        return try runProgram("/usr/bin/env", ["python3", "-c", bare, directory, native(name)] + arguments)
    }

    static func makeDirectory(_ name: String) throws -> String {
        let path = Harness.temporaryPath(name)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Every path beneath `directory` with its size and contents' hash: what a run left behind.
    static func tree(_ directory: String) -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: directory)
        var entries: [String] = []
        while let path = enumerator?.nextObject() as? String {
            let data = FileManager.default.contents(atPath: directory + "/" + path)
            entries.append("\(path) \(data?.count ?? -1) \(data.map { $0.reduce(UInt64(5381)) { ($0 &* 33) &+ UInt64($1) } } ?? 0)")
        }
        return entries.sorted()
    }

    @Test func theGuestLibraryAnswersAsLinuxDoes() throws {
        requireGuests("fscheck.elf")
        let nativeDirectory = try Self.makeDirectory("fscheck-native"), guestDirectory = try Self.makeDirectory("fscheck-guest")
        defer { for path in [nativeDirectory, guestDirectory] { try? FileManager.default.removeItem(atPath: path) } }
        let native = try Self.runNative("fscheck", in: nativeDirectory)
        #expect(native.status == 0, "\(native)")
        #expect(native.stdout.contains("fscheck: done"), "\(native)")
        for doorbell in ["mmio", "port"] {
            try? FileManager.default.removeItem(atPath: guestDirectory)
            try FileManager.default.createDirectory(atPath: guestDirectory, withIntermediateDirectories: true)
            let guest = try swiftvmm(["run", Harness.guest("fscheck.elf"), "--share", guestDirectory, "--stats",
                                      "--cmdline", doorbell == "port" ? "share_port=1" : ""], timeout: 120)
            #expect(guest.status == 1, "\(guest)")
            #expect(guest.stdout == native.stdout, "guest (\(doorbell) doorbells) and native output differ:\n\(guest)\n--- native\n\(native.stdout)")
            #expect(guest.stderr.contains("share hypercalls:"), "\(guest)")
            #expect(Self.tree(guestDirectory) == Self.tree(nativeDirectory))
        }
    }

    /// A share with a file, links that point outside it (a file, a directory, /proc/self/root)
    /// and a FIFO; beside it, a directory the guest must never reach.
    struct HostileLayout {
        let root: String, share: String, outside: String
        static let secret = "TOPSECRET-\(getpid())"

        init() throws {
            root = try ShareTests.makeDirectory("hostile")
            share = root + "/share"
            outside = root + "/outside"
            let files = FileManager.default
            try files.createDirectory(atPath: share, withIntermediateDirectories: true)
            try files.createDirectory(atPath: outside, withIntermediateDirectories: true)
            try Self.secret.write(toFile: outside + "/secret", atomically: false, encoding: .utf8)
            try "inside text".write(toFile: share + "/inside", atomically: false, encoding: .utf8)
            try files.createSymbolicLink(atPath: share + "/link_out", withDestinationPath: "../outside/secret")
            try files.createSymbolicLink(atPath: share + "/dir_out", withDestinationPath: outside)
            try files.createSymbolicLink(atPath: share + "/proc_root", withDestinationPath: "/proc/self/root")
            #expect(mkfifo(share + "/fifo", 0o644) == 0)
        }

        /// The outside directory as a listing with modification times, and the parent's entries.
        func outsideState() -> [String] {
            var stats = stat()
            _ = stat(outside + "/secret", &stats)
            let listing = (try? FileManager.default.contentsOfDirectory(atPath: outside).sorted()) ?? []
            let parent = (try? FileManager.default.contentsOfDirectory(atPath: root).sorted()) ?? []
            return listing + parent + ["\(stats.st_mtim.tv_sec).\(stats.st_mtim.tv_nsec) \(stats.st_size)"]
                + [(try? String(contentsOfFile: outside + "/secret", encoding: .utf8)) ?? "?"]
        }
    }

    @Test(arguments: ["rw", "ro", "rw-port"])
    func aHostileGuestStaysInsideItsShare(_ mode: String) throws {
        requireGuests("fshostile.elf")
        let layout = try HostileLayout()
        defer { try? FileManager.default.removeItem(atPath: layout.root) }
        let before = layout.outsideState()
        let share = layout.share + (mode == "ro" ? ":ro" : "")
        let result = try swiftvmm(["run", Harness.guest("fshostile.elf"), "--share", share, "--stats"]
                                  + (mode == "rw-port" ? ["--cmdline", "port=1"] : []), timeout: 180)
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("fshostile: done"), "\(result)")
        #expect(!result.stdout.contains(HostileLayout.secret), "the guest read a file outside its share:\n\(result)")
        #expect(layout.outsideState() == before, "something outside the share changed")
        var lines: [String: Int64] = [:]
        for line in result.stdout.split(separator: "\n") {
            guard let colon = line.lastIndex(of: ":"), let value = Int64(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)) else { continue }
            lines[String(line[..<colon])] = value
        }
        let exdev: Int64 = -18, erofs: Int64 = -30
        let readOnly = mode == "ro"
        let expected: [String: Int64] = [
            "escape dotdot": exdev, "absolute etc passwd": -2, "symlink out": exdev, "symlink out stat": exdev,
            "symlink dir out": exdev, "proc root link": exdev, "proc self root": -2, "chdir out": exdev,
            "create through dir link": readOnly ? erofs : exdev, "mkdir through dir link": readOnly ? erofs : exdev,
            "rename out": readOnly ? erofs : exdev, "rename into dir link": readOnly ? erofs : exdev,
            "fifo": -6, "bad flags": -22, "close 0": -9, "close 1000": -9, "close 2^40": -9, "read fd -1": -9,
            "unknown call": -38, "open inside": 3, "read straddling end of RAM": -14, "read into MMIO hole": -14,
            "read past 4G": -14, "read length 2^63": 11, "pread offset 2^63": -22, "lseek to -2^63": -22,
            "lseek whence 99": -22, "fstat into MMIO hole": -14, "getcwd size 1": -34, "clock id 9": -22,
            "path without NUL": -36, "path in MMIO hole": -14, "block outside RAM survived": 1,
            "mkdir on share": readOnly ? erofs : 0, "unlink on share": readOnly ? erofs : -2,
            "write to read-only fd": readOnly ? erofs : -9, "open after closing all": 3,
        ]
        for (name, value) in expected.sorted(by: { $0.key < $1.key }) {
            #expect(lines[name] == value, "\(name): expected \(value), got \(lines[name].map(String.init) ?? "nothing")")
        }
        if readOnly {
            #expect(lines["write to share"] == erofs)
            #expect(result.stdout.contains("opens: ok=256 emfile=9744 other=0 first=3 last=258"), "\(result)")
        } else {
            // "new" (descriptor 4) stays open through the loop: one fewer for it.
            #expect(lines["write to share"] == 4)
            #expect(result.stdout.contains("opens: ok=255 emfile=9745 other=0 first=3 last=258"), "\(result)")
        }
        #expect(result.stdout.contains("inside says: inside text"), "\(result)")
        #expect(result.stderr.contains("ignored: blocks outside RAM=1 unknown calls=1"), "\(result)")
    }

    @Test func withoutAShareThereIsNoDevice() throws {
        requireGuests("fshostile.elf")
        let result = try swiftvmm(["run", Harness.guest("fshostile.elf")])
        #expect(result.status == (0x20 << 1) | 1, "\(result)")
        #expect(result.stdout.contains("fshostile: no share"), "\(result)")
    }

    @Test func aShareThatIsNotADirectoryIsAUsageError() throws {
        requireGuests("fshostile.elf")
        let result = try swiftvmm(["run", Harness.guest("fshostile.elf"), "--share", "/nonexistent-\(getpid())"])
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.contains("--share /nonexistent-"), "\(result)")
    }

    @Test func postMarkCountsMatchTheNativeRun() throws {
        requireGuests("postmark.elf")
        let script = "set number 40\nset transactions 80\nset size 200 3000\nset subdirectories 3\nset location work\nset seed 11\nrun\nquit\n"
        var reports: [String] = [], trees: [[String]] = []
        for build in ["native", "guest"] {
            let directory = try Self.makeDirectory("postmark-\(build)")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try script.write(toFile: directory + "/pm.cfg", atomically: false, encoding: .utf8)
            let result = build == "native"
                ? try Self.runNative("postmark", in: directory, ["pm.cfg"])
                : try swiftvmm(["run", Harness.guest("postmark.elf"), "--share", directory, "--cmdline", "pm.cfg"], timeout: 180)
            #expect(result.status == (build == "native" ? 0 : 1), "\(result)")
            #expect(result.stdout.contains("Files:") && result.stdout.contains("Data:"), "\(result)")
            let counts = result.stdout.split(separator: "\n").first { $0.hasPrefix("postmark: created=") }.map(String.init) ?? "none"
            reports.append(counts.replacingOccurrences(of: #" us=\d+"#, with: "", options: .regularExpression))
            trees.append(Self.tree(directory))
        }
        #expect(reports[0] == reports[1], "native: \(reports[0])\nguest: \(reports[1])")
        // Both runs delete what they made: the script and the empty location are all that is left.
        #expect(trees[0] == ["pm.cfg \(script.utf8.count) \(Self.hash(script))", "work -1 0"], "\(trees[0])")
        #expect(trees[1] == trees[0], "\(trees)")
        #expect(reports[0].contains("created=") && !reports[0].contains("created=0 "), "\(reports)")
    }

    static func hash(_ text: String) -> UInt64 { text.utf8.reduce(UInt64(5381)) { ($0 &* 33) &+ UInt64($1) } }
}
