import Foundation
import Testing

/// Snapshots end to end: a guest streaming sequence numbers and checksums is saved mid-run through
/// the API (`swiftvmm snapshot`), restored in a fresh process (`run --restore`), and the two
/// outputs joined must be byte for byte what an uninterrupted run prints: no line lost, none
/// repeated, the same final checksums of the streams and of the working set's RAM.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct SnapshotTests {
    struct Variant: CustomTestStringConvertible, Sendable {
        let name: String
        let options: [String]
        let guestArguments: [String]
        let restoreOptions: [String]
        var testDescription: String { name }
    }

    static let variants = [
        Variant(name: "1 vCPU, swiftvmm's PIT, lazy restore", options: [], guestArguments: ["steps=3072"], restoreOptions: []),
        Variant(name: "2 vCPUs, KVM's PIT, balloon half inflated, eager restore",
                options: ["--cpus", "2", "--pit", "kernel", "--balloon", "--balloon-target", "32M"],
                guestArguments: ["steps=3072", "wss=24M", "balloon=1"], restoreOptions: ["--memory-eager"]),
    ]

    /// Saves a running `dirty` guest once it has printed `lines` sequence lines; returns the
    /// source's output (its run ends with status 72) and the snapshot's two paths.
    func snapshotMidRun(_ options: [String], _ guestArguments: [String], lines: Int = 3) throws -> (output: String, state: String, memory: String)? {
        let state = Harness.temporaryPath("state"), memory = Harness.temporaryPath("memory")
        let source = try APIProcess(["run", Harness.guest("dirty.elf")] + options + ["--"] + guestArguments)
        guard source.wait("\(lines) sequence lines", { source.output.components(separatedBy: "seq=").count > lines }) else { return nil }
        let saved = try swiftvmm(["snapshot", source.socket, "--state", state, "--memory", memory, "--stop"])
        #expect(saved.status == 0 && saved.stdout.contains("vm=stopped"), "\(saved)")
        #expect(source.exitStatus() == 72, "the source ends as stopped by the host")
        return (source.output, state, memory)
    }

    @Test(arguments: variants)
    func aRestoredRunContinuesTheStreamExactly(_ variant: Variant) throws {
        requireGuests("dirty.elf")
        let reference = try swiftvmm(["run", Harness.guest("dirty.elf")] + variant.options + ["--"] + variant.guestArguments)
        #expect(reference.status == 1 && reference.stdout.contains("done seq=12 "), "\(reference)")
        guard let (before, state, memory) = try snapshotMidRun(variant.options, variant.guestArguments) else { return }
        defer { for path in [state, memory] { try? FileManager.default.removeItem(atPath: path) } }
        #expect(!before.contains("done"), "the snapshot came before the guest finished: \(before)")
        let restored = try swiftvmm(["run", "--restore", state, "--memory-file", memory] + variant.restoreOptions)
        #expect(restored.status == 1, "\(restored)")
        #expect(!restored.stdout.isEmpty)
        #expect(before + restored.stdout == reference.stdout,
                "source then restored:\n\(before)|\n\(restored.stdout)\nuninterrupted:\n\(reference.stdout)")
        // The memory file is sparse: the untouched rest of RAM takes no space.
        let attributes = try FileManager.default.attributesOfItem(atPath: memory)
        #expect((attributes[.size] as? Int) == 128 << 20)
        var info = stat()
        #expect(stat(memory, &info) == 0 && Int(info.st_blocks) * 512 < 64 << 20, "\(info.st_blocks) blocks allocated")
    }

    /// A multiboot kernel counting at CPL 0 in 32-bit protected mode, paging off: saved and
    /// restored, it prints what an uninterrupted run prints.
    @Test func aMultibootKernelInProtectedModeContinuesToo() throws {
        requireGuests("mbcount.elf")
        let arguments = ["lines=16", "work=8000"]
        let reference = try swiftvmm(["run", Harness.guest("mbcount.elf"), "--"] + arguments)
        #expect(reference.status == 1 && reference.stdout.contains("line 16 "), "\(reference)")
        let state = Harness.temporaryPath("state"), memory = Harness.temporaryPath("memory")
        defer { for path in [state, memory] { try? FileManager.default.removeItem(atPath: path) } }
        let source = try APIProcess(["run", Harness.guest("mbcount.elf"), "--"] + arguments)
        guard source.wait("three lines", { source.output.contains("line 3 ") }) else { return }
        let saved = try swiftvmm(["snapshot", source.socket, "--state", state, "--memory", memory, "--stop"])
        #expect(saved.status == 0, "\(saved)")
        #expect(source.exitStatus() == 72)
        #expect(!source.output.contains("line 16 "))
        let restored = try swiftvmm(["run", "--restore", state, "--memory-file", memory])
        #expect(restored.status == 1, "\(restored)")
        #expect(source.output + restored.stdout == reference.stdout, "\(source.output)|\(restored.stdout)")
    }

    /// A restore that starts paused runs no guest instruction until resumed through the API.
    @Test func aRestoreCanStartPausedAndResumeThroughTheAPI() throws {
        requireGuests("dirty.elf")
        guard let (before, state, memory) = try snapshotMidRun([], ["steps=2048"]) else { return }
        defer { for path in [state, memory] { try? FileManager.default.removeItem(atPath: path) } }
        let restored = try APIProcess(["run", "--restore", state, "--memory-file", memory, "--paused"])
        guard restored.wait("the API socket", { FileManager.default.fileExists(atPath: restored.socket) }) else { return }
        usleep(500_000)
        #expect(restored.output.isEmpty, "a paused restore printed: \(restored.output)")
        let info = try swiftvmm(["control", restored.socket, "info"])
        #expect(info.stdout.contains("state=Paused"), "\(info)")
        _ = try swiftvmm(["control", restored.socket, "resume"])
        #expect(restored.exitStatus() == 1)
        #expect((before + restored.output).contains("done seq=8 "), "\(before)\(restored.output)")
    }

    /// A Diff snapshot writes only what changed since the Full one, into its memory file: the
    /// second state file with the updated memory file continues from the later point.
    @Test func aDiffSnapshotUpdatesTheLastMemoryFileWithWhatChanged() throws {
        requireGuests("dirty.elf")
        let arguments = ["steps=3072"]
        let reference = try swiftvmm(["run", Harness.guest("dirty.elf"), "--"] + arguments)
        let full = Harness.temporaryPath("full"), diff = Harness.temporaryPath("diff"), memory = Harness.temporaryPath("memory")
        defer { for path in [full, diff, memory] { try? FileManager.default.removeItem(atPath: path) } }
        let source = try APIProcess(["run", Harness.guest("dirty.elf"), "--track-dirty-pages", "--"] + arguments)
        guard source.wait("a sequence line", { source.output.contains("seq=1 ") }) else { return }
        let first = try swiftvmm(["snapshot", source.socket, "--state", full, "--memory", memory])
        #expect(first.status == 0 && first.stdout.contains("vm=resumed"), "\(first)")
        let elsewhere = try swiftvmm(["snapshot", source.socket, "--state", diff, "--memory", memory + "-other", "--diff"])
        #expect(elsewhere.status == 1 && elsewhere.stderr.contains("last snapshot"), "a diff goes into the last memory file only: \(elsewhere)")
        guard source.wait("two more lines", { source.output.contains("seq=4 ") }) else { return }
        let second = try swiftvmm(["snapshot", source.socket, "--state", diff, "--memory", memory, "--diff", "--stop"])
        #expect(second.status == 0 && second.stdout.contains("vm=stopped"), "\(second)")
        #expect(source.exitStatus() == 72)
        let restored = try swiftvmm(["run", "--restore", diff, "--memory-file", memory])
        #expect(restored.status == 1)
        #expect(source.output + restored.stdout == reference.stdout, "\(source.output)|\(restored.stdout)")
        // Without tracking, a Diff is refused with the reason.
        let untracked = try APIProcess(["run", Harness.guest("dirty.elf"), "--"] + arguments)
        guard untracked.wait("the guest's start", { untracked.output.contains("stream(s)") }) else { return }
        let refused = try swiftvmm(["snapshot", untracked.socket, "--state", diff, "--memory", memory, "--diff", "--stop"])
        #expect(refused.status == 1 && refused.stderr.contains("track-dirty-pages"), "\(refused)")
    }

    /// Firecracker's way: `serve`, then `PUT /snapshot/load` with a File backend and resume_vm.
    @Test func serveLoadsASnapshotThroughTheAPIAndTheGuestGoesOn() throws {
        requireGuests("dirty.elf")
        let arguments = ["steps=2048"]
        let reference = try swiftvmm(["run", Harness.guest("dirty.elf"), "--"] + arguments)
        guard let (before, state, memory) = try snapshotMidRun([], arguments) else { return }
        defer { for path in [state, memory] { try? FileManager.default.removeItem(atPath: path) } }
        let served = try APIProcess(["serve"])
        guard served.wait("the API socket", { FileManager.default.fileExists(atPath: served.socket) }) else { return }
        let body = #"{"snapshot_path": "\#(state)", "mem_backend": {"backend_type": "File", "backend_path": "\#(memory)"}, "resume_vm": true}"#
        let load = try runProgram("/usr/bin/curl", ["-sS", "--unix-socket", served.socket, "-X", "PUT", "-w", "\n%{http_code}",
                                                    "-H", "Content-Type: application/json", "-d", body, "http://localhost/snapshot/load"])
        #expect(load.stdout.hasSuffix("204") || load.status == 52 || load.status == 7, "\(load)") // the guest may end first
        #expect(served.exitStatus() == 1)
        #expect(before + served.output == reference.stdout, "\(before)|\(served.output)")
    }

    /// Snapshot files are hostile input: each damaged one is refused with one line and status 76
    /// (66 for a file that cannot be read), and no guest runs.
    @Test func damagedOrMismatchedSnapshotsAreRefusedWithOneLine() throws {
        requireGuests("dirty.elf")
        guard let (_, state, memory) = try snapshotMidRun([], ["steps=2048"], lines: 1) else { return }
        defer { for path in [state, memory] { try? FileManager.default.removeItem(atPath: path) } }
        let original = try Data(contentsOf: URL(fileURLWithPath: state))
        func refused(_ bytes: Data?, memoryFile: String? = nil, status: Int32 = 76, _ expected: String) throws {
            let damaged = Harness.temporaryPath("damaged")
            defer { try? FileManager.default.removeItem(atPath: damaged) }
            if let bytes { try bytes.write(to: URL(fileURLWithPath: damaged)) }
            let result = try swiftvmm(["run", "--restore", damaged, "--memory-file", memoryFile ?? memory])
            let lines = result.stderr.split(separator: "\n")
            #expect(result.status == status && lines.count == 1 && result.stderr.contains(expected) && result.stdout.isEmpty,
                    "expected '\(expected)': \(result)")
        }
        try refused(original.prefix(original.count / 2), "incomplete")
        var flipped = original
        flipped[original.count - 100] ^= 0x40
        try refused(flipped, "checksum mismatch")
        var version = original
        version[8] = 9
        try refused(version, "format version 9")
        try refused(Data("not a snapshot at all".utf8), "bad magic")
        try refused(nil, status: 66, "No such file")
        // The memory file of a bigger (or smaller) VM, and none at all.
        let wrongSize = Harness.temporaryPath("memory-small")
        defer { try? FileManager.default.removeItem(atPath: wrongSize) }
        FileManager.default.createFile(atPath: wrongSize, contents: Data(count: 4096))
        try refused(original, memoryFile: wrongSize, status: 66, "the snapshot's RAM")
        try refused(original, memoryFile: "/nonexistent/memory", status: 66, "No such file")
        // Options the snapshot decides are refused before anything is read.
        let shaped = try swiftvmm(["run", "--restore", state, "--memory-file", memory, "--memory", "256M"])
        #expect(shaped.status == 64 && shaped.stderr.contains("the snapshot decides it"), "\(shaped)")
    }
}
