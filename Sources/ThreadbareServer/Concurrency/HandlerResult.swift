/// What handler code answers: a response now, or what it waits for before it can answer.
/// Handlers are written once and say what they wait on; the mode's executor decides how to
/// wait. On a handler thread a wait is a blocking call with the lock released, as in a WSGI
/// server; on an event loop it is a timer or another thread, and the loop serves other
/// requests meanwhile, as `await` does in asyncio.
public enum HandlerResult: Sendable {
    public typealias Continuation = @Sendable (HandlerContext) throws(RequestError) -> HandlerResult

    case response(HTTPResponse)
    /// Wait `milliseconds` without computing (a database query, `asyncio.sleep`), then go on
    /// with `then`.
    case waits(milliseconds: Int, then: Continuation)
    /// `loop.run_in_executor`: on an event loop, `work` runs on a pool thread (taking the
    /// domain's lock like any other thread) and the loop is free meanwhile; on a handler
    /// thread it simply runs there.
    case offloads(Continuation)
    /// An operation on the domain's cache, then `then` with its outcome. On a handler thread it
    /// is done in place (with the lock released if it waits on the network); on an event loop
    /// the backend starts it there and the loop serves other requests until it answers.
    case awaitsCache(CacheOperation, then: @Sendable (Result<CacheOutcome, CacheFailure>, HandlerContext) throws(RequestError) -> HandlerResult)
}
