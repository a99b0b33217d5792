import CLibevent

/// Stands between a connection's socket and evhttp's lenient parser, on the connection's input
/// buffer: evhttp sees a request's head only once the whole head is in and `RequestFraming` has
/// passed it, and a chunked body only as far as `ChunkedBodyReader` has passed it.
///
/// A callback on the input buffer sees every byte as it is read, before evhttp's read callback
/// runs. While a head is incomplete its bytes are kept aside, so evhttp never starts on a head
/// that might yet be refused. A refused message is cut out with everything after it, and a
/// stand-in that evhttp parses cleanly takes its place: a bare `GET /` for a refused head, the
/// last chunk for a refused chunked body. The loop refuses that request (`refusalOfNextRequest`)
/// with the real reason, and closes the connection, whose framing can no longer be trusted.
/// Requests before it on the connection are answered first, in order, as they would have been.
///
/// Loop-confined, like the connection.
final class FramingGuard {
    private let input: OpaquePointer
    private var watch: OpaquePointer?
    /// A partial head's bytes while the rest is awaited, and scratch space for moving bytes.
    private let aside: OpaquePointer
    private let scratch: OpaquePointer
    /// `limits.max_header_bytes`, counted as sent.
    private let mostHeadBytes: Int

    private enum Expecting {
        case head
        case body(remaining: Int)
        case chunked(ChunkedBodyReader)
        case refused
    }

    private var expecting = Expecting.head
    /// The head so far, and where its current line began.
    private var head: [UInt8] = []
    private var lineStart = 0
    private var sawRequestLine = false
    /// Heads evhttp has been given, a refused message's stand-in included; and requests evhttp
    /// has handed to the loop.
    private var headsPassed = 0
    private var requestsSeen = 0
    private var refused: (request: Int, violation: RequestFraming.Violation)?
    /// Set while this guard moves bytes itself, whose callbacks it ignores.
    private var rearranging = false

    /// The head evhttp reads in place of a refused one.
    private static let standInHead = Array("GET / HTTP/1.1\r\nHost: refused\r\n\r\n".utf8)

    init?(connection: OpaquePointer, mostHeadBytes: Int) {
        guard let input = bufferevent_get_input(evhttp_connection_get_bufferevent(connection)),
              let aside = evbuffer_new() else { return nil }
        guard let scratch = evbuffer_new() else {
            evbuffer_free(aside)
            return nil
        }
        self.input = input
        self.aside = aside
        self.scratch = scratch
        self.mostHeadBytes = mostHeadBytes
        watch = evbuffer_add_cb(input, { _, info, arg in
            guard let info, info.pointee.n_added > 0 else { return }
            Unmanaged<FramingGuard>.fromOpaque(arg!).takeUnretainedValue().arrived(info.pointee.n_added)
        }, Unmanaged.passUnretained(self).toOpaque())
        guard watch != nil else { return nil }
    }

    deinit {
        cancel()
        evbuffer_free(aside)
        evbuffer_free(scratch)
    }

    /// From the loop, for each request evhttp hands over: the reason to refuse it, if it is the
    /// stand-in for a refused message.
    func refusalOfNextRequest() -> RequestFraming.Violation? {
        requestsSeen += 1
        guard let refused, refused.request == requestsSeen else { return nil }
        return refused.violation
    }

    /// Stops watching, from the connection's close callback, while its input buffer still exists.
    func cancel() {
        if let watch { evbuffer_remove_cb_entry(input, watch) }
        watch = nil
    }

    /// The connection went without its close being heard, and its input buffer (and the watch
    /// it owned) with it.
    func abandon() {
        watch = nil
    }

    // MARK: The bytes as they arrive

