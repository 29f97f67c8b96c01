import Host
import Glibc

/// Feeds host stdin to the UART. In raw terminal mode, Ctrl-A then x stops the VM (like QEMU's
/// escape); Ctrl-A Ctrl-A sends one Ctrl-A to the guest.
struct ConsoleInput {
    static let escape: UInt8 = 0x01

    /// Splits typed bytes into what goes to the guest and whether the quit escape was typed.
    /// `pendingEscape` carries a trailing Ctrl-A to the next chunk.
    static func filter(_ bytes: [UInt8], pendingEscape: inout Bool) -> (forward: [UInt8], quit: Bool) {
        var forward: [UInt8] = []
        for byte in bytes {
            if pendingEscape {
                pendingEscape = false
                if byte == UInt8(ascii: "x") || byte == UInt8(ascii: "X") { return (forward, true) }
                if byte == escape { forward.append(escape); continue }
                forward.append(escape)
                forward.append(byte)
            } else if byte == escape {
                pendingEscape = true
            } else {
                forward.append(byte)
            }
        }
        return (forward, false)
    }

    /// Reads stdin until EOF or until `control` stops, offering bytes to `deliver`, which returns
    /// how many it took; untaken bytes are retried every millisecond (the UART FIFO is small).
    static func pump(escapeEnabled: Bool, control: RunControl, deliver: ([UInt8]) -> Int) {
        var buffer = [UInt8](repeating: 0, count: 256)
        var pendingEscape = false
        while !control.isStopping {
            guard let count = try? FileDescriptor.standardInput.read(into: &buffer), count > 0 else { return }
            var bytes = Array(buffer[0..<count])
            if escapeEnabled {
                let (forward, quit) = filter(bytes, pendingEscape: &pendingEscape)
                if quit { control.finish(.signal(SIGINT)); return }
                bytes = forward
            }
            while !bytes.isEmpty && !control.isStopping {
                let taken = deliver(bytes)
                bytes.removeFirst(taken)
                if !bytes.isEmpty { usleep(1000) }
            }
        }
    }
}
