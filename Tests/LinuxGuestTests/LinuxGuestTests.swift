@testable import Boot
import Control
import Host
import Foundation
import Testing
import VMM

/// Real Linux guests (make test-linux builds them first): Debian's stock cloud kernel to
/// "Run /init", and our small kernel whose virtio_balloon driver the host works through the
/// HTTP API (`swiftvmm control`, and curl for Firecracker's getting-started sequence). Long on PVM (minutes per boot), so `make test` leaves them out.
enum Linux {
    static let environment = ProcessInfo.processInfo.environment
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let binary = environment["SWIFTVMM_BIN"] ?? root + "/.build/debug/swiftvmm"
    static let kernels = environment["SWIFTVMM_LINUX"] ?? root + "/out/linux"

    /// What PVM needs on every Linux command line (docs/linux.md): no XSAVE, and CX16, SMAP,
    /// SMEP and the SIMD extensions its instruction emulator cannot complete hidden from the kernel.
    /// `panic=-1` turns a panic into a reset, which ends the VM.
    static let common = "console=ttyS0 earlyprintk=serial,ttyS0,115200 loglevel=7 panic=-1 noxsave "
        + "clearcpuid=308,295,141,137,147,148,153,129"
    /// Debian's kernel, shortened: no tracing, certificate or self-test initcalls, no PCI scan.
    static let stockExtras = "mitigations=off nowatchdog pci=off audit=0 cryptomgr.notests lsm=capability "
        + "ipv6.disable=1 initcall_blacklist=trace_eval_init,tracer_init_tracefs,init_kprobe_trace,"
        + "load_system_certificate_list,load_revocation_certificate_list"

    /// Fails (never skips) when a kernel or /dev/kvm is missing: these tests only run on purpose.
    static func require(_ files: String...) -> Bool {
        var ready = true
        for file in files where !FileManager.default.fileExists(atPath: kernels + "/" + file) {
            Issue.record("\(kernels)/\(file) is missing: run `make test-linux` (it builds the Linux guests)")
            ready = false
        }
        if access("/dev/kvm", R_OK | W_OK) != 0 {
            Issue.record("/dev/kvm is not usable on this machine")
            ready = false
        }
        return ready
    }
}

/// One swiftvmm process running a Linux guest, with its output in files and an API socket.
final class LinuxVM {
    let process = Process()
    let outPath: String, errPath: String, socketPath: String
    let started = Date()

    init(_ arguments: [String]) throws {
        let base = NSTemporaryDirectory() + "swiftvmm-linux-\(getpid())-\(UUID().uuidString.prefix(6))"
        (outPath, errPath, socketPath) = (base + ".out", base + ".err", base + ".sock")
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Linux.binary)
        process.arguments = arguments + ["--api-sock", socketPath, "--stats"]
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Firecracker's getting-started sequence with curl against `swiftvmm serve`: each call's
    /// HTTP status (204 expected), once the socket is there.
    func configureWithCurl(_ calls: [(method: String, path: String, body: String)]) throws -> [String] {
        _ = wait(upTo: 30, every: 0.05) { FileManager.default.fileExists(atPath: socketPath) }
        return try calls.map { call in
            let curl = Process()
            let output = Pipe()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            curl.arguments = ["curl", "--silent", "--show-error", "--unix-socket", socketPath, "-X", call.method,
                              "-H", "Accept: application/json", "-H", "Content-Type: application/json",
                              "-d", call.body, "-o", "/dev/null", "-w", "%{http_code}", "http://localhost" + call.path]
            curl.standardOutput = output
            try curl.run()
            curl.waitUntilExit()
            return "\(call.method) \(call.path): " + String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for path in [outPath, errPath] { try? FileManager.default.removeItem(atPath: path) }
    }

    var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }
    var seconds: Double { Date().timeIntervalSince(started) }

    /// Waits until `condition` holds, the process ends, or `timeout` passes; true when it held.
    func wait(upTo timeout: Double, every interval: Double = 0.5, for condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            usleep(UInt32(interval * 1_000_000))
        }
        return condition()
    }

    func waitForOutput(_ text: String, timeout: Double) -> Bool { wait(upTo: timeout) { output.contains(text) } }

    /// Sends a `swiftvmm control` request; the reply's text, or nil (recorded as an issue) when it failed.
    func control(_ request: String) -> String? {
        do {
            let reply = try ControlClient.send(request, to: socketPath)
            if let error = reply.error { Issue.record("control '\(request)': \(error)") }
            return reply.error == nil ? reply.text : nil
        } catch {
            Issue.record("control '\(request)': \(error)")
            return nil
        }
    }

    /// A `key=value` number from a `swiftvmm control` reply.
    static func value(_ key: String, in text: String?) -> Int? {
        guard let text, let range = text.range(of: " \(key)=") ?? text.range(of: "\(key)=") else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    /// The process's resident set (VmRSS) in KiB, read from outside as any host tool would.
    var residentKiB: Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    }

    /// Waits for the process to end; its status, or nil after `timeout`.
    func exitStatus(timeout: Double) -> Int32? {
        _ = wait(upTo: timeout) { !process.isRunning }
        guard !process.isRunning else { return nil }
        return process.terminationStatus
    }

    var transcript: String { "after \(Int(seconds)) s\n--- serial\n\(output.suffix(6000))\n--- stderr\n\(errors.suffix(4000))" }
}

