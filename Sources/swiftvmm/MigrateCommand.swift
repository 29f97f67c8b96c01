import CommandLineParsing
import Control
import Glibc
import Host
import VMM

/// `swiftvmm migrate SOCKET DESTINATION`: moves a running VM to a `run --incoming` VMM.
struct MigrateCommand {
    static let spec = CommandSpec(
        name: "migrate",
        abstract: "Live-migrate a VM (run or serve --api-sock) to a VMM started with run --incoming.",
        discussion: """
        DESTINATION is unix:PATH or tcp:HOST:PORT. Memory is copied while the guest runs, then again \
        what it dirtied, until the rest fits --downtime-ms at the bandwidth measured; then the VM \
        pauses, the rest and its state move, and the destination runs it (the source's run exits \
        with status 78). Each round is a line on stderr. The status is 0 once the destination runs \
        the VM, 1 when the migration failed (the VM runs on here; the reason on stderr), 70 when \
        the socket cannot be reached. docs/migration.md.
        """,
        options: [
            OptionSpec("downtime-ms", valueName: "ms", help: "The pause the guest may see (1-60000, default 50)."),
            OptionSpec("timeout", valueName: "seconds", help: "Give up (the VM keeps running) when pre-copy has not converged by then (1-86400, default 60)."),
            OptionSpec.flag("naive", help: "Pause first and copy everything (for comparison)."),
            OptionSpec.flag("json", help: "Print the final status as the API's JSON."),
        ],
        positionals: [PositionalSpec("socket", help: "The source VM's API socket: PATH (or unix:PATH)."),
                      PositionalSpec("destination", help: "unix:PATH or tcp:HOST:PORT of the run --incoming VMM.")]
    )

    let socket: String
    let destination: String
    let downtime: Int
    let timeout: Int
    let naive: Bool
    let json: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        socket = try arguments.apiSocket("migrate")
        destination = arguments.positionals[1]
        guard !destination.isEmpty else { throw arguments.error("migrate: the destination must not be empty") }
        downtime = try arguments.value("downtime-ms", expecting: "1 to 60000 milliseconds", { Int($0).flatMap { (1...60_000).contains($0) ? $0 : nil } }) ?? 50
        timeout = try arguments.value("timeout", expecting: "1 to 86400 seconds", { Int($0).flatMap { (1...86_400).contains($0) ? $0 : nil } }) ?? 60
        naive = arguments.flag("naive")
        json = arguments.flag("json")
    }

    func run() -> Never {
        let reply: ControlClient.Reply
        do {
            reply = try ControlClient.migrate(socket: socket, destination: destination, downtimeMilliseconds: downtime, timeoutSeconds: timeout,
                                              naive: naive, json: json) { writeStandardError("migrate: \($0)\n") }
        } catch {
            fail("migrate: \(error)", code: VMM.ExitCode.vmmFailure)
        }
        if !reply.text.isEmpty { print(reply.text) }
        if let error = reply.error { fail("migrate: \(error)", code: 1) }
        exit(0)
    }
}
