/// The version both daemons report (`--version`, the hello, metrics).
public enum TandemVersion {
    public static let string = "0.1.0"
}
