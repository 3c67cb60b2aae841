import Foundation
import Hummingbird
import Logging
import MeshDomain
import MeshProto
import NIOCore

/// `GET /api/mesh/events`: the device list pushed to the page as Server-Sent Events.
///
/// - `devices`: the page of the device list the stream was opened for (the query of
///   `GET /api/mesh/devices`: `cursor`, `limit`, `owner`, `status`, `type`; the same JSON, with
///   `next_cursor`), first on every (re)connect and again after every change of it: devices added,
///   changed, removed, and a device passing out of its online window. Another page or other filters
///   open another stream.
/// - `device`: one listed device whose status (last handshake, online, endpoint) changed.
/// - `mesh`: the tenant's mesh changed (`revision`): node state may have changed too.
/// - a comment line every tick, so proxies and the client see the channel alive.
///
/// The stream registers with the feed before its first list read, so nothing committed after that
/// read began can be missed; a reconnect always starts with a fresh list. Every list read goes
/// through ProvisionSvc with the caller's credentials, like `GET /api/mesh/devices`: a status event
/// reaches a stream only for a device its last list held, and a refused credential ends the stream.
/// A stream ends after ``GatewayConfiguration/liveMaxDuration`` (the page reconnects at once), so
/// a session or token is checked again at least that often.
extension GatewayAPI {
    func liveEvents(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let query = try Self.deviceListRequest(request, caller: caller)
        let inbox = live.register(tenant: caller.tenantID.lowercased())
        let first: Mesh_V1_ListDevicesResponse
        do {
            first = try await provision.listDevices(query)
        } catch {
            live.unregister(inbox)
            throw error
        }
        let provision = self.provision, live = self.live, logger = context.logger
        let tick = configuration.liveTick, maxDuration = configuration.liveMaxDuration
        let headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store",
                                   HTTPHeaderName("X-Accel-Buffering")!: "no"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { live.unregister(inbox) }
            var stream = LiveStream(page: first)
            // The retry hint is for EventSource clients; the page reconnects by itself.
            var out = ByteBuffer(string: "retry: \(Int(tick.seconds * 1000))\n\n")
            stream.appendList(to: &out)
            try await writer.write(out)
            let opened = ContinuousClock.now
            var listPending = false
            for await _ in inbox.signal {
                let work = inbox.take()
                if work.closed { break }
                var out = ByteBuffer()
                let now = Date().unixMilliseconds
                if work.meshChanged || work.resync || listPending || (work.tick && stream.offlineDue(nowMs: now)) {
                    do throws(MeshError) {
                        let list = try await provision.listDevices(query)
                        listPending = false
                        if stream.replace(list) { stream.appendList(to: &out) }
                    } catch where error.code == .unauthenticated || error.code == .permissionDenied || error.code == .notFound {
                        let refused = APIError.from(error)
                        LiveStream.append(event: "ended", json: LiveEndedJSON(status: Int(refused.status.code), code: refused.code,
                                                                              message: refused.message), to: &out)
                        try await writer.write(out)
                        break
                    } catch {
                        // Tried again at the next tick; the status events keep flowing meanwhile.
                        listPending = true
                        logger.warning("live stream: device list read failed", metadata: ["error": "\(error)"])
                    }
                }
                if work.meshChanged { LiveStream.append(event: "mesh", json: LiveMeshJSON(revision: work.revision), to: &out) }
                for d in work.status.values.sorted(by: { $0.id < $1.id }) {
                    if let shown = stream.update(d) { LiveStream.append(event: "device", json: DeviceJSON(shown), to: &out) }
                }
                if work.tick {
                    if ContinuousClock.now - opened >= maxDuration { break }
                    if out.readableBytes == 0 { out.writeString(": alive\n\n") }
                }
                if out.readableBytes > 0 { try await writer.write(out) }
            }
            try await writer.finish(nil)
        })
    }
}

/// What one live stream has sent: its page of the caller's devices in list order, as last sent.
struct LiveStream {
    private(set) var devices: [Mesh_V1_Device]
    private(set) var nextCursor: String
    private(set) var perPeerStats: Bool

    init(page: Mesh_V1_ListDevicesResponse) {
        devices = page.devices
        nextCursor = page.nextCursor
        perPeerStats = page.perPeerStats
    }

    /// Takes a fresh page; true when it differs from what was sent.
    mutating func replace(_ page: Mesh_V1_ListDevicesResponse) -> Bool {
        guard page.devices != devices || page.nextCursor != nextCursor || page.perPeerStats != perPeerStats else { return false }
        devices = page.devices
        nextCursor = page.nextCursor
        perPeerStats = page.perPeerStats
        return true
    }

    /// Takes a status change of a listed device; the device to send, or nil. Visibility (the owner)
    /// always comes from the list, never from an event. An event with the handshake the list already
    /// shows adds only its endpoint: the list read last is at least as new as the event.
    /// The event is shown as the list shows it: without endpoint and traffic when the tenant's plan
    /// has no per-peer stats (the list's `per_peer_stats`), with the owner's name the list gave.
    mutating func update(_ event: Mesh_V1_Device) -> Mesh_V1_Device? {
        guard let i = devices.firstIndex(where: { $0.id == event.id }) else { return nil }
        let held = devices[i]
        var d = event
        d.perPeerStats = perPeerStats
        if !perPeerStats {
            d.endpoint = ""
            d.rxBytes = 0
            d.txBytes = 0
        }
        if d.ownerName.isEmpty { d.ownerName = held.ownerName }
        guard d.ownerUserID == held.ownerUserID, d.lastHandshakeAtMs >= held.lastHandshakeAtMs else { return nil }
        var shown = d
        if d.lastHandshakeAtMs == held.lastHandshakeAtMs {
            guard d.endpoint != held.endpoint else { return nil }
            shown = held
            shown.endpoint = d.endpoint
        }
        devices[i] = shown
        return shown
    }

    /// Whether a device shown online has passed the end of its online window (ProvisionSvc's
    /// `online_until_ms`): time to read the list again.
    func offlineDue(nowMs: Int64) -> Bool {
        devices.contains { $0.online && $0.onlineUntilMs > 0 && $0.onlineUntilMs <= nowMs }
    }

    func appendList(to out: inout ByteBuffer) {
        Self.append(event: "devices", json: DeviceListJSON(devices: devices.map(DeviceJSON.init), nextCursor: nextCursor.nilIfEmpty,
                                                           perPeerStats: perPeerStats), to: &out)
    }

    /// One event: `event:` and a single `data:` line (the JSON has no raw line breaks).
    static func append(event: String, json: some JSONEncodable, to out: inout ByteBuffer) {
        var w = JSONWriter()
        json.encode(to: &w)
        out.writeString("event: \(event)\ndata: ")
        out.writeBytes(w.bytes)
        out.writeString("\n\n")
    }
}

/// The `mesh` event: the tenant's mesh revision after a change.
struct LiveMeshJSON: JSONEncodable {
    var revision: UInt64

    func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("revision"); w.uint(revision)
        }
    }
}

/// The `ended` event: the stream's credential was refused; the page signs out.
struct LiveEndedJSON: JSONEncodable {
    var status: Int
    var code: String
    var message: String

    func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("status"); w.int(status)
            w.key("error")
            w.object { w in
                w.key("code"); w.string(code)
                w.key("message"); w.string(message)
            }
        }
    }
}
