// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swiftvmm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "swiftvmm", targets: ["swiftvmm"]),
        .executable(name: "swiftvmm-balloon-bench", targets: ["BalloonBench"]),
        .executable(name: "swiftvmm-fuzz", targets: ["swiftvmm-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // C shim over linux/kvm.h and the GNU-only calls Swift cannot see.
        .target(name: "CKVM"),
        // The only importer of CKVM: one owning type per KVM file descriptor.
        .target(name: "KVM", dependencies: ["CKVM"]),
        // C for the host calls Swift cannot make: prctl, seccomp, the SIGSYS reporter.
        .target(name: "CHost"),
        // seccomp-bpf allow-lists per thread kind, and their installation.
        .target(name: "Sandbox", dependencies: ["CHost", "CKVM"]),
        // KVM-free building blocks devices see: guest memory, buses, interrupt lines.
        .target(name: "VMMCore", dependencies: ["CHost"]),
        // The host OS as the VMM uses it: threads, one signal waiter, file descriptors with
        // EINTR retried in one place, sockets, the terminal, clocks, process memory.
        .target(name: "Host", dependencies: ["CHost", "Sandbox", "VMMCore"]),
        // Emulated devices, KVM-free.
        .target(name: "Devices", dependencies: ["VMMCore", "CHost"]),
        // Image loaders (flat binary, ELF64), KVM-free.
        .target(name: "Loaders", dependencies: ["VMMCore"]),
        // vCPU placement policies and host CPU sampling, KVM-free.
        .target(name: "Placement", dependencies: ["Host", "VMMCore"]),
        // Memory coordination over balloon statistics, KVM-free.
        .target(name: "Coordinator", dependencies: ["VMMCore"]),
        // Exit tracing filters, debugger commands and the gdb remote protocol, KVM-free.
        .target(name: "Debugging", dependencies: ["VMMCore"]),
        // Command lines read against plain tables of options, and help rendered from them.
        .target(name: "CommandLineParsing", dependencies: ["VMMCore"]),
        // The guest's view of the machine: memory map, fixed devices (Platform), boot protocols,
        // ACPI, MP table, CPUID.
        .target(name: "Boot", dependencies: ["KVM", "VMMCore", "Devices", "Loaders"]),
        // The record/replay log's format (docs/replay.md): records, chunks, header, digests.
        .target(name: "Replay", dependencies: ["VMMCore"]),
        // Machine assembly: config, builder, vCPU runners and exit dispatch, run control.
        .target(name: "VMM", dependencies: [
            "Boot", "KVM", "Host", "VMMCore", "Devices", "Loaders", "Debugging", "Sandbox", "Placement", "Replay",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The debugger's front ends over a machine built for one: the prompt, the gdb stub.
        .target(name: "Debugger", dependencies: ["VMM", "Boot", "Host", "KVM", "Loaders", "Debugging", "VMMCore", "Sandbox"]),
        // The HTTP/JSON API (--api-sock, swiftvmm serve): Firecracker's endpoints over SwiftNIO.
        .target(name: "API", dependencies: [
            "VMM", "Boot", "Host", "Sandbox", "Placement", "VMMCore", "HostMode",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `swiftvmm control`: requests carried out as HTTP API calls, replies as text or JSON.
        .target(name: "Control", dependencies: [
            "API", "VMM", "VMMCore", "Host",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Host mode: many VMs, vCPU placement and the memory coordinator (docs/host.md).
        .target(name: "HostMode", dependencies: [
            "VMM", "Boot", "Host", "VMMCore", "Placement", "Coordinator", "Sandbox",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "swiftvmm", dependencies: [
            "VMM", "Debugger", "Control", "HostMode", "Host", "Debugging", "Sandbox", "CommandLineParsing", "API", "Replay",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Balloon benchmark driver for `make bench` (uses the library API to change targets live).
        .executableTarget(name: "BalloonBench", dependencies: ["VMM", "Host"]),
        // libFuzzer's entry, weakly linked: present only in the `make fuzz` build.
        .target(name: "CFuzzDriver"),
        // The fuzz targets (devices fed register programs, loaders, parsers) and their seeds.
        .target(name: "FuzzTargets", dependencies: ["VMMCore", "Devices", "Loaders", "Debugging", "VMM", "Boot", "HostMode", "Control", "CommandLineParsing", "API", "Host", "Replay"]),
        .executableTarget(name: "swiftvmm-fuzz", dependencies: ["FuzzTargets", "CFuzzDriver"]),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets"]),
        .testTarget(name: "VMMCoreTests", dependencies: ["VMMCore"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "VMMCore"]),
        .testTarget(name: "ReplayTests", dependencies: ["Replay", "VMMCore"]),
        .testTarget(name: "LoadersTests", dependencies: ["Loaders", "VMMCore"]),
        .testTarget(name: "VMMTests", dependencies: ["VMM", "VMMCore", "Host", "Boot", "Debugger", "Control", "HostMode", "KVM"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "CHost"]),
        .testTarget(name: "HostTests", dependencies: ["Host", "VMMCore"]),
        .testTarget(name: "ControlTests", dependencies: ["Control"]),
        .testTarget(name: "APITests", dependencies: ["API", "VMM", "Boot", "Host"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "Devices", "KVM", "VMMCore"]),
        .testTarget(name: "PlacementTests", dependencies: ["Placement", "VMMCore"]),
        .testTarget(name: "CoordinatorTests", dependencies: ["Coordinator"]),
        .testTarget(name: "DebuggingTests", dependencies: ["Debugging", "VMMCore"]),
        .testTarget(name: "CommandLineParsingTests", dependencies: ["CommandLineParsing"]),
        .testTarget(name: "IntegrationTests", dependencies: ["VMM", "Host", "Boot", "Control", "HostMode", "Debugger", "Placement"]),
        // The scenarios of shared/scenarios.md; `make test` runs them alone (they measure CPU time).
        .testTarget(name: "HostScenarioTests"),
        // Real Linux guests (make test-linux): minutes per boot on PVM, so not part of `make test`.
        .testTarget(name: "LinuxGuestTests", dependencies: ["VMM", "Loaders", "Boot", "Control", "Host"]),
    ]
)
