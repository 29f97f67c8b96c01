import CHost
import Glibc

/// Guest RAM as a snapshot's memory file: the regions one after another, in guest-physical
/// order (region i at the sum of the sizes before it), so the file is exactly `totalSize` bytes.
/// Zero pages are holes: a balloon's released pages and never-touched RAM cost no disk space.
extension GuestMemory {
    /// Where each region starts in the memory file.
    public var fileOffsets: [UInt64] {
        var offset: UInt64 = 0
        return regions.map { region in
            defer { offset += UInt64(region.size) }
            return offset
        }
    }

    /// Writes every non-zero page to `fd` at its file offset after sizing the file to RAM's size
    /// (truncating away old contents first, so what is not written is a hole). Pages the host
    /// never made resident are zero and not even read, unless the RAM itself maps a file (then
    /// every page is looked at). Returns the bytes written.
    public func writeMemoryFile(_ fd: Int32) throws(GuestMemoryError) -> UInt64 {
        guard ftruncate(fd, 0) == 0, ftruncate(fd, off_t(totalSize)) == 0 else { throw .file("sizing the memory file", errno: errno) }
        var written: UInt64 = 0
        for (region, fileOffset) in zip(regions, fileOffsets) {
            written += try writeRegion(region, to: fd, at: fileOffset, pages: { $0 })
        }
        return written
    }

    /// Writes only the pages `dirty` names (page numbers of guest-physical address / 4096) at
    /// their file offsets, a zero page as a hole punched: a diff snapshot updating the memory file
    /// of the snapshot before it. Returns the bytes written.
    public func writeMemoryPages(_ fd: Int32, pages dirty: [UInt64]) throws(GuestMemoryError) -> UInt64 {
        var written: UInt64 = 0
        let pageSize = UInt64(self.pageSize)
        for (region, fileOffset) in zip(regions, fileOffsets) {
            let first = region.guestStart / pageSize, end = region.guestEnd / pageSize
            let inRegion = dirty.filter { $0 >= first && $0 < end }.map { Int($0 - first) }
            guard !inRegion.isEmpty else { continue }
            written += try writeRegion(region, to: fd, at: fileOffset, punchZeros: true, pages: { _ in inRegion })
        }
        return written
    }

    /// The one loop over a region's pages: runs of non-zero pages go out in one pwrite each.
    /// `pages` turns the region's resident page indexes into those to consider.
    private func writeRegion(_ region: GuestMemoryRegion, to fd: Int32, at fileOffset: UInt64, punchZeros: Bool = false,
                             pages: ([Int]) -> [Int]) throws(GuestMemoryError) -> UInt64 {
        let count = region.size / pageSize
        let candidates = pages(punchZeros ? Array(0..<count) : residentPages(region))
        // Safe: the region's mapping lives as long as self; every page index is below
        // region.size / pageSize, so each span read lies inside it.
        let base = UnsafeRawPointer(bitPattern: region.hostAddress)!
        var written: UInt64 = 0
        var runStart = -1, runEnd = -1
        func flush() throws(GuestMemoryError) {
            guard runStart >= 0 else { return }
            try Self.writeAll(fd, base + runStart * pageSize, (runEnd - runStart) * pageSize,
                              at: fileOffset + UInt64(runStart * pageSize))
            written += UInt64((runEnd - runStart) * pageSize)
            runStart = -1
        }
        for page in candidates where page >= 0 && page < count {
            if Self.isZero(base + page * pageSize, pageSize) {
                try flush()
                if punchZeros {
                    if chost_punch_hole(fd, Int64(fileOffset) + Int64(page * pageSize), Int64(pageSize)) != 0 {
                        // A file system without hole punching gets the zeros written instead.
                        try Self.writeAll(fd, base + page * pageSize, pageSize, at: fileOffset + UInt64(page * pageSize))
                    }
                }
                continue
            }
            if runStart >= 0 && page == runEnd { runEnd += 1; continue }
            try flush()
            (runStart, runEnd) = (page, page + 1)
        }
        try flush()
        return written
    }

    /// Indexes of the region's pages the host holds (mincore), in order; every page when the
    /// RAM maps a file (a page not in memory may still hold the file's data).
    public func residentPages(_ region: GuestMemoryRegion) -> [Int] {
        let count = region.size / pageSize
        guard !fileBacked.load(ordering: .acquiring) else { return Array(0..<count) }
        let chunkPages = 16384
        var vector = [UInt8](repeating: 0, count: chunkPages)
        var pages: [Int] = []
        var first = 0
        while first < count {
            let span = min(chunkPages, count - first)
            // Safe: the span lies inside the region's mapping; the vector has a byte per page of it.
            let start = UnsafeMutableRawPointer(bitPattern: region.hostAddress)! + first * pageSize
            if vector.withUnsafeMutableBufferPointer({ mincore(start, span * pageSize, $0.baseAddress) }) == 0 {
                for index in 0..<span where vector[index] & 1 != 0 { pages.append(first + index) }
            } else {
                pages.append(contentsOf: first..<(first + span)) // cannot tell: look at every page
            }
            first += span
        }
        return pages
    }

