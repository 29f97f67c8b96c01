import VMMCore
/// A flat binary: the file's bytes placed at one address, entered at that address.
public enum FlatBinary {
    /// `room` is how many bytes of RAM lie from `address` on; larger images are rejected.
    public static func load(_ bytes: [UInt8], at address: UInt64, room: UInt64) throws(LoaderError) -> LoadedImage {
        guard !bytes.isEmpty else { throw .empty }
        guard UInt64(bytes.count) <= room else { throw .tooLarge(size: bytes.count, room: room) }
        let segment = ImageSegment(address: address, bytes: bytes[...], memorySize: UInt64(bytes.count))
        return LoadedImage(format: .flat, segments: [segment], entry: address)
    }
}
