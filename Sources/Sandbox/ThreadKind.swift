/// What a thread of the VMM does, which decides its seccomp allow-list (docs/security.md lists
/// each). A thread inherits its creator's filter and adds its own, so a kind that creates threads
/// (`vmm`, `api`) allows what its children need too.
public enum ThreadKind: String, CaseIterable, Sendable {
    /// Builds and runs one VM: the main thread of `swiftvmm run`, one thread per VM in host mode,
    /// the debugger's machine thread. Starts every other kind, and builds the next machine on
    /// `--on-reboot restart`.
    case vmm
    /// Runs one vCPU: KVM_RUN, and the devices its exits reach.
    case vcpu
    /// A vCPU of a VM with a share (`--share`): the file hypercalls run on it.
    case vcpuSharing = "vcpu-sharing"
    /// Serves device deadlines (PIT, RTC, balloon statistics).
    case timer
    /// Moves bytes between the VM and the host: the serial writer, the console reader.
    case io
    /// Executes one disk's requests (virtio-blk): reads and writes between the image and guest
    /// RAM, flushes, discards.
    case disk
    /// Moves frames between one network interface (virtio-net) and its host tap.
    case net
    /// Waits for termination signals (sigwait) and tells the run control.
    case signals
    /// Serves clients: the HTTP API's event loop and worker, the gdb stub, the
    /// debugger's command loop.
    case api
    /// Host mode's controller: samples /proc, places vCPUs, sets balloon targets, writes its log.
    case controller
}
