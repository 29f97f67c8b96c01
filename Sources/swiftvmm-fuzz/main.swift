import CFuzzDriver
import Foundation
import FuzzTargets

// swiftvmm-fuzz: the fuzz targets' driver. In the `make fuzz` build (-sanitize=fuzzer,address)
// libFuzzer runs the chosen target; in any build, files and directories given are replayed
// through it (a crash input from a campaign, or a whole corpus as a regression check).

let usage = """
    usage: swiftvmm-fuzz TARGET [libFuzzer options] [CORPUS_DIR ...]   (make fuzz build)
           swiftvmm-fuzz TARGET FILE|DIR ...                          (replays inputs)
           swiftvmm-fuzz seed DIR [GUESTS_DIR]                        (writes seed corpora)
           swiftvmm-fuzz list
    targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))
    """

func fail(_ message: String, status: Int32 = 64) -> Never {
    FileHandle.standardError.write(Data("swiftvmm-fuzz: \(message)\n".utf8))
    exit(status)
}

/// The target libFuzzer's C callback runs: set once before the driver starts, read only after.
nonisolated(unsafe) var selectedTarget = FuzzTarget.uart

/// Every regular file under `path` (or `path` itself), sorted, so replays are repeatable.
func inputFiles(_ path: String) -> [String] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { fail("\(path): no such file or directory", status: 66) }
    guard isDirectory.boolValue else { return [path] }
    let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
    return names.sorted().filter { !$0.hasPrefix(".") }.map { path + "/" + $0 }
}

func replay(_ target: FuzzTarget, _ paths: [String]) {
    var count = 0
    for path in paths {
        for file in inputFiles(path) {
            guard let data = FileManager.default.contents(atPath: file) else { fail("cannot read \(file)", status: 66) }
            target.run(Array(data))
            count += 1
        }
    }
    print("\(target.rawValue): replayed \(count) inputs, no crash")
}

func writeSeeds(into directory: String, guests: String?) {
    let loaderSeeds: [FuzzTarget: [String]] = [
        .elf: ["debugme.elf", "kmxcsr.elf", "triplefault.elf", "mb64.elf", "mbcheck.elf", "mbsmp.elf"],
        .multiboot: ["mbcheck.elf", "mbsmp.elf", "mb64.elf", "mbkludge.bin"],
        .image: ["hello.bin", "realmode.bin", "portloop.bin", "mbkludge.bin", "mb64.elf", "kmxcsr.elf"],
        .linux: ["mb64.elf"],
    ]
    for target in FuzzTarget.allCases {
        let folder = directory + "/" + target.rawValue
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            fail("cannot create \(folder): \(error.localizedDescription)", status: 73)
        }
        var seeds = FuzzSeeds.seeds(for: target)
        if let guests {
            for name in loaderSeeds[target] ?? [] {
                guard let data = FileManager.default.contents(atPath: guests + "/" + name) else { fail("no guest image \(guests)/\(name) (make guests)", status: 66) }
                seeds["guest-" + name] = Array(data)
            }
        }
        for (name, bytes) in seeds {
            guard FileManager.default.createFile(atPath: folder + "/seed-" + name, contents: Data(bytes)) else { fail("cannot write \(folder)/seed-\(name)", status: 73) }
        }
        print("\(target.rawValue): \(seeds.count) seeds")
    }
}

/// Runs libFuzzer on `target` with `options` (everything after the target name). libFuzzer
/// re-executes argv[0] for -merge, -fork and -jobs, so the target travels in the environment and
/// argv keeps the program's path with the options behind it.
func runLibFuzzer(_ target: FuzzTarget, options: [String]) -> Never {
    selectedTarget = target
    setenv("SWIFTVMM_FUZZ_TARGET", target.rawValue, 1)
    // C strings for libFuzzer's argv: strdup'd copies that live until the process exits.
    var cArguments: [UnsafeMutablePointer<CChar>?] = ([CommandLine.arguments[0]] + options).map { strdup($0) } + [nil]
    var argc = Int32(cArguments.count - 1)
    let status = cArguments.withUnsafeMutableBufferPointer { buffer in
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
        return cfuzz_run_driver(&argc, &argv) { data, size in
            // libFuzzer's buffer, valid for this call only (size may be 0 with data null).
            let bytes = size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size))
            selectedTarget.run(bytes)
            return 0
        }
    }
    exit(status)
}

let arguments = CommandLine.arguments
// A child libFuzzer started for -merge, -fork or -jobs: the target is in the environment.
if cfuzz_available() != 0, let name = ProcessInfo.processInfo.environment["SWIFTVMM_FUZZ_TARGET"],
   let target = FuzzTarget(rawValue: name), arguments.count < 2 || FuzzTarget(rawValue: arguments[1]) == nil {
    runLibFuzzer(target, options: Array(arguments.dropFirst()))
}
guard arguments.count >= 2 else { fail(usage) }
switch arguments[1] {
case "list":
    for target in FuzzTarget.allCases { print(target.rawValue) }
case "seed":
    guard arguments.count >= 3 else { fail(usage) }
    writeSeeds(into: arguments[2], guests: arguments.count > 3 ? arguments[3] : nil)
case "-h", "--help", "help":
    print(usage)
default:
    guard let target = FuzzTarget(rawValue: arguments[1]) else { fail("unknown target '\(arguments[1])'\n\(usage)") }
    if cfuzz_available() != 0 { runLibFuzzer(target, options: Array(arguments.dropFirst(2))) }
    guard arguments.count >= 3 else { fail("nothing to replay: this build has no libFuzzer (make fuzz builds one)") }
    replay(target, Array(arguments.dropFirst(2)))
}
