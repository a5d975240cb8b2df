public enum HostControllerModule {}
