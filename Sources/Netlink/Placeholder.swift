public enum NetlinkPlaceholder {}
