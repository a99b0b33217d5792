import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// A plain POSIX thread running one closure.
///
/// Loops and handlers need real, long-lived OS threads (a handler blocks in `nanosleep`, a loop
/// blocks in `epoll_wait`), not tasks on Swift's cooperative pool, which must never block.
final class OSThread: @unchecked Sendable {
    private var handle: pthread_t

    private final class Start {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread named `name` (shown by `top -H` and in debuggers; Linux
    /// keeps the first 15 bytes).
    init(name: String, _ body: @escaping @Sendable () -> Void) throws {
        let start = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            pthread_setname_np(pthread_self(), String(start.name.prefix(15)))
            start.body()
            return nil
        }, start)
        guard rc == 0 else {
            Unmanaged<Start>.fromOpaque(start).release()
            throw SocketError(description: "cannot start thread \(name): \(String(cString: strerror(rc)))")
        }
        handle = thread
    }

    func join() {
        pthread_join(handle, nil)
    }
}
