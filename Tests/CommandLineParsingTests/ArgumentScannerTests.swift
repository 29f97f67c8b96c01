import CommandLineParsing
import Testing

@Suite struct ArgumentScannerTests {
    static let run = CommandSpec(
        name: "run", abstract: "Boot an image.",
        options: [
            OptionSpec("memory", valueName: "size", help: "Guest RAM."),
            OptionSpec("module", .repeated, help: "A module (repeatable)."),
            .flag("stats", help: "Print statistics."),
            OptionSpec("trace-exits", .optionalValue(bare: "all"), valueName: "filter", help: "Trace exits."),
        ],
        positionals: [PositionalSpec("image", optional: true, help: "The image.")],
        terminated: PositionalSpec("kernel-arguments", help: "Appended to the command line.")
    )
    static let control = CommandSpec(
        name: "control", abstract: "Send a request.",
        options: [.flag("json", help: "JSON.")],
        positionals: [PositionalSpec("socket", help: "The socket.")],
        passthrough: PositionalSpec("request", help: "The request.")
    )
    static let root = CommandSpec(name: "tool", abstract: "A tool.", subcommands: [run, control], version: "tool 1.0")

    func parsed(_ arguments: [String]) throws -> ParsedArguments {
        guard case .command(let parsed) = try ArgumentScanner.parse(arguments, root: Self.root) else {
            Issue.record("not a command: \(arguments)")
            throw UsageError("not a command", path: [])
        }
        return parsed
    }

    func usageError(_ arguments: [String]) -> UsageError? {
        do {
            _ = try ArgumentScanner.parse(arguments, root: Self.root)
            return nil
        } catch {
            return error
        }
    }

    @Test func optionsInAnyOrderAmongPositionals() throws {
        let arguments = try parsed(["run", "--stats", "image.elf", "--memory", "64M", "--module=a", "--module", "b", "--memory=32M"])
        #expect(arguments.path == ["tool", "run"])
        #expect(arguments.positionals == ["image.elf"])
        #expect(arguments.flag("stats"))
        #expect(arguments.value("memory") == "32M") // the last one counts
        #expect(arguments.values("module") == ["a", "b"])
        #expect(arguments.value("trace-exits") == nil)
    }

    @Test func optionalValueNeverTakesTheNextArgument() throws {
        let bare = try parsed(["run", "--trace-exits", "image.elf"])
        #expect(bare.value("trace-exits") == "all")
        #expect(bare.positionals == ["image.elf"])
        #expect(try parsed(["run", "--trace-exits=io,hlt"]).value("trace-exits") == "io,hlt")
    }

    @Test func valuesMayLookLikeOptions() throws {
        // A value option takes the next argument whatever it is: the conversion judges it.
        #expect(try parsed(["run", "--memory", "--stats"]).value("memory") == "--stats")
        #expect(try parsed(["run", "--memory="]).value("memory") == "")
    }

    @Test func terminatorAndPassthrough() throws {
        let run = try parsed(["run", "vmlinux", "--", "console=ttyS0", "--stats"])
        #expect(run.terminated == ["console=ttyS0", "--stats"])
        #expect(!run.flag("stats"))
        let control = try parsed(["control", "unix:/tmp/s", "balloon", "--help", "128M"])
        #expect(control.positionals == ["unix:/tmp/s"])
        #expect(control.passthrough == ["balloon", "--help", "128M"])
        // Options come before the request, after the socket too; `--` ends them.
        let json = try parsed(["control", "--json", "s", "--json", "stats", "--json"])
        #expect(json.flag("json") && json.positionals == ["s"] && json.passthrough == ["stats", "--json"])
        #expect(try parsed(["control", "s", "--", "--json"]).passthrough == ["--json"])
        #expect(usageError(["control", "s", "--jsn", "stats"])?.message == "unknown option '--jsn'")
    }

