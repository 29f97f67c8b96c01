import VMM
import Host
import Glibc

/// Renders host mode's per-pCPU usage and per-VM memory over time to a PNG with gnuplot.
public enum HostPlot {
    /// Writes the data and a gnuplot script next to `path` (same name, .dat/.gp) and runs gnuplot.
    public static func render(_ records: [PeriodRecord], to path: String) throws(VMMError) {
        guard let first = records.first else { throw .invalidConfig("nothing to plot: no controller period completed") }
        // The path stands inside single quotes of the gnuplot script; VM names are checked when
        // the host config is read (HostConfig.nameCharacters).
        guard !path.utf8.contains(where: { [UInt8(ascii: "'"), UInt8(ascii: "`"), UInt8(ascii: "\n"), UInt8(ascii: "\\")].contains($0) }) else {
            throw .invalidConfig("plot path \(path) may not contain quotes, backquotes, backslashes or newlines")
        }
        let base = path.hasSuffix(".png") ? String(path.dropLast(4)) : path
        // With page sharing, a third panel: each VM's resident RAM that shared pages back.
        let sharing = records.contains { $0.vms.contains { $0.sharedMiB != nil } }
        var data = "# seconds " + first.pcpus.map { "cpu\($0.cpu)_usage" }.joined(separator: " ") + " "
            + first.vms.map { "\($0.name)_actual_mib" }.joined(separator: " ")
            + (sharing ? " " + first.vms.map { "\($0.name)_shared_mib" }.joined(separator: " ") : "") + "\n"
        for record in records {
            let usage = first.pcpus.map { cpu in record.pcpus.first { $0.cpu == cpu.cpu }?.usage ?? 0 }
            let memory = first.vms.map { vm in record.vms.first { $0.name == vm.name }?.actualMiB ?? 0 }
            let shared = sharing ? first.vms.map { vm in record.vms.first { $0.name == vm.name }?.sharedMiB ?? 0 } : []
            data += ([record.seconds] + usage + memory + shared).map { String($0) }.joined(separator: " ") + "\n"
        }
        let cpuCount = first.pcpus.count
        let usagePlots = first.pcpus.enumerated().map { index, cpu in
            "'\(base).dat' using 1:\(index + 2) with linespoints title 'pCPU \(cpu.cpu)'"
        }
        let memoryPlots = first.vms.enumerated().map { index, vm in
            "'\(base).dat' using 1:\(index + 2 + cpuCount) with lines title '\(vm.name)'"
        }
        let sharedPlots = first.vms.enumerated().map { index, vm in
            "'\(base).dat' using 1:\(index + 2 + cpuCount + first.vms.count) with lines title '\(vm.name)'"
        }
        let sharedPanel = sharing ? """

        set ylabel 'VM memory: Shared (MiB)'
        plot \(sharedPlots.joined(separator: ", "))
        """ : ""
        let script = """
        set terminal pngcairo size 1100,\(sharing ? 1100 : 800)
        set output '\(path)'
        set multiplot layout \(sharing ? 3 : 2),1 title 'swiftvmm host mode'
        set xlabel 'seconds'
        set ylabel 'pCPU usage (%)'
        set yrange [0:110]
        set key outside right
        plot \(usagePlots.joined(separator: ", "))
        set ylabel 'VM memory: Actual (MiB)'
        set yrange [0:*]
        plot \(memoryPlots.joined(separator: ", "))\(sharedPanel)
        unset multiplot
        """
        try write(data, to: base + ".dat")
        try write(script + "\n", to: base + ".gp")
        try runGnuplot(base + ".gp")
    }

    private static func write(_ text: String, to path: String) throws(VMMError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .invalidConfig("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard writeAll(text, to: FileDescriptor(rawValue: fd)) else { throw .invalidConfig("cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    private static func runGnuplot(_ script: String) throws(VMMError) {
        var pid = pid_t()
        let arguments = ["gnuplot", script]
        // C strings for posix_spawnp's argv: strdup'd copies, NULL-terminated, freed after the call
        // (the child has its own copy by then).
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let result = posix_spawnp(&pid, "gnuplot", nil, nil, &argv, environ)
        guard result == 0 else {
            throw .invalidConfig("cannot run gnuplot (\(String(cString: strerror(result)))): install it with apt-get install gnuplot-nox")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw .invalidConfig("gnuplot failed on \(script) (status \(status))") }
    }
}