    /// Maps the memory file over guest RAM, private and copy-on-write: pages are read from the
    /// file when the guest first touches them (a lazy restore, milliseconds for any size). The
    /// file must stay unchanged while the VM runs. `fd` may be closed afterwards.
    public func mapMemoryFile(_ fd: Int32) throws(GuestMemoryError) {
        try checkFileSize(fd)
        for (region, fileOffset) in zip(regions, fileOffsets) {
            // Safe: MAP_FIXED replaces exactly our own mapping of this region, same address and size.
            let target = UnsafeMutableRawPointer(bitPattern: region.hostAddress)!
            let mapped = mmap(target, region.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, off_t(fileOffset))
            guard mapped == target else { throw .file("mapping the memory file", errno: errno) }
            if isMergeable { _ = madvise(target, region.size, Self.madviseMergeable) }
        }
        fileBacked.store(true, ordering: .releasing)
    }

    /// Reads the memory file into guest RAM (an eager restore): only the file's data extents
    /// (SEEK_DATA/SEEK_HOLE), so holes stay untouched zero pages. Returns the bytes read.
    public func readMemoryFile(_ fd: Int32) throws(GuestMemoryError) -> UInt64 {
        try checkFileSize(fd)
        var read: UInt64 = 0
        for (region, fileOffset) in zip(regions, fileOffsets) {
            let end = off_t(fileOffset) + off_t(region.size)
            var position = off_t(fileOffset)
            while position < end {
                let data = off_t(chost_seek_data(fd, Int64(position)))
                if data < 0 && errno == ENXIO { break } // no data after this point
                guard data >= 0 else { throw .file("reading the memory file", errno: errno) }
                guard data < end else { break }
                var hole = off_t(chost_seek_hole(fd, Int64(data)))
                if hole < 0 { hole = end }
                let stop = min(hole, end)
                // Safe: [data, stop) lies inside this region's part of the file, so the target
                // span lies inside the region's mapping.
                let target = UnsafeMutableRawPointer(bitPattern: region.hostAddress)! + Int(data - off_t(fileOffset))
                try Self.readAll(fd, target, Int(stop - data), at: UInt64(data))
                read += UInt64(stop - data)
                position = stop
            }
        }
        return read
    }

    private func checkFileSize(_ fd: Int32) throws(GuestMemoryError) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .file("the memory file", errno: errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .file("the memory file is not a regular file", errno: EINVAL) }
        guard info.st_size == off_t(totalSize) else {
            throw .file("the memory file is \(info.st_size) bytes, the snapshot's RAM \(totalSize)", errno: EINVAL)
        }
    }

    /// Whether the 4 KiB-aligned page at `address` holds only zeros (false outside RAM).
    public func pageIsZero(_ address: UInt64) -> Bool {
        guard address % UInt64(pageSize) == 0, let region = region(containing: address, length: pageSize) else { return false }
        // Safe: the page was checked to lie inside the region's mapping.
        return Self.isZero(UnsafeRawPointer(bitPattern: region.hostAddress)! + Int(address - region.guestStart), pageSize)
    }

    private static func isZero(_ page: UnsafeRawPointer, _ size: Int) -> Bool {
        let words = page.assumingMemoryBound(to: UInt64.self)
        var index = 0
        while index < size / 8 {
            if words[index] | words[index + 1] | words[index + 2] | words[index + 3] != 0 { return false }
            index += 4
        }
        return true
    }

    private static func writeAll(_ fd: Int32, _ start: UnsafeRawPointer, _ count: Int, at offset: UInt64) throws(GuestMemoryError) {
        try transferAll(count, "writing the memory file") { done in pwrite(fd, start + done, count - done, off_t(offset) + off_t(done)) }
    }

    private static func readAll(_ fd: Int32, _ start: UnsafeMutableRawPointer, _ count: Int, at offset: UInt64) throws(GuestMemoryError) {
        try transferAll(count, "reading the memory file") { done in pread(fd, start + done, count - done, off_t(offset) + off_t(done)) }
    }

    /// The one loop of both: `call(done)` moves the rest from `done` on, until `count` bytes have
    /// gone (EINTR retried; VMMCore sits below Host's FileDescriptor, which does this for files).
    private static func transferAll(_ count: Int, _ what: String, _ call: (Int) -> Int) throws(GuestMemoryError) {
        var done = 0
        while done < count {
            let result = call(done)
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else { throw .file(what, errno: result < 0 ? errno : EIO) }
            done += result
        }
    }
}
