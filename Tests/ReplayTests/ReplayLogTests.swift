import Testing
import VMMCore
@testable import Replay

@Suite struct ReplayLogTests {
    static let records: [ReplayRecord] = [
        .exit(ExitRecord(kind: .ioOut, address: 0x3F8, size: 1, value: 0x41, rip: 0x10_0234)),
        .input(Array("hello\n".utf8)),
        .exit(ExitRecord(kind: .ioIn, address: 0x3FD, size: 1, value: 0x61, rip: 0x10_0200)),
        .interrupt(0x24),
        .exit(ExitRecord(kind: .hlt, rip: 0x10_0300)),
        .clock(123_456_789),
        .balloonTarget(4096),
        .balloonStatsInterval(1_000_000_000),
        .exit(ExitRecord(kind: .mmioWrite, address: 0xD000_0050, size: 4, value: 0xFFFF_FFFF, rip: 0xFFFF_FFFF_8100_0000)),
        .exit(ExitRecord(kind: .ioOut, address: 0x3F8, size: 1, count: 17, value: 0xDEAD_BEEF, rip: 0x1000)),
        .exit(ExitRecord(kind: .interruptWindow, rip: 0x1002)),
        .end(ReplayEnd(exits: 6, status: 1, atExit: true, memoryDigest: 0x1234, registerDigest: 0x5678, outcome: "debug exit")),
    ]

    /// Encodes `records` into chunks sealed every `every` records.
    static func encode(_ records: [ReplayRecord], every: Int = 3) -> [[UInt8]] {
        var encoder = ReplayLogEncoder(), chunks: [[UInt8]] = []
        for (index, record) in records.enumerated() {
            encoder.append(record)
            if (index + 1) % every == 0 { chunks.append(encoder.seal()) }
        }
        if encoder.hasPending { chunks.append(encoder.seal()) }
        return chunks
    }

    static func decode(_ chunks: [[UInt8]]) throws(ReplayLogError) -> [ReplayRecord] {
        var decoder = ReplayLogDecoder(), records: [ReplayRecord] = []
        for chunk in chunks {
            let length = UInt32(LittleEndian.load(chunk, at: 0, size: 4)), checksum = LittleEndian.load(chunk, at: 4, size: 8)
            try decoder.feed(length: length, checksum: checksum, payload: Array(chunk[12...]))
            while let record = try decoder.next() { records.append(record) }
        }
        return records
    }

    @Test func recordsComeBackAsTheyWent() throws {
        #expect(try Self.decode(Self.encode(Self.records)) == Self.records)
        #expect(try Self.decode(Self.encode(Self.records, every: 100)) == Self.records)
    }

    @Test func aChangedByteIsACorruptChunk() {
        var chunks = Self.encode(Self.records)
        chunks[1][14] ^= 0x01
        #expect(throws: ReplayLogError.self) { try Self.decode(chunks) }
    }

    @Test func everyPrefixOfAPayloadFailsOrDecodesAPrefix() throws {
        // A hostile payload with a valid checksum: cut anywhere, records are refused or shorter, never a trap.
        var encoder = ReplayLogEncoder()
        for record in Self.records { encoder.append(record) }
        let chunk = encoder.seal()
        let payload = Array(chunk[12...])
        for cut in 0..<payload.count {
            var decoder = ReplayLogDecoder()
            let part = Array(payload[..<cut])
            try decoder.feed(length: UInt32(part.count), checksum: Digest.of(part), payload: part)
            var decoded: [ReplayRecord] = []
            do {
                while let record = try decoder.next() { decoded.append(record) }
            } catch {
                continue
            }
            #expect(decoded.count < Self.records.count)
            #expect(Array(Self.records.prefix(decoded.count)) == decoded)
        }
    }

    @Test func theEndRecordMustCountTheExits() throws {
        let wrong: [ReplayRecord] = [.exit(ExitRecord(kind: .hlt, rip: 1)),
                                     .end(ReplayEnd(exits: 5, status: 0, atExit: true, memoryDigest: 0, registerDigest: 0, outcome: ""))]
        #expect(throws: ReplayLogError.self) { try Self.decode(Self.encode(wrong)) }
    }

    @Test func headerRoundTripsAndRefusesOthers() throws {
        var header = ReplayHeader(image: .init(path: "/guests/echo.elf", size: 4096, digest: 0xABCD))
        (header.format, header.entry, header.memorySize, header.commandLine) = ("auto", "long", 64 << 20, "irq=1 lines=3")
        header.balloon = true
        header.modules = [.init(path: "/m", size: 1, digest: 2)]
        header.initrd = .init(path: "/i", size: 3, digest: 4)
        (header.rtcStartSeconds, header.rtcStartNanoseconds, header.loadAddress) = (1_790_000_000, 5, 0x200000)
        let bytes = header.encoded
        let (length, checksum) = try ReplayHeader.bodyLength(prefix: Array(bytes.prefix(ReplayHeader.prefixSize)))
        #expect(try ReplayHeader(body: Array(bytes[ReplayHeader.prefixSize...].prefix(length)), checksum: checksum) == header)

        var otherVersion = bytes
        otherVersion[8] = 9
        #expect(throws: ReplayLogError.version(9)) { _ = try ReplayHeader.bodyLength(prefix: otherVersion) }
        #expect(throws: ReplayLogError.notALog) { _ = try ReplayHeader.bodyLength(prefix: Array("#!/bin/sh\necho hello world".utf8)) }
        var corrupt = Array(bytes[ReplayHeader.prefixSize...].prefix(length))
        corrupt[3] ^= 0x80
        #expect(throws: ReplayLogError.self) { _ = try ReplayHeader(body: corrupt, checksum: checksum) }
    }

    @Test func aHeaderIsReadThroughAReaderAndEveryCutIsRefused() throws {
        var header = ReplayHeader(image: .init(path: "/guests/seq.elf", size: 512, digest: 7))
        header.commandLine = "count=5"
        let bytes = header.encoded + [0xEE, 0xEE]
        func reader(_ log: [UInt8]) -> (Int) -> [UInt8]? {
            var position = 0
            return { count in
                defer { position += count }
                return position < log.count ? Array(log[position...].prefix(count)) : nil
            }
        }
        let (read, size) = try ReplayHeader.read(reader(bytes))
        #expect(read == header)
        #expect(size == bytes.count - 2)
        for cut in 0..<size {
            #expect(throws: ReplayLogError.self) { _ = try ReplayHeader.read(reader(Array(bytes.prefix(cut)))) }
        }
    }

    @Test func exitRecordsSayWhatTheyAre() {
        let record = ExitRecord(kind: .ioOut, address: 0x3F8, size: 1, value: 0x41, rip: 0x100234)
        #expect(record.description == "io-out port 0x3f8 size 1 value 0x41 rip 0x100234")
        #expect(ExitRecord(kind: .hlt, rip: 0x10).description == "hlt rip 0x10")
    }

    @Test func aSmallExitCostsAFewBytes() {
        var encoder = ReplayLogEncoder()
        for step in 0..<1000 { encoder.append(.exit(ExitRecord(kind: .ioIn, address: 0x3FD, size: 1, value: 0x60, rip: 0x100200 + UInt64(step % 3) * 2))) }
        #expect(encoder.bytesEncoded <= 6 * 1000)
    }
}
