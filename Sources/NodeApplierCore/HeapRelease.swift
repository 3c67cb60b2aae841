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
/// restart's sync; capping the arenas at two as well took it to 124–146 MiB; one arena and a fixed
/// mmap threshold (``limitArenas()``) to 117–136 MiB (docs/benchmarks.md, "Scale").
public enum HeapRelease {
    /// Peers from which an interface reading is large enough to release after.
    static let largeReading = 5_000

    /// The arenas the node's heap uses unless the environment says otherwise: few threads allocate
    /// at once in a node (one agent queue, the bus, the reporter), and every further arena keeps
    /// its own free memory apart. With the fixed ``mmapThreshold`` it left 117–136 MiB after a
    /// restart's sync at 50,000 peers, where two arenas and glibc's moving threshold left up to 144
    /// (docs/benchmarks.md, "Scale").
    static let arenas: Int32 = 1

    /// The size from which a block is its own memory map, given back to the system when freed.
    /// glibc starts at 128 KiB and raises its threshold to the size of each mapped block freed (up
    /// to 32 MiB), so after the first large reading every later one (the activity arrays, the
    /// last-seen map, the sync's pages) landed in the heap and stayed there until the next trim.
    /// Setting it fixes it.
    static let mmapThreshold: Int32 = 256 * 1024

    /// Caps glibc's malloc arenas at ``arenas`` and fixes the mmap threshold at ``mmapThreshold``,
    /// each unless the environment sets it (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` or
    /// `GLIBC_TUNABLES`, which glibc reads itself). NodeApplier calls it first thing in `run()`,
    /// before its services start: glibc fixes its arena limit when the ninth arena would be made,
    /// so it must be set before many threads have allocated.
    public static func limitArenas() {
        #if os(Linux)
        let tunables = getenv("GLIBC_TUNABLES").map { String(cString: $0) } ?? ""
        if getenv("MALLOC_ARENA_MAX") == nil && !tunables.contains("glibc.malloc.arena_max") {
            _ = glibcMallopt(glibcArenaMax, arenas)
        }
        if getenv("MALLOC_MMAP_THRESHOLD_") == nil && !tunables.contains("glibc.malloc.mmap_threshold") {
            _ = glibcMallopt(glibcMmapThreshold, mmapThreshold)
        }
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
/// `M_ARENA_MAX` and `M_MMAP_THRESHOLD` in `<malloc.h>`.
private let glibcArenaMax: Int32 = -8
private let glibcMmapThreshold: Int32 = -3
#endif
