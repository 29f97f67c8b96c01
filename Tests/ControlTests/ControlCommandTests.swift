import Control
import Testing

@Suite struct ControlCommandTests {
    @Test func parsesEveryRequest() throws {
        #expect(try ControlCommand.parse("balloon") == .balloonStatus)
        #expect(try ControlCommand.parse("  balloon 128M\r") == .balloonTarget("128M"))
        #expect(try ControlCommand.parse("MEMORY") == .memory)
        #expect(try ControlCommand.parse("stats") == .stats)
        #expect(try ControlCommand.parse("pause") == .pause)
        #expect(try ControlCommand.parse("resume") == .resume)
        #expect(try ControlCommand.parse("quit") == .stop)
        #expect(try ControlCommand.parse("help") == .help)
        #expect(try ControlCommand.parse("   ") == .nothing)
        #expect(try ControlCommand.parse("info") == .info)
        #expect(try ControlCommand.parse("vcpus") == .vcpus)
        #expect(try ControlCommand.parse("pin 1 0,2-3") == .pin(vcpu: "1", cpus: "0,2-3"))
    }

    @Test func refusesWhatItDoesNotKnow() {
        #expect(throws: ControlCommandError.unknown("reboot")) { try ControlCommand.parse("reboot") }
        #expect(throws: ControlCommandError.usage("balloon [SIZE]")) { try ControlCommand.parse("balloon 1 2") }
        #expect(throws: ControlCommandError.usage("stop")) { try ControlCommand.parse("stop now") }
        #expect(throws: ControlCommandError.usage("pin VCPU CPUS")) { try ControlCommand.parse("pin 1") }
        #expect(ControlCommandError.unknown("x").description == "unknown request 'x' (try 'help')")
    }
}

@Suite struct CPUListTests {
    @Test func listsAndRangesWithinLinuxsLimit() {
        #expect(ControlClient.cpuList("1") == [1])
        #expect(ControlClient.cpuList("0,2-3") == [0, 2, 3])
        #expect(ControlClient.cpuList("0-8191")?.count == 8192)
        for bad in ["", "-", "3-1", "0-8192", "a", "1,,2", "-1", "1-2-3", String(repeating: "0-8191,", count: 3) + "0"] {
            #expect(ControlClient.cpuList(bad) == nil, "\(bad.prefix(20))")
        }
    }
}