@Suite(.serialized) struct LinuxGuestTests {
    /// Debian's cloud kernel, 2 vCPUs: CPUs from our MADT, the UART and RTC from our DSDT, to
    /// "Run /init". Its init then dies at its first system call (PVM) and the kernel panics
    /// (panic=0: it stays there); the host stops the run through the API (status 72).
    /// (With panic=-1 this kernel's restart went to the real-mode BIOS path on vCPU 1 without
    /// trying the i8042, where PVM's emulator failed; our small kernel resets through 0x64.)
    @Test func stockKernelReachesInitWithTwoCPUs() throws {
        guard Linux.require("stock/vmlinux", "stock/initrd.cpio") else { return }
        let vm = try LinuxVM(["run", "--kernel", Linux.kernels + "/stock/vmlinux", "--initrd", Linux.kernels + "/stock/initrd.cpio",
                              "--memory", "512M", "--cpus", "2", "--cmdline", Linux.common + " " + Linux.stockExtras + " panic=0"])
        #expect(vm.waitForOutput("Run /init as init process", timeout: 40 * 60), "\(vm.transcript)")
        #expect(vm.waitForOutput("Kernel panic - not syncing: Attempted to kill init!", timeout: 5 * 60), "\(vm.transcript)")
        _ = vm.control("stop")
        let status = vm.exitStatus(timeout: 60)
        let log = vm.output
        #expect(status == 72, "\(vm.transcript)")
        for line in ["ACPI: Using ACPI (MADT) for SMP configuration information", "smp: Brought up 1 node, 2 CPUs",
                     "ACPI: 1 ACPI AML tables successfully acquired and loaded", "pnp: PnP ACPI: found 2 devices",
                     "rtc_cmos 00:01: registered as rtc0", "printk: console [ttyS0] enabled"] {
            #expect(log.contains(line), "missing '\(line)'\n\(vm.transcript)")
        }
        // The UART the DSDT describes (PNP0501, GSI 4), found by the 8250 driver as a 16550A.
        #expect(log.range(of: #"00:00: ttyS0 at I/O 0x3f8 \(irq = \d+, base_baud = 115200\) is a 16550A"#, options: .regularExpression) != nil,
                "\(vm.transcript)")
        #expect(!vm.errors.contains("swiftvmm:"), "the VMM reported a problem\n\(vm.transcript)")
    }

    /// Our small kernel: boots, its virtio_balloon driver probes the device, the host inflates
    /// 128 MiB through the API and the process's RSS drops by at least 99% of it, the kernel's
    /// own statistics reach the host, deflating works, and the host stops the VM.
    /// With 2 vCPUs (`run`) the device is found through ACPI (LNRO0005 in the DSDT); with 1 vCPU
    /// and acpi=off through the command line (virtio_mmio.device=), the kernel using the 8259 PIC,
    /// and the VM configured and started by curl on `swiftvmm serve` (Firecracker's sequence).
    @Test(arguments: [(cpus: 2, viaACPI: true), (cpus: 1, viaACPI: false)])
    func smallKernelBalloon(cpus: Int, viaACPI: Bool) throws {
        guard Linux.require("small/vmlinux", "small/initrd.cpio") else { return }
        let cmdline = Linux.common + " pci=off" + (viaACPI ? "" : " acpi=off " + BalloonControl.linuxCommandLine)
        let kernel = Linux.kernels + "/small/vmlinux", initrd = Linux.kernels + "/small/initrd.cpio"
        let vm: LinuxVM
        if viaACPI {
            vm = try LinuxVM(["run", "--kernel", kernel, "--initrd", initrd, "--memory", "512M", "--cpus", "\(cpus)", "--balloon",
                              "--prefault", "--cmdline", cmdline])
        } else {
            vm = try LinuxVM(["serve", "--prefault"])
            let statuses = try vm.configureWithCurl([
                ("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "initrd_path": "\#(initrd)", "boot_args": "\#(cmdline)"}"#),
                ("PUT", "/machine-config", #"{"vcpu_count": \#(cpus), "mem_size_mib": 512}"#),
                ("PUT", "/balloon", #"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}"#),
                ("PUT", "/actions", #"{"action_type": "InstanceStart"}"#),
            ])
            #expect(statuses.allSatisfy { $0.hasSuffix(": 204") }, "\(statuses)\n\(vm.transcript)")
        }
        #expect(vm.waitForOutput("Run /init as init process", timeout: 10 * 60), "\(vm.transcript)")
        let log = vm.output
        #expect(log.contains(cpus == 2 ? "smp: Brought up 1 node, 2 CPUs" : "smp: Brought up 1 node, 1 CPU"), "\(vm.transcript)")
        if viaACPI { #expect(log.contains("ACPI: 1 ACPI AML tables successfully acquired and loaded"), "\(vm.transcript)") }

        // The driver is bound, and the kernel's own statistics (total memory near 512 MiB) arrive.
        var status: String?
        let ready = vm.wait(upTo: 120) {
            status = vm.control("balloon")
            return LinuxVM.value("driver_ready", in: status) == 1 && LinuxVM.value("total_memory", in: status) != nil
        }
        #expect(ready, "balloon driver not ready or no statistics: \(status ?? "-")\n\(vm.transcript)")
        guard ready else { return }
        let total = LinuxVM.value("total_memory", in: status) ?? 0
        #expect(total > 400 << 20 && total <= 512 << 20, "total memory statistic \(total)")
        let updatesBefore = LinuxVM.value("stats_updates", in: status) ?? 0
        let freeBefore = LinuxVM.value("free_memory", in: status) ?? 0

        // Inflate 128 MiB: every page leaves the process (guest RAM was made resident by --prefault).
        let before = try #require(vm.residentKiB)
        _ = vm.control("balloon 128M")
        let inflated = vm.wait(upTo: 600, every: 1) { LinuxVM.value("actual_kib", in: vm.control("balloon")) == 131072 }
        #expect(inflated, "balloon did not reach 128 MiB: \(vm.control("balloon") ?? "-")\n\(vm.transcript)")
        let after = try #require(vm.residentKiB)
        #expect(before - after >= 131072 * 99 / 100, "RSS \(before) KiB -> \(after) KiB")
        let memory = vm.control("memory")
        #expect(LinuxVM.value("guest_resident_kib", in: memory) ?? Int.max <= 524288 - 131072 * 99 / 100, "\(memory ?? "-")")
        // Statistics keep coming, and the guest's free memory shows the pages it gave away (most
        // of 128 MiB: the kernel frees and allocates on its own meanwhile; 124.6 MiB was seen).
        var free = Int.max
        let fresh = vm.wait(upTo: 30) {
            let now = vm.control("balloon")
            free = LinuxVM.value("free_memory", in: now) ?? Int.max
            return LinuxVM.value("stats_updates", in: now) ?? 0 > updatesBefore + 1 && free <= freeBefore - (96 << 20)
        }
        #expect(fresh, "statistics after inflating: free \(free), \(freeBefore) before")

        // Deflate: the guest takes its pages back.
        _ = vm.control("balloon 0")
        let deflated = vm.wait(upTo: 600, every: 1) { LinuxVM.value("actual_kib", in: vm.control("balloon")) == 0 }
        #expect(deflated, "balloon did not deflate: \(vm.control("balloon") ?? "-")")
        let final = vm.control("balloon")
        #expect(LinuxVM.value("deflated", in: final) == 32768 && LinuxVM.value("rejected_pfns", in: final) == 0
                    && LinuxVM.value("queue_errors", in: final) == 0, "\(final ?? "-")")

        // The host ends the run: status 72 (stopped by the host), counters printed, nothing failed.
        _ = vm.control("stop")
        let exit = vm.exitStatus(timeout: 30)
        #expect(exit == 72, "\(vm.transcript)")
        #expect(vm.errors.contains("balloon: target_kib=0 actual_kib=0 inflated=32768 deflated=32768"), "\(vm.transcript)")
        #expect(!vm.errors.contains("swiftvmm:"), "\(vm.transcript)")
    }

    /// Our small kernel mounts its root file system from a virtio-blk disk: an ext2 image the
    /// test makes holding only /init. With `run --disk` the kernel finds the disk in the DSDT;
    /// on `swiftvmm serve` the drive comes from Firecracker's `PUT /drives/rootfs` (the root
    /// device: swiftvmm adds root=/dev/vda) and the kernel, without ACPI, from virtio_mmio.device=.
    @Test(arguments: [true, false])
    func smallKernelMountsItsRootFromADisk(viaAPI: Bool) throws {
        guard Linux.require("small/vmlinux", "small/init") else { return }
        let base = NSTemporaryDirectory() + "swiftvmm-root-\(getpid())-\(viaAPI)"
        let tree = base + ".d", image = base + ".ext2"
        defer { for path in [tree, image] { try? FileManager.default.removeItem(atPath: path) } }
        try FileManager.default.createDirectory(atPath: tree + "/dev", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Linux.kernels + "/small/init", toPath: tree + "/init")
        let mkfs = Process()
        mkfs.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        mkfs.arguments = ["mkfs.ext2", "-q", "-F", "-b", "1024", "-L", "swiftvmm-root", "-d", tree, image, "8M"]
        try mkfs.run()
        mkfs.waitUntilExit()
        #expect(mkfs.terminationStatus == 0, "mkfs.ext2 (e2fsprogs; make linux-small installs it) failed")
        let kernel = Linux.kernels + "/small/vmlinux"
        let cmdline = Linux.common + " pci=off init=/init"
        let vm: LinuxVM
        if viaAPI {
            vm = try LinuxVM(["serve"])
            let boot = cmdline + " acpi=off " + Platform.linuxCommandLine(virtio: 0)
            let statuses = try vm.configureWithCurl([
                ("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "\#(boot)"}"#),
                ("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 256}"#),
                ("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "\#(image)", "is_root_device": true, "is_read_only": false}"#),
                ("PUT", "/actions", #"{"action_type": "InstanceStart"}"#),
            ])
            #expect(statuses.allSatisfy { $0.hasSuffix(": 204") }, "\(statuses)\n\(vm.transcript)")
        } else {
            vm = try LinuxVM(["run", "--kernel", kernel, "--memory", "256M", "--cpus", "2", "--disk", image + ",id=rootfs",
                              "--cmdline", cmdline + " root=/dev/vda rw"])
        }
        #expect(vm.waitForOutput("Run /init as init process", timeout: 10 * 60), "\(vm.transcript)")
        let log = vm.output
        #expect(log.contains("virtio_blk virtio0: [vda] 16384 512-byte logical blocks"), "\(vm.transcript)")
        #expect(log.contains("VFS: Mounted root (ext2 filesystem) on device 254:0."), "\(vm.transcript)")
        _ = vm.control("stop")
        #expect(vm.exitStatus(timeout: 60) == 72, "\(vm.transcript)")
        #expect(vm.errors.range(of: #"disk rootfs: [1-9][0-9]* reads"#, options: .regularExpression) != nil, "\(vm.transcript)")
        #expect(vm.errors.contains("0 errors, 0 unsupported, 0 malformed"), "\(vm.transcript)")
        #expect(!vm.errors.contains("swiftvmm:"), "\(vm.transcript)")
    }

    /// Our small kernel on the network with no user space: virtio_net on a tap swiftvmm creates in
    /// a network namespace of the test's own, kernel IP autoconfiguration (`ip=`), and the host's
    /// ping answered by the kernel.
    @Test func smallKernelAnswersPingThroughATap() throws {
        guard Linux.require("small/vmlinux", "small/initrd.cpio") else { return }
        let kernel = Linux.kernels + "/small/vmlinux", initrd = Linux.kernels + "/small/initrd.cpio"
        let cmdline = Linux.common + " pci=off ip=10.0.2.15::10.0.2.1:255.255.255.0::eth0:off"
        let script = """
            ip link set lo up
            work=$(mktemp -d); cd "$work"
            '\(Linux.binary)' run --kernel '\(kernel)' --initrd '\(initrd)' --memory 256M --net tap=ltap --stats --cmdline '\(cmdline)' > vm.out 2> vm.err &
            vmm=$!
            for i in $(seq 1 600); do ip link show ltap >/dev/null 2>&1 && break; sleep 0.1; done
            ip addr add 10.0.2.1/24 dev ltap && ip link set ltap up
            # The end of boot: right after IP-Config the kernel (emulated at CPL 0 here) is still busy
            # for seconds and answers late (2.7 s, measured), which is delay, not loss.
            for i in $(seq 1 6000); do grep -q "Run /init as init process" vm.out && break; sleep 0.1; done
            # -w: wait for every reply (the kernel runs emulated here; ping's own wait for the last is two
            # round trips). One ping first resolves the address.
            ping -c 1 -w 60 10.0.2.15 > /dev/null
            ping -c 3 -i 0.5 -w 60 10.0.2.15
            kill $vmm; wait $vmm
            cat vm.out vm.err; cd /; rm -rf "$work"
            """
        let process = Process(), output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--net", "/bin/sh", "-c", script]
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(text.contains("IP-Config: Complete:"), "\(text)")
        // -c 3 -w 60 sends until three replies came (or the deadline): how many went out is the
        // kernel's latency, three answered is the point.
        #expect(text.range(of: #"\d+ packets transmitted, 3 received"#, options: .regularExpression) != nil, "\(text)")
        #expect(text.range(of: #"net net0: tap ltap, tx [1-9][0-9]* frames"#, options: .regularExpression) != nil, "\(text)")
    }
}