    private func arrived(_ count: Int) {
        guard !rearranging else { return }
        rearranging = true
        defer { rearranging = false }
        var length = evbuffer_get_length(input)
        var position = length - count
        // Where the message being read began, while its head is not yet passed on.
        var messageStart = position
        let setAside = evbuffer_get_length(aside)
        if setAside > 0 {
            // The head's earlier bytes go back in front of the new ones.
            pastFirst(position) { evbuffer_prepend_buffer(input, aside) }
            position += setAside
            length += setAside
        }
        var cut: (at: Int, standIn: [UInt8])?
        /// Chunk extensions to take out, in buffer offsets, in order.
        var dropped: [Range<Int>] = []
        walk: while position < length {
            switch expecting {
            case .head:
                guard let headEnd = readHead(from: position, to: length) else {
                    position = length
                    break walk
                }
                position = headEnd
                headsPassed += 1
                let judged = head.count > mostHeadBytes
                    ? .failure(RequestFraming.Violation(400, .headTooLarge, "the request head is over \(mostHeadBytes) bytes (limits.max_header_bytes)"))
                    : head.withUnsafeBytes { RequestFraming.judge($0) }
                switch judged {
                case .success(let judged):
                    switch judged.body {
                    case .length(let bytes): expecting = bytes > 0 ? .body(remaining: bytes) : .head
                    case .chunked: expecting = .chunked(ChunkedBodyReader())
                    }
                    startHead()
                    messageStart = position
                case .failure(let violation):
                    refused = (headsPassed, violation)
                    cut = (messageStart, Self.standInHead)
                    expecting = .refused
                    break walk
                }
            case .body(let remaining):
                let taken = min(remaining, length - position)
                position += taken
                expecting = taken == remaining ? .head : .body(remaining: remaining - taken)
                messageStart = position
            case .chunked(var reader):
                let start = position, readBefore = reader.consumed
                let progress = readChunks(&reader, from: position, to: length)
                dropped += reader.extensions.map { (start + ($0.lowerBound - readBefore))..<(start + ($0.upperBound - readBefore)) }
                reader.extensions.removeAll()
                switch progress {
                case .needsMore:
                    position = length
                    expecting = .chunked(reader)
                case .ended(let consumed):
                    position += consumed
                    expecting = .head
                    messageStart = position
                case .refused(let violation):
                    refused = (headsPassed, violation)
                    // Everything before the broken line or byte is a valid part of the body.
                    let from = max(0, start + (reader.refusedFrom - readBefore))
                    cut = (from, Array((reader.inTrailers ? "\r\n" : "\r\n0\r\n\r\n").utf8))
                    expecting = .refused
                    break walk
                }
            case .refused:
                cut = (position, [])
                break walk
            }
        }
        if let cut {
            pastFirst(cut.at) {
                evbuffer_drain(input, evbuffer_get_length(input))
                evbuffer_add(input, cut.standIn, cut.standIn.count)
            }
        }
        // From the last, so that the offsets of those before stay true. All of them lie before
        // the cut and before the message being read.
        for span in dropped.reversed() {
            pastFirst(span.lowerBound) { evbuffer_drain(input, span.count) }
        }
        if cut == nil, case .head = expecting, messageStart < length {
            // An incomplete head waits aside, where evhttp cannot start on it.
            pastFirst(messageStart - dropped.reduce(0) { $0 + $1.count }) { evbuffer_add_buffer(aside, input) }
        }
    }

    /// Runs `body` on the input past its first `count` bytes, which wait in `scratch`
    /// meanwhile and go back in front afterwards. Whole chains are moved, not copied.
    private func pastFirst(_ count: Int, _ body: () -> Void) {
        evbuffer_remove_buffer(input, scratch, count)
        body()
        evbuffer_prepend_buffer(input, scratch)
    }

    private func startHead() {
        head.removeAll(keepingCapacity: true)
        lineStart = 0
        sawRequestLine = false
    }

    /// Adds the buffer's bytes from `from` to the head until its empty line: where the head
    /// ends in the buffer, or nil if it has not yet. A head over the limit ends where the limit
    /// is passed, to be refused.
    private func readHead(from: Int, to end: Int) -> Int? {
        var found: Int?
        forEachSegment(from: from, to: end) { segment, offset in
            var index = 0
            while index < segment.count {
                // A line at a time, or what there is of one.
                let lineFeed = segment[index...].firstIndex(of: ASCII.lineFeed)
                let next = min(lineFeed.map { $0 + 1 } ?? segment.count, index + mostHeadBytes + 1 - head.count)
                head.append(contentsOf: segment[index..<next])
                index = next
                if head.count > mostHeadBytes {
                    found = offset + index
                    return false
                }
                guard let lineFeed, lineFeed == next - 1 else { continue }
                var lineEnd = head.count - 1
                if lineEnd > lineStart, head[lineEnd - 1] == ASCII.carriageReturn { lineEnd -= 1 }
                let empty = lineEnd == lineStart
                lineStart = head.count
                if !empty {
                    sawRequestLine = true
                } else if sawRequestLine {
                    found = offset + index
                    return false
                }
            }
            return true
        }
        return found
    }

    private func readChunks(_ reader: inout ChunkedBodyReader, from: Int, to end: Int) -> ChunkedBodyReader.Progress {
        var progress = ChunkedBodyReader.Progress.needsMore
        var read = 0
        forEachSegment(from: from, to: end) { segment, _ in
            progress = reader.consume(segment)
            switch progress {
            case .needsMore:
                read += segment.count
                return true
            case .ended(let consumed):
                progress = .ended(consumed: read + consumed)
                return false
            case .refused:
                return false
            }
        }
        return progress
    }

    /// The buffer's bytes from `from` to `end`, a contiguous piece at a time, with each piece's
    /// offset in the buffer; `body` returns false to stop.
    private func forEachSegment(from: Int, to end: Int, _ body: (UnsafeRawBufferPointer, Int) -> Bool) {
        var start = evbuffer_ptr()
        guard from < end, evbuffer_ptr_set(input, &start, from, EVBUFFER_PTR_SET) == 0 else { return }
        let pieces = Int(evbuffer_peek(input, end - from, &start, nil, 0))
        guard pieces > 0 else { return }
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: pieces) { vectors in
            let filled = Int(evbuffer_peek(input, end - from, &start, vectors.baseAddress, Int32(pieces)))
            var offset = from
            for vector in vectors.prefix(min(filled, pieces)) {
                let length = min(vector.iov_len, end - offset)
                guard length > 0 else { return }
                guard body(UnsafeRawBufferPointer(start: vector.iov_base, count: length), offset) else { return }
                offset += length
            }
        }
    }
}
