import Host
import Foundation
import Glibc
import VMM

/// Balloon benchmark (run by `make bench`): a 1 GiB memhog guest touches and frees 768 MiB, then
/// the host inflates 512 MiB and deflates it again. Prints end-to-end (guest-driven) throughput,
/// the host's release time alone, and guest RAM freed per MiB ballooned.
let arguments = CommandLine.arguments
guard arguments.count == 2 else {
    FileHandle.standardError.write(Data("usage: swiftvmm-balloon-bench GUEST_DIR\n".utf8))
    exit(64)
}
let mib: UInt64 = 1 << 20
let serial = NSTemporaryDirectory() + "swiftvmm-balloon-bench-\(getpid()).log"
defer { try? FileManager.default.removeItem(atPath: serial) }
var config = VMConfig(imagePath: arguments[1] + "/memhog.elf")
config.memorySize = 1024 * mib
config.balloon = true
config.balloonStatsInterval = 0
config.serial = .file(serial)
config.commandLine = "phases=touch:768M,free:768M,serve"

func now() -> Double { Clocks.monotonicSeconds() }

func wait(_ what: String, timeout: Double = 120, _ condition: () -> Bool) {
    let deadline = now() + timeout
    while !condition() {
        if now() > deadline {
            FileHandle.standardError.write(Data("timed out waiting for \(what)\n".utf8))
            exit(1)
        }
        usleep(500)
    }
}

do {
    let machine = try Machine(config: config)
    guard let balloon = machine.balloon else { exit(70) }
    let runner = Thread { _ = machine.run() }
    runner.start()
    wait("memhog to touch and free 768 MiB") {
        ((try? String(contentsOfFile: serial, encoding: .utf8)) ?? "").contains("memhog: serving")
    }
    let size: UInt64 = 512 * mib
    let residentBefore = machine.memory.residentBytes()
    let inflateStart = now()
    balloon.setTarget(bytes: size)
    wait("inflation") { balloon.status().actualBytes == size }
    let inflateSeconds = now() - inflateStart
    let residentAfter = machine.memory.residentBytes()
    let counters = balloon.status().counters
    let deflateStart = now()
    balloon.setTarget(bytes: 0)
    wait("deflation") { balloon.status().actualPages == 0 }
    let deflateSeconds = now() - deflateStart
    machine.stop()

    let releaseSeconds = Double(counters.releaseNanoseconds) / 1e9
    let freedPerMiB = Double(residentBefore - residentAfter) / Double(size)
    func rate(_ seconds: Double) -> String { String(format: "%.0f", Double(size / mib) / seconds) }
    print("balloon: inflate 512 MiB in \(String(format: "%.3f", inflateSeconds)) s = \(rate(inflateSeconds)) MiB/s (guest-driven, end to end)")
    print("balloon: host release (MADV_DONTNEED) \(String(format: "%.3f", releaseSeconds)) s in \(counters.releaseCalls) calls = \(rate(releaseSeconds)) MiB/s")
    print("balloon: deflate 512 MiB in \(String(format: "%.3f", deflateSeconds)) s = \(rate(deflateSeconds)) MiB/s (guest-driven, end to end)")
    print("balloon: guest RAM freed per MiB ballooned: \(String(format: "%.4f", freedPerMiB)) MiB (resident \(residentBefore >> 20) -> \(residentAfter >> 20) MiB)")
} catch {
    FileHandle.standardError.write(Data("swiftvmm-balloon-bench: \(error)\n".utf8))
    exit(1)
}
