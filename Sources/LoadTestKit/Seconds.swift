/// "10s", "500ms", "2m", "1h", or plain seconds; at most 30 days, and 0 or at least 1 ms.
public enum Seconds {
    public static let longest = 30 * 24 * 3600.0

    public static func parse(_ text: String) -> Double? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var seconds: Double?
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            seconds = Double(text.dropLast(suffix.count)).map { $0 * scale }
            break
        }
        guard let value = seconds ?? Double(text), value.isFinite, value == 0 || (0.001...longest).contains(value) else { return nil }
        return value
    }
}
