import Foundation
import HashTreeCollections
import MeshDomain
import MeshProto

// `FanoutBench maps [--size 60000]`: Swift's Dictionary against swift-collections' TreeDictionary
// (a persistent hash tree) for what a node's view does with its members: look one up, replace one
// in a map nobody else holds, and replace one in a map that is shared with another view (the first
// change after a copy, which copies a Dictionary whole and a TreeDictionary's path only).

func mapsBench(size: Int) {
    var members: [Mesh_V1_Member] = []
    members.reserveCapacity(size)
    for i in 0..<size {
        var m = Mesh_V1_Member()
        m.id = UUID().uuidString.lowercased()
        m.kind = i % 6 == 0 ? .node : .device
        m.publicKey = "key\(i)"
        m.ipv4 = "100.64.\(i / 256 % 256).\(i % 256)"
        m.ipv6 = "fd00::\(i)"
        m.slug = "device-\(i)"
        members.append(m)
    }
    let ids = members.map(\.id).shuffled()
    var dict: [String: Mesh_V1_Member] = [:]
    var tree: TreeDictionary<String, Mesh_V1_Member> = [:]
    let buildDict = time { for m in members { dict[m.id] = m } }
    let buildTree = time { for m in members { tree[m.id] = m } }
    print(String(format: "maps: %d members; build: Dictionary %.1f ms, TreeDictionary %.1f ms", size, buildDict * 1e3, buildTree * 1e3))

    let lookups = 200_000
    var hits = 0
    let lookDict = time { for i in 0..<lookups where dict[ids[i % ids.count]] != nil { hits += 1 } }
    let lookTree = time { for i in 0..<lookups where tree[ids[i % ids.count]] != nil { hits += 1 } }
    print(String(format: "  lookup: Dictionary %.0f ns, TreeDictionary %.0f ns", lookDict / Double(lookups) * 1e9, lookTree / Double(lookups) * 1e9))

    let updates = 200_000
    let updDict = time {
        for i in 0..<updates {
            let id = ids[i % ids.count]
            var m = dict[id]!
            m.endpoint = "e\(i & 7)"
            dict[id] = m
        }
    }
    let updTree = time {
        for i in 0..<updates {
            let id = ids[i % ids.count]
            var m = tree[id]!
            m.endpoint = "e\(i & 7)"
            tree[id] = m
        }
    }
    print(String(format: "  update (unshared): Dictionary %.0f ns, TreeDictionary %.0f ns", updDict / Double(updates) * 1e9,
                 updTree / Double(updates) * 1e9))

    // The first change to a copy: a Dictionary copies everything, a TreeDictionary one path.
    let copies = 200
    var keepDict: [[String: Mesh_V1_Member]] = []
    var keepTree: [TreeDictionary<String, Mesh_V1_Member>] = []
    let rssBefore = residentKiB()
    let cowDict = time {
        for i in 0..<copies {
            var c = dict
            c[ids[i]] = members[0]
            keepDict.append(c)
        }
    }
    let rssDict = residentKiB()
    keepDict.removeAll()
    let rssMid = residentKiB()
    let cowTree = time {
        for i in 0..<copies {
            var c = tree
            c[ids[i]] = members[0]
            keepTree.append(c)
        }
    }
    let rssTree = residentKiB()
    print(String(format: "  first change to a shared copy: Dictionary %.2f ms (+%d KiB per copy), TreeDictionary %.2f µs (+%d KiB per copy)",
                 cowDict / Double(copies) * 1e3, (rssDict - rssBefore) / copies, cowTree / Double(copies) * 1e6,
                 max(0, rssTree - rssMid) / copies))

    // What a node's view does per change: MemberTable (members, hub index, key index).
    var table = MemberTable(members)
    let shared = table
    let tableUpd = time {
        for i in 0..<updates {
            var m = table[ids[i % ids.count]]!
            m.endpoint = "e\(i & 7)"
            table.put(m)
        }
    }
    print(String(format: "  MemberTable.put (three maps): %.0f ns per change", tableUpd / Double(updates) * 1e9))
    _ = (hits, shared.count, keepTree.count)
}

func time(_ body: () -> Void) -> Double {
    let start = ContinuousClock.now
    body()
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// VmRSS of this process, KiB.
func residentKiB(pid: Int32? = nil) -> Int {
    let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
    guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}
