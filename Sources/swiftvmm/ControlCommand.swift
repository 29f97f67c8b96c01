import ArgumentParser
import Debugging
import Glibc
import Host
import Control
import Debugger
import HostMode
import Logging
import Sandbox
import Synchronization
import VMM

struct ControlClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Send one request to a running VM's control socket (run --control) and print the reply.",
        discussion: "Requests: balloon [SIZE], memory, stats, pause, resume, stop, help. The status is 0 for 'ok', 1 for an error reply, 70 when the socket cannot be reached."
    )

    @Argument(help: "The control socket: unix:PATH, HOST:PORT or :PORT.")
    var endpoint: String

    @Argument(parsing: .captureForPassthrough, help: "The request, e.g. 'balloon 128M'.")
    var request: [String] = []

    func run() throws {
        let target: SocketEndpoint
        do { target = try SocketEndpoint(parsing: endpoint) } catch { fail("control: \(error)", code: VMM.ExitCode.usage) }
        guard !request.isEmpty else { fail("control: no request given (try 'help')", code: VMM.ExitCode.usage) }
        let reply: ControlClient.Reply
        do { reply = try ControlClient.send(request.joined(separator: " "), to: target) } catch { fail(error.description, code: error.exitCode) }
        if !reply.text.isEmpty { print(reply.text) }
        if let error = reply.error { fail("control: \(error)", code: 1) }
    }
}
