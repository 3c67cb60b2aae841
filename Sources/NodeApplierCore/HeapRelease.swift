/// Gives the C heap's free pages back to the system after work that allocated a whole tenant's worth
/// of short-lived data: a full sync (25 pages of members decoded, every peer built and diffed against
/// a full read of the interface) or a reading of a large interface.
///
/// Measured on a node holding 50,000 peers right after a full sync: glibc's heap held 150 MB from the
/// system but only 28 MB were in use (`malloc_stats`); the rest was free memory kept in its 16
/// per-thread arenas, and it counted in the node's resident memory until the process ended
/// (docs/benchmarks.md, "Scale").
enum HeapRelease {
    /// Peers from which an interface reading is large enough to release after.
    static let largeReading = 5_000

    /// Returns free heap pages to the system (`malloc_trim`).
    static func now() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }
}

#if os(Linux)
/// glibc's `int malloc_trim(size_t pad)` (declared in `<malloc.h>`, which the Glibc module does not
/// export).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
