/// Every endpoint Threadbare serves, in the order `GET /` lists them.
enum Endpoints {
    static let all: [Route] = [
        IntrospectionEndpoints.index,
        IntrospectionEndpoints.health,
        WorkEndpoints.io,
        WorkEndpoints.cpu,
        CacheEndpoints.statistics,
        CacheEndpoints.entry,
        IntrospectionEndpoints.stats,
        IntrospectionEndpoints.metrics,
    ]
}
