import Debugging
import Testing

@Suite struct GDBProtocolTests {
    @Test func framingChecksumsAndEscapes() {
        #expect(String(decoding: GDBPacket.frame("OK"), as: UTF8.self) == "$OK#9a")
        // '#' inside a payload is escaped as '}' followed by '#' ^ 0x20.
        #expect(GDBPacket.frame([0x23]) == Array("$}\u{03}#80".utf8))
    }

    @Test func readerAssemblesPacketsAcrossReadsAndChecksChecksums() {
        var reader = GDBPacketReader()
        #expect(reader.feed(Array("+$g#6".utf8)) == [.ack])
        #expect(reader.feed(Array("7$m0,4#00".utf8)) == [.packet(Array("g".utf8)), .corrupt])
        #expect(reader.feed([0x03]) == [.interrupt])
        #expect(reader.feed(GDBPacket.frame([0x24, 0x7d, 0x01])) == [.packet([0x24, 0x7d, 0x01])])
    }

    @Test func requestsParse() {
        func parse(_ text: String) -> GDBRequest { GDBRequest.parse(Array(text.utf8)) }
        #expect(parse("?") == .haltReason)
        #expect(parse("m100000,8") == .readMemory(address: 0x100000, length: 8))
        #expect(parse("M1000,2:cc90") == .writeMemory(address: 0x1000, bytes: [0xcc, 0x90]))
        #expect(parse("M1000,3:cc90") == .malformed("M1000,3:cc90"))
        #expect(parse("p10") == .readRegister(16))
        #expect(parse("P10=0010000000000000") == .writeRegister(16, [0, 0x10, 0, 0, 0, 0, 0, 0]))
        #expect(parse("Z0,100123,1") == .insertBreakpoint(.software, address: 0x100123, kind: 1))
        #expect(parse("z1,100123,1") == .removeBreakpoint(.hardware, address: 0x100123, kind: 1))
        #expect(parse("Hg2") == .setThread(operation: "g", .thread(2)))
        #expect(parse("Hc-1") == .setThread(operation: "c", .all))
        #expect(parse("T1") == .threadAlive(.thread(1)))
        #expect(parse("vCont;s:1;c") == .vCont([.init(kind: .step, thread: .thread(1)), .init(kind: .continue, thread: nil)]))
        // A fuzzed client's "vCont;:" (an item that is only the separator) trapped the parser.
        #expect(parse("vCont;:") == .unsupported("vCont;:"))
        #expect(parse("vCont;s:") == .malformed("vCont;s:"))
        #expect(parse("c") == .resume(step: false, address: nil))
        #expect(parse("s100000") == .resume(step: true, address: 0x100000))
        #expect(parse("qSupported:multiprocess+;swbreak+") == .supported(features: ["multiprocess+", "swbreak+"]))
        #expect(parse("qXfer:features:read:target.xml:0,ffb") == .readFeature(annex: "target.xml", offset: 0, length: 0xffb))
        #expect(parse("qfThreadInfo") == .threadInfoFirst)
        #expect(parse("D") == .detach)
        #expect(parse("vMustReplyEmpty") == .unsupported("vMustReplyEmpty"))
        #expect(parse("mzz,4") == .malformed("mzz,4"))
    }

    @Test func numbersPastIntMaxAreRefusedNotTrapped() {
        // A client's hex numbers >= 2^63 used to trap converting to Int.
        func parse(_ text: String) -> GDBRequest { GDBRequest.parse(Array(text.utf8)) }
        let big = Int(Int32.max)
        #expect(parse("pffffffffffffffff") == .readRegister(big))
        #expect(parse("P8000000000000000=00") == .writeRegister(big, [0]))
        #expect(parse("Z0,1000,ffffffffffffffff") == .insertBreakpoint(.software, address: 0x1000, kind: big))
        #expect(parse("Hgffffffffffffffff") == .setThread(operation: "g", .thread(big)))
        #expect(parse("qXfer:features:read:target.xml:8000000000000000,10") == .readFeature(annex: "target.xml", offset: big, length: 16))
        #expect(parse("m8000000000000000,ffffffffffffffff") == .malformed("m8000000000000000,ffffffffffffffff"))
        #expect(parse("pfffffffffffffffff") == .malformed("pfffffffffffffffff"), "more than 64 bits")
    }

    @Test func registerLayoutMatchesGDBsAMD64Numbering() {
        let names = GDBRegisterLayout.registers.map(\.name)
        #expect(names[0] == "rax" && names[7] == "rsp" && names[16] == "rip" && names[17] == "eflags")
        #expect(names[24] == "st0" && names[40] == "xmm0" && names[56] == "mxcsr")
        #expect(GDBRegisterLayout.offsets[16] == 128 && GDBRegisterLayout.offsets[17] == 136)
        #expect(GDBRegisterLayout.packetSize == 16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 2 * 8)
        let xml = GDBRegisterLayout.targetXML
        #expect(xml.contains("<architecture>i386:x86-64</architecture>"))
        #expect(xml.contains("<reg name=\"rip\" bitsize=\"64\" type=\"code_ptr\" regnum=\"16\"/>"))
        #expect(xml.contains("org.gnu.gdb.i386.sse"))
    }
}
