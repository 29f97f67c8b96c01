/// Every fuzz target: a name (the corpus directory under Fuzz/corpus and the argument of
/// `swiftvmm-fuzz`) and the function one input goes through. An input may make a target refuse
/// it with an error; a crash, a trap, a hang or a sanitizer report is a finding.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case virtioBalloon = "virtio-balloon"
    case virtioBlock = "virtio-blk"
    case virtioNet = "virtio-net"
    case uart
    case pit
    case rtc
    case fwCfg = "fw-cfg"
    case testDevice = "pc-testdev"
    case elf
    case multiboot
    case linux
    case image
    case gdb
    case commands
    case hostConfig = "host-config"
    case api
    case snapshot
    case share
    case acpiPM = "acpi-pm"
    case pic
    case replayLog = "replay-log"

    /// Inputs longer than this are cut (libFuzzer gets the same bound through -max_len), so one
    /// input's cost stays small; loaders get room for real small images.
    public var maximumLength: Int {
        switch self {
        case .elf, .multiboot, .linux, .image: 64 << 10
        default: 8 << 10
        }
    }

    public func run(_ data: [UInt8]) {
        let data = data.count > maximumLength ? Array(data.prefix(maximumLength)) : data
        switch self {
        case .virtioBalloon: VirtioTarget.balloon(data)
        case .virtioBlock: VirtioTarget.block(data)
        case .virtioNet: VirtioTarget.net(data)
        case .uart: DeviceTargets.uart(data)
        case .pit: DeviceTargets.pit(data)
        case .rtc: DeviceTargets.rtc(data)
        case .fwCfg: DeviceTargets.fwCfg(data)
        case .testDevice: DeviceTargets.testDevice(data)
        case .elf: ParserTargets.elf(data)
        case .multiboot: ParserTargets.multiboot(data)
        case .linux: ParserTargets.linux(data)
        case .image: ParserTargets.image(data)
        case .gdb: ParserTargets.gdb(data)
        case .commands: ParserTargets.commands(data)
        case .hostConfig: ParserTargets.hostConfig(data)
        case .api: APITarget.requests(data)
        case .snapshot: SnapshotTarget.state(data)
        case .share: ShareTarget.calls(data)
        case .acpiPM: DeviceTargets.acpiPM(data)
        case .pic: ReplayTargets.pic(data)
        case .replayLog: ReplayTargets.log(data)
        }
    }
}
