import CommandLineParsing
import Control
import HostMode
import Boot
import Debugging
import Loaders
import VMM

/// Everything that parses bytes a file or a client supplies.
enum ParserTargets {
    /// ELF64 and ELF32 program headers as every image kind is tried, then the symbol table.
    static func elf(_ data: [UInt8]) {
        _ = ELF64.isELF(data)
        _ = try? ELF64.load(data)
        _ = try? ELFExecutable.load(data, classes: [.elf32, .elf64])
        if let table = try? SymbolTable.parse(data) {
            for symbol in table.symbols.prefix(64) { _ = table.describe(symbol.address &+ 1) }
            _ = table["main"]
        }
    }

    /// The multiboot header search and the a.out-kludge or ELF load it leads to.
    static func multiboot(_ data: [UInt8]) {
        if case .header(let header) = Multiboot.scan(data) { _ = try? Multiboot.load(data, header: header) }
    }

    /// A bzImage's setup header and payload, and the same bytes as a vmlinux.
    static func linux(_ data: [UInt8]) {
        _ = LinuxKernel.isBzImage(data)
        _ = LinuxKernel.isVmlinux(data)
        _ = try? LinuxKernel.parseHeader(data)
        _ = try? LinuxKernel.loadBzImage(data)
        _ = try? LinuxKernel.loadVmlinux(data)
    }

    /// A gdb client's byte stream: packets framed and checked, then each request parsed.
    static func gdb(_ data: [UInt8]) {
        var reader = GDBPacketReader()
        for input in reader.feed(data) {
            if case .packet(let payload) = input { _ = GDBRequest.parse(payload) }
        }
    }

    /// Control-socket lines, debugger command lines and exit-trace filters, one per line; each
    /// line's words are also a command line for `ArgumentScanner`.
    static func commands(_ data: [UInt8]) {
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            let text = String(line)
            if case .pin(_, let cpus)? = try? ControlCommand.parse(text) { _ = ControlClient.cpuList(cpus) }
            _ = try? DebugCommand.parse(text)
            _ = try? ExitFilter.parse(text)
            let words = text.split(separator: " ").map(String.init)
            if case .command(let arguments)? = try? ArgumentScanner.parse(words, root: commandLine) {
                _ = try? arguments.value("size", expecting: "a number") { UInt64($0) }
                _ = try? arguments.values("module") { $0.isEmpty ? nil : $0 }
            }
        }
    }

    /// A command tree with every kind of option and argument the scanner knows.
    static let commandLine = CommandSpec(
        name: "tool", abstract: "Fuzzed.",
        subcommands: [
            CommandSpec(name: "run", abstract: "Run.",
                        options: [OptionSpec("size", help: "A value."), OptionSpec("module", .repeated, help: "Repeated."),
                                  .flag("stats", help: "A flag."), OptionSpec("trace", .optionalValue(bare: "all"), help: "Optional.")],
                        positionals: [PositionalSpec("image", optional: true, help: "Optional positional.")],
                        terminated: PositionalSpec("rest", help: "After --.")),
            CommandSpec(name: "control", abstract: "Control.", options: [.flag("json", help: "A flag before the request.")],
                        positionals: [PositionalSpec("socket", help: "Required.")],
                        passthrough: PositionalSpec("request", help: "Passed through.")),
        ],
        version: "tool 1")

    /// A host config file, decoded and checked as `swiftvmm host` does before it starts anything,
    /// down to each VM's run configuration.
    static func hostConfig(_ data: [UInt8]) {
        guard let config = try? HostConfig.parse(data, path: "/fuzz/host.json") else { return }
        for vm in config.vms { _ = try? config.machineConfig(vm) }
    }

    /// An image as `swiftvmm run` takes it: the boot protocol picked (Linux, multiboot, native
    /// ELF or flat), every segment checked against 64 MiB of RAM and the boot structures.
    static func image(_ data: [UInt8]) {
        _ = try? BootProtocols.select(data, options: BootOptions(imagePath: "/fuzz/image", ramSize: 64 << 20))
    }
}