    @Test func typedValuesNameTheOptionWhenTheyDoNotConvert() throws {
        let arguments = try parsed(["run", "--memory", "lots"])
        #expect(throws: UsageError.self) { try arguments.value("memory", expecting: "a size") { Int($0) } }
        do {
            _ = try arguments.value("memory", expecting: "a size") { Int($0) }
        } catch {
            #expect(error.description == "invalid value 'lots' for --memory: expected a size (see 'tool run --help')")
        }
        enum Mode: String, CaseIterable { case long, real }
        let mode = try parsed(["run", "--memory", "real"])
        #expect(try mode.choice("memory", of: Mode.self) == .real)
        do {
            _ = try arguments.choice("memory", of: Mode.self)
            Issue.record("a choice outside the cases parsed")
        } catch {
            #expect(error.message.hasSuffix("expected one of long, real"))
        }
    }

    @Test func errorsPointAtTheCommandThatFailed() {
        #expect(usageError(["--bogus"])?.description == "unknown option '--bogus' (see 'tool --help')")
        #expect(usageError([])?.message == "missing a command (run, control)")
        #expect(usageError(["launch"])?.description == "no command 'launch' (see 'tool --help')")
        #expect(usageError(["run", "--bogus"])?.description == "unknown option '--bogus' (see 'tool run --help')")
        #expect(usageError(["run", "-x"])?.helpCommand == "tool run --help")
        #expect(usageError(["run", "--stats=1"])?.message == "--stats takes no value")
        #expect(usageError(["run", "--memory"])?.message == "missing a value for --memory")
        #expect(usageError(["run", "a", "b"])?.message == "unexpected argument 'b'")
        #expect(usageError(["control"])?.description == "missing <socket> (see 'tool control --help')")
        #expect(usageError(["control", "s", "--"]) == nil) // "--" ends the options: an empty request
        #expect(usageError(["control", "--", "s"])?.message == "'--' is not accepted here")
    }

    @Test func hostileArgumentsAreQuotedShortAndPrintable() {
        let long = String(repeating: "x", count: 10_000)
        let error = usageError(["run", "--" + long])
        #expect(error.map { $0.message.count < 100 } == true)
        #expect(usageError(["run", "--a\u{1b}[2J"])?.message == "unknown option '--a?[2J'")
        #expect(usageError(["run", "--=x"])?.message == "unknown option '--'")
    }

    @Test func helpAndVersion() throws {
        guard case .help(let path, let text) = try ArgumentScanner.parse(["run", "image", "--help"], root: Self.root) else {
            Issue.record("no help")
            return
        }
        #expect(path == ["tool", "run"])
        #expect(text.contains("USAGE: tool run [<options>] [<image>] [-- <kernel-arguments> ...]"))
        #expect(text.contains("  --memory <size>           Guest RAM.\n"))
        #expect(text.contains("  --trace-exits[=<filter>]  Trace exits.\n"))
        #expect(text.contains("  --module <module> ...     A module (repeatable).\n"))
        guard case .help(let helpPath, let helpText) = try ArgumentScanner.parse(["help", "control"], root: Self.root) else {
            Issue.record("no help for help control")
            return
        }
        #expect(helpPath == ["tool", "control"])
        #expect(helpText.contains("USAGE: tool control [<options>] <socket> <request> ..."))
        guard case .help(_, let top) = try ArgumentScanner.parse(["-h"], root: Self.root) else {
            Issue.record("no top-level help")
            return
        }
        #expect(top.contains("SUBCOMMANDS:\n  run                       Boot an image.\n"))
        #expect(top.contains("--version"))
        guard case .version(let version) = try ArgumentScanner.parse(["--version"], root: Self.root) else {
            Issue.record("no version")
            return
        }
        #expect(version == "tool 1.0")
        #expect(usageError(["run", "--version"])?.message == "unknown option '--version'")
        #expect(usageError(["help", "nothing"])?.message == "no command 'nothing' in tool")
    }

    @Test func helpWrapsLongTextAtEightyColumns() {
        let long = String(repeating: "word ", count: 60)
        let spec = CommandSpec(name: "x", abstract: long, discussion: long,
                               options: [OptionSpec("an-option-with-a-long-name", valueName: "value", help: long)])
        let text = HelpRenderer.render(spec, path: ["x"])
        #expect(text.split(separator: "\n").allSatisfy { $0.count <= 80 })
        #expect(text.contains("  --an-option-with-a-long-name <value>\n                            word word"))
    }
}
