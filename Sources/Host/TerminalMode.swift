import Glibc

/// The host terminal's state while a VM runs: raw mode when stdin is a terminal, restored after.
public final class TerminalMode: @unchecked Sendable { // touched only by the thread that builds and ends the run
    private var saved: termios?

    public init() {}

    /// Puts stdin in raw mode (keeping output processing) if it is a terminal.
    public func enterRaw() {
        guard isatty(STDIN_FILENO) == 1 else { return }
        var state = termios()
        guard tcgetattr(STDIN_FILENO, &state) == 0 else { return }
        saved = state
        cfmakeraw(&state)
        state.c_oflag |= tcflag_t(OPOST) // "\n" from the guest still starts a new line
        tcsetattr(STDIN_FILENO, TCSANOW, &state)
    }

    /// Restores the state saved by enterRaw.
    public func restore() {
        guard var state = saved else { return }
        tcsetattr(STDIN_FILENO, TCSANOW, &state)
        saved = nil
    }
}
