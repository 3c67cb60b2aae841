#if os(Linux)
import Glibc
#endif

/// Keeps the node's C heap close to what it uses. A full sync at 50,000 peers allocates a whole
/// tenant's worth of short-lived data (25 pages of members decoded, every peer built and diffed
/// against a 17 MB reading of the interface) on whichever threads run it.
///
/// Measured on a node holding 50,000 peers right after a full sync: glibc's heap held 150 MB from the
/// system but only 28 MB were in use (`malloc_stats`); the rest was free memory kept in its 16
/// per-thread arenas (8 per core), and it counted in the node's resident memory until the process
/// ended. Returning free pages after large work (``now()``) took the node to 154–177 MiB after a
/// restart's sync; capping the arenas at two (``limitArenas()``) as well took it to 124–146 MiB
/// (single readings; docs/benchmarks.md, "Scale").
public enum HeapRelease {
    /// Peers from which an interface reading is large enough to release after.
    static let largeReading = 5_000

    /// The arenas the node's heap uses unless `MALLOC_ARENA_MAX` says otherwise: few threads
    /// allocate at once in a node (one agent queue, the bus, the reporter), so more arenas only keep
    /// more free memory apart.
    static let arenas: Int32 = 2

    /// Caps glibc's malloc arenas at ``arenas``, unless the environment sets `MALLOC_ARENA_MAX` (glibc
    /// reads it itself). NodeApplier calls it first thing in `run()`, before its services start: glibc
    /// fixes its limit when the ninth arena would be made, so it must be set before many threads
    /// have allocated.
    public static func limitArenas() {
        #if os(Linux)
        guard getenv("MALLOC_ARENA_MAX") == nil else { return }
        _ = glibcMallopt(glibcArenaMax, arenas)
        #endif
    }

    /// Returns free heap pages to the system (`malloc_trim`).
    static func now() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }
}

#if os(Linux)
/// glibc's `int malloc_trim(size_t pad)` and `int mallopt(int param, int value)` (declared in
/// `<malloc.h>`, which the Glibc module does not export).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
@_silgen_name("mallopt")
private func glibcMallopt(_ param: Int32, _ value: Int32) -> Int32
/// `M_ARENA_MAX` in `<malloc.h>`.
private let glibcArenaMax: Int32 = -8
#endif
