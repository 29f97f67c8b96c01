import CommandLineParsing
import Control
import Glibc
import VMM

/// `swiftvmm control`: one request to a running VM's API socket, carried out as API calls.
struct ControlClientCommand {
    static let spec = CommandSpec(
        name: "control",
        abstract: "Send one request to a VM's API socket (run or serve --api-sock) and print the reply.",
        discussion: """
        Requests: info, balloon [SIZE], memory, vcpus, pin VCPU CPUS, stats, pause, resume, stop, help. \
        Replies are key=value lines; --json prints the API's JSON instead. The status is 0 for a \
        reply, 1 when the VMM refused the request (its reason on stderr), 70 when the socket cannot \
        be reached or does not answer.
        """,
        options: [
            OptionSpec.flag("json", help: "Print the API's JSON replies, not key=value lines."),
            OptionSpec("timeout", valueName: "seconds", help: "How long to wait for the VMM (1-3600, default 10)."),
        ],
        positionals: [PositionalSpec("socket", help: "The API socket: PATH (or unix:PATH).")],
        passthrough: PositionalSpec("request", help: "The request, e.g. 'balloon 128M'.")
    )

    let socket: String
    let request: [String]
    let json: Bool
    let timeout: Int64

    init(_ arguments: ParsedArguments) throws(UsageError) {
        socket = try arguments.apiSocket("control")
        request = arguments.passthrough
        guard !request.isEmpty else { throw arguments.error("control: no request given (try 'help')") }
        json = arguments.flag("json")
        timeout = try arguments.clientTimeout(default: 10)
    }

    func run() -> Never {
        let reply: ControlClient.Reply
        do { reply = try ControlClient.send(request.joined(separator: " "), to: socket, json: json, timeoutSeconds: timeout) } catch {
            fail("control: \(error)", code: VMM.ExitCode.vmmFailure)
        }
        if !reply.text.isEmpty { print(reply.text) }
        if let error = reply.error { fail("control: \(error)", code: 1) }
        exit(0)
    }
}
