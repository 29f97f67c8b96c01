import CommandLineParsing
import Control
import Glibc
import VMM

/// `swiftvmm snapshot SOCKET --state F --memory M`: saves a running VM through its API socket.
struct SnapshotCommand {
    static let spec = CommandSpec(
        name: "snapshot",
        abstract: "Save a VM (run or serve --api-sock) to a state file and a memory file; restore with run --restore.",
        discussion: """
        The VM is paused while its state and memory are written (docs/snapshot.md), then resumed, \
        or ended with --stop (its run then exits with status 72). The status is 0 when the snapshot \
        was written, 1 when the VMM refused or failed it (the reason on stderr), 70 when the socket \
        cannot be reached.
        """,
        options: [
            OptionSpec("state", valueName: "path", help: "The state file to write (vCPUs, devices, configuration)."),
            OptionSpec("memory", valueName: "path", help: "The memory file to write (guest RAM, sparse)."),
            OptionSpec.flag("stop", help: "End the VM after the snapshot instead of resuming it."),
            OptionSpec.flag("diff", help: "Write only the pages changed since this VM's last snapshot, into that snapshot's memory file (the VM runs with --track-dirty-pages)."),
            OptionSpec.flag("json", help: "Print the reply as JSON."),
            OptionSpec("timeout", valueName: "seconds", help: "How long to wait for the VMM (1-3600, default 600)."),
        ],
        positionals: [PositionalSpec("socket", help: "The API socket: PATH (or unix:PATH).")]
    )

    let socket: String
    let command: ControlCommand
    let json: Bool
    let timeout: Int64

    init(_ arguments: ParsedArguments) throws(UsageError) {
        socket = try arguments.apiSocket("snapshot")
        guard let state = arguments.value("state"), !state.isEmpty else { throw arguments.error("snapshot: missing --state PATH") }
        guard let memory = arguments.value("memory"), !memory.isEmpty else { throw arguments.error("snapshot: missing --memory PATH") }
        guard state != memory else { throw arguments.error("snapshot: --state and --memory must be different files") }
        command = .snapshot(state: state, memory: memory, thenStop: arguments.flag("stop"), diff: arguments.flag("diff"))
        json = arguments.flag("json")
        timeout = try arguments.clientTimeout(default: 600)
    }

    func run() -> Never {
        let reply: ControlClient.Reply
        do { reply = try ControlClient.perform(command, to: socket, json: json, timeoutSeconds: timeout) } catch {
            fail("snapshot: \(error)", code: VMM.ExitCode.vmmFailure)
        }
        if !reply.text.isEmpty { print(reply.text) }
        if let error = reply.error { fail("snapshot: \(error)", code: 1) }
        exit(0)
    }
}
