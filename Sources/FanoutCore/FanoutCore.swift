/// Placeholder; filled in by its issue.
public enum FanoutCoreModule {}
