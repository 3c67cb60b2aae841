/// X25519 (RFC 7748) scalar multiplication by the base point, only to derive a device's public key
/// from its private key. The UAPI `get` reply carries the private key but not the public one, and the
/// kernel reply carries both, so without this the two backends would disagree on the same device.
///
/// Field elements are five 51-bit limbs; products go through `UInt128`. The ladder swaps with masks
/// rather than branches, since the scalar is a private key.
public enum Curve25519 {
    /// The public key for a private key, as `wg pubkey` computes it.
    public static func publicKey(forPrivateKey privateKey: WireGuardKey) -> WireGuardKey {
        var scalar = privateKey.bytes
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        var u = [UInt8](repeating: 0, count: 32)
        u[0] = 9
        let out = ladder(scalar: scalar, u: Fe(bytes: u)).bytes
        return WireGuardKey(bytes: out)!
    }

    struct Fe {
        var l0: UInt64, l1: UInt64, l2: UInt64, l3: UInt64, l4: UInt64

        static let mask: UInt64 = (1 << 51) - 1
        static let zero = Fe(l0: 0, l1: 0, l2: 0, l3: 0, l4: 0)
        static let one = Fe(l0: 1, l1: 0, l2: 0, l3: 0, l4: 0)

        init(l0: UInt64, l1: UInt64, l2: UInt64, l3: UInt64, l4: UInt64) {
            self.l0 = l0
            self.l1 = l1
            self.l2 = l2
            self.l3 = l3
            self.l4 = l4
        }

        init(bytes b: [UInt8]) {
            func load(_ i: Int) -> UInt64 {
                var v: UInt64 = 0
                for j in 0..<8 where i + j < 32 { v |= UInt64(b[i + j]) << (8 * UInt64(j)) }
                return v
            }
            l0 = load(0) & Fe.mask
            l1 = (load(6) >> 3) & Fe.mask
            l2 = (load(12) >> 6) & Fe.mask
            l3 = (load(19) >> 1) & Fe.mask
            l4 = (load(24) >> 12) & Fe.mask
        }

        /// Propagates carries so every limb is below 2^51 (plus a tiny excess in l0).
        func carried() -> Fe {
            var r = self
            var c = r.l0 >> 51; r.l0 &= Fe.mask; r.l1 += c
            c = r.l1 >> 51; r.l1 &= Fe.mask; r.l2 += c
            c = r.l2 >> 51; r.l2 &= Fe.mask; r.l3 += c
            c = r.l3 >> 51; r.l3 &= Fe.mask; r.l4 += c
            c = r.l4 >> 51; r.l4 &= Fe.mask; r.l0 += c * 19
            c = r.l0 >> 51; r.l0 &= Fe.mask; r.l1 += c
            return r
        }

        static func + (a: Fe, b: Fe) -> Fe {
            Fe(l0: a.l0 + b.l0, l1: a.l1 + b.l1, l2: a.l2 + b.l2, l3: a.l3 + b.l3, l4: a.l4 + b.l4).carried()
        }

        /// a - b computed as a + 4p - b so no limb underflows.
        static func - (a: Fe, b: Fe) -> Fe {
            Fe(l0: a.l0 + 0x1F_FFFF_FFFF_FFB4 - b.l0, l1: a.l1 + 0x1F_FFFF_FFFF_FFFC - b.l1,
               l2: a.l2 + 0x1F_FFFF_FFFF_FFFC - b.l2, l3: a.l3 + 0x1F_FFFF_FFFF_FFFC - b.l3,
               l4: a.l4 + 0x1F_FFFF_FFFF_FFFC - b.l4).carried()
        }

