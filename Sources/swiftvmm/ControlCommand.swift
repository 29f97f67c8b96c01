import CommandLineParsing
import Control
import Host
import Glibc
import VMM

/// `swiftvmm control`: one request to a running VM's control socket.
struct ControlClientCommand {
    static let spec = CommandSpec(
        name: "control",
        abstract: "Send one request to a running VM's control socket (run --control) and print the reply.",
        discussion: "Requests: balloon [SIZE], memory, stats, pause, resume, stop, help. The status is 0 for 'ok', 1 for an error reply, 70 when the socket cannot be reached.",
        positionals: [PositionalSpec("socket", help: "The control socket: unix:PATH, HOST:PORT or :PORT.")],
        passthrough: PositionalSpec("request", help: "The request, e.g. 'balloon 128M'.")
    )

    let endpoint: SocketEndpoint
    let request: [String]

    init(_ arguments: ParsedArguments) throws(UsageError) {
        do { endpoint = try SocketEndpoint(parsing: arguments.positionals[0]) } catch { throw arguments.error("control: \(error)") }
        request = arguments.passthrough
        guard !request.isEmpty else { throw arguments.error("control: no request given (try 'help')") }
    }

    func run() -> Never {
        let reply: ControlClient.Reply
        do { reply = try ControlClient.send(request.joined(separator: " "), to: endpoint) } catch { fail(error.description, code: error.exitCode) }
        if !reply.text.isEmpty { print(reply.text) }
        if let error = reply.error { fail("control: \(error)", code: 1) }
        exit(0)
    }
}
