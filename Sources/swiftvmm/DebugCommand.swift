import CommandLineParsing
import Debugger
import Glibc
import VMM

/// `swiftvmm debug`: boots a VM stopped before its first instruction, under the debugger prompt.
struct Debug {
    static let spec = CommandSpec(
        name: "debug",
        abstract: "Boot IMAGE stopped before its first instruction and debug it from a prompt (see docs/debugging.md).",
        discussion: """
        Commands come from the terminal, a pipe, or --script; 'help' lists them. The guest's serial \
        output goes to stdout, interleaved with the debugger's. The exit status is the guest's, as for \
        run (72 when quit stopped it first).
        """,
        options: VMOptions.options + [
            OptionSpec("script", valueName: "path", help: "Read debugger commands from this file instead of stdin."),
        ],
        positionals: [VMOptions.image],
        terminated: VMOptions.kernelArguments
    )

    let vm: VMOptions
    let script: String?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        vm = try VMOptions(arguments)
        script = arguments.value("script")
    }

    func run() -> Never {
        // The prompt's input stream, read only by this thread (nonisolated(unsafe) lets the
        // readLine closure capture it); fdopen's FILE lives until the process exits.
        nonisolated(unsafe) var input: UnsafeMutablePointer<FILE>? = fdopen(STDIN_FILENO, "r")
        if let script {
            guard let file = fopen(script, "r") else {
                fail("cannot read script \(script): \(String(cString: strerror(errno)))", code: VMM.ExitCode.usage)
            }
            input = file
        }
        let machine = vm.buildMachine(debug: true)
        let interactive = script == nil && isatty(STDIN_FILENO) == 1
        let outcome: RunOutcome
        do {
            outcome = try DebugFrontEnd.run(machine: machine, imagePath: vm.image, interactive: interactive) {
                readLine(from: input)
            }
        } catch {
            fail(error.description, code: error.exitCode)
        }
        finish(outcome)
    }
}