        static func * (a: Fe, b: Fe) -> Fe {
            @inline(__always) func m(_ x: UInt64, _ y: UInt64) -> UInt128 { UInt128(x) * UInt128(y) }
            let b1 = b.l1 * 19, b2 = b.l2 * 19, b3 = b.l3 * 19, b4 = b.l4 * 19
            var r0 = m(a.l0, b.l0) + m(a.l1, b4) + m(a.l2, b3) + m(a.l3, b2) + m(a.l4, b1)
            var r1 = m(a.l0, b.l1) + m(a.l1, b.l0) + m(a.l2, b4) + m(a.l3, b3) + m(a.l4, b2)
            var r2 = m(a.l0, b.l2) + m(a.l1, b.l1) + m(a.l2, b.l0) + m(a.l3, b4) + m(a.l4, b3)
            var r3 = m(a.l0, b.l3) + m(a.l1, b.l2) + m(a.l2, b.l1) + m(a.l3, b.l0) + m(a.l4, b4)
            var r4 = m(a.l0, b.l4) + m(a.l1, b.l3) + m(a.l2, b.l2) + m(a.l3, b.l1) + m(a.l4, b.l0)
            let mask = UInt128(Fe.mask)
            r1 += r0 >> 51; r0 &= mask
            r2 += r1 >> 51; r1 &= mask
            r3 += r2 >> 51; r2 &= mask
            r4 += r3 >> 51; r3 &= mask
            let top = r4 >> 51; r4 &= mask
            r0 += top * 19
            return Fe(l0: UInt64(r0), l1: UInt64(r1), l2: UInt64(r2), l3: UInt64(r3), l4: UInt64(r4)).carried()
        }

        func squared() -> Fe { self * self }

        /// self^(p-2), the inverse, by square-and-multiply over the bits of p - 2 = 2^255 - 21.
        func inverted() -> Fe {
            var result = Fe.one
            // Bits of 2^255 - 21 from the top: bit 254 down to bit 0.
            for bit in stride(from: 254, through: 0, by: -1) {
                result = result.squared()
                // 2^255 - 21 = 0x7fff...ffeb: every bit set except bits 2 and 4.
                if bit != 2 && bit != 4 { result = result * self }
            }
            return result
        }

        /// The canonical 32-byte little-endian encoding (fully reduced mod p).
        var bytes: [UInt8] {
            var h = carried().carried()
            // h < 2^255 + small; subtract p once if h >= p, i.e. if h + 19 reaches 2^255.
            var g = h
            g.l0 += 19
            var c = g.l0 >> 51; g.l0 &= Fe.mask; g.l1 += c
            c = g.l1 >> 51; g.l1 &= Fe.mask; g.l2 += c
            c = g.l2 >> 51; g.l2 &= Fe.mask; g.l3 += c
            c = g.l3 >> 51; g.l3 &= Fe.mask; g.l4 += c
            if g.l4 >> 51 != 0 {
                g.l4 &= Fe.mask
                h = g
            }
            var out = [UInt8](repeating: 0, count: 32)
            let limbs = [h.l0, h.l1, h.l2, h.l3, h.l4]
            for bit in 0..<255 {
                let limb = limbs[bit / 51]
                if limb >> UInt64(bit % 51) & 1 == 1 { out[bit / 8] |= 1 << UInt8(bit % 8) }
            }
            return out
        }
    }

    static func cswap(_ swap: UInt64, _ a: inout Fe, _ b: inout Fe) {
        let m = 0 &- swap
        var t = m & (a.l0 ^ b.l0); a.l0 ^= t; b.l0 ^= t
        t = m & (a.l1 ^ b.l1); a.l1 ^= t; b.l1 ^= t
        t = m & (a.l2 ^ b.l2); a.l2 ^= t; b.l2 ^= t
        t = m & (a.l3 ^ b.l3); a.l3 ^= t; b.l3 ^= t
        t = m & (a.l4 ^ b.l4); a.l4 ^= t; b.l4 ^= t
    }

    /// The Montgomery ladder of RFC 7748 section 5.
    static func ladder(scalar k: [UInt8], u: Fe) -> Fe {
        let a24 = Fe(l0: 121_665, l1: 0, l2: 0, l3: 0, l4: 0)
        let x1 = u
        var x2 = Fe.one, z2 = Fe.zero, x3 = u, z3 = Fe.one
        var swap: UInt64 = 0
        for t in stride(from: 254, through: 0, by: -1) {
            let kt = UInt64(k[t / 8] >> UInt8(t % 8) & 1)
            swap ^= kt
            cswap(swap, &x2, &x3)
            cswap(swap, &z2, &z3)
            swap = kt
            let a = x2 + z2, aa = a.squared(), b = x2 - z2, bb = b.squared(), e = aa - bb
            let c = x3 + z3, d = x3 - z3, da = d * a, cb = c * b
            x3 = (da + cb).squared()
            z3 = x1 * (da - cb).squared()
            x2 = aa * bb
            z2 = e * (aa + a24 * e)
        }
        cswap(swap, &x2, &x3)
        cswap(swap, &z2, &z3)
        return x2 * z2.inverted()
    }
}
