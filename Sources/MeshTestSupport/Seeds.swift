import Foundation

/// SplitMix64: small, fast and seedable, so that a randomised test can be replayed from its seed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The seeds of randomised tests. Each run draws a fresh base seed, unless `MESH_TEST_SEED` gives
/// one; a test derives its own seeds from the base and a name, prints them, and puts them in every
/// failure message, so that a failure is replayed with `MESH_TEST_SEED=<base> swift test --filter <test>`.
public enum TestSeed {
    /// This run's base seed (`MESH_TEST_SEED`, decimal, or a random one), printed once.
    public static let base: UInt64 = {
        let seed: UInt64
        if let text = ProcessInfo.processInfo.environment["MESH_TEST_SEED"], let s = UInt64(text) {
            seed = s
        } else {
            seed = UInt64.random(in: 0...UInt64.max)
        }
        print("test seed: \(seed) (replay a randomised test with MESH_TEST_SEED=\(seed))")
        return seed
    }()

    /// The seed of one randomised test (or of one case of it): the base mixed with `name`, stable
    /// across runs for a given base.
    public static func seed(_ name: String) -> UInt64 {
        // FNV-1a of the name, mixed into the base.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        var g = SeededRandom(seed: base ^ h)
        return g.next()
    }

    /// How to replay a failure of the test that used `seed`.
    public static func replay(_ seed: UInt64) -> String { "seed \(seed); replay with MESH_TEST_SEED=\(base)" }

    /// A generator for `name`, after printing its seed.
    public static func generator(_ name: String) -> (seed: UInt64, rng: SeededRandom) {
        let s = seed(name)
        print("test seed: \(name) uses \(s) (base \(base))")
        return (s, SeededRandom(seed: s))
    }
}
