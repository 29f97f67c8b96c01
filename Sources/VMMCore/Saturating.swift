/// Arithmetic on values a guest, an image, a client or a config controls: it never traps.
extension UInt64 {
    /// `self - other`, or 0 when `other` is larger (two clock readings taken on different
    /// threads may arrive out of order).
    @inline(__always)
    public func saturatingSubtract(_ other: UInt64) -> UInt64 { self >= other ? self - other : 0 }

    /// `self + other`, or UInt64.max when the sum does not fit.
    @inline(__always)
    public func saturatingAdd(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }

    /// `self * other`, or UInt64.max when the product does not fit.
    @inline(__always)
    public func saturatingMultiply(_ other: UInt64) -> UInt64 {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? .max : product
    }

    /// The nearest value to `value` that fits: 0 for NaN and negatives, UInt64.max past it.
    public init(saturating value: Double) {
        if !(value > 0) { self = 0 } else if value >= 18_446_744_073_709_551_616.0 { self = .max } else { self = UInt64(value) }
    }
}
