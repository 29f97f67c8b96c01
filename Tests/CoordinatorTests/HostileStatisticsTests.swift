import Testing
@testable import Coordinator

/// Guest-reported statistics and config values near the ends of their range.
@Suite struct HostileStatisticsTests {
    @Test func freeMemoryNearTwoToTheSixtyFour() {
        let vm = VMMemorySample(name: "liar", maximumBytes: 1 << 30, balloonBytes: 1 << 29, unusedBytes: .max)
        #expect(vm.line == "Memory (VM: liar) Actual [512.0], Unused: [17592186044416.0]")
        let coordinator = MemoryCoordinator(settings: CoordinatorSettings(floor: .max, hostReserve: .max))
        let targets = coordinator.decide([vm, VMMemorySample(name: "b", maximumBytes: .max, balloonBytes: .max, unusedBytes: 0)],
                                         hostAvailableBytes: .max)
        #expect(targets[0] == nil, "a VM claiming to be all free still keeps used + floor")
        #expect(mebibytes(.max) == "17592186044416.0")
        #expect(mebibytes(0) == "0.0" && mebibytes(1 << 20) == "1.0" && mebibytes(1_572_864) == "1.5")
    }

    @Test func lowWatermarkAboveHighDoesNotUnderflow() {
        let coordinator = MemoryCoordinator(settings: CoordinatorSettings(lowWatermark: 512 << 20, highWatermark: 64 << 20))
        let needy = VMMemorySample(name: "n", maximumBytes: 1 << 30, balloonBytes: 256 << 20, unusedBytes: 128 << 20)
        #expect(coordinator.decide([needy], hostAvailableBytes: 8 << 30).isEmpty)
    }

    @Test func meminfoWithHugeValues() {
        #expect(hostMemoryTotal(meminfo: "MemTotal:       18446744073709551615 kB\n") == .max)
        #expect(hostMemoryAvailable(meminfo: "MemTotal: 1 kB\nMemAvailable: 2 kB\n") == 2048)
    }
}
