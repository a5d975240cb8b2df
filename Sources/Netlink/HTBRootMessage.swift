import CNetlink

/// The RTM_NEWQDISC body for an HTB root that drops what it cannot classify: `tc qdisc
/// replace dev IF root handle H: htb default D direct_qlen 0`. Built in Swift because
/// libnl 3.7 has no setter for TCA_HTB_DIRECT_QLEN.
///
/// HTB sends a packet that matches no class, and one whose default class is gone, to its
/// direct queue, which no rate limits; with a direct queue of 0 packets such a packet is
/// dropped instead (sch_htb.c, htb_enqueue). A limit class deleted behind Tandem's back
/// then stops the VM's traffic until it is put back, instead of letting it all through.
public enum HTBRootMessage {
    /// `struct tcmsg` then TCA_KIND "htb" and TCA_OPTIONS { TCA_HTB_INIT (struct
    /// tc_htb_glob: version 3, rate2quantum 10, defcls, debug 0, direct_pkts 0),
    /// TCA_HTB_DIRECT_QLEN }.
    public static func body(ifindex: Int32, handle: TCHandle, defaultClass: UInt16, directQueue: UInt32) -> [UInt8] {
        var b: [UInt8] = []
        b.append(UInt8(AF_UNSPEC)); b.append(0); b.appendLE(UInt16(0))
        b.appendLE(ifindex); b.appendLE(handle.rawValue); b.appendLE(TCHandle.root.rawValue); b.appendLE(UInt32(0))
        var a = NetlinkAttributeWriter()
        a.put(UInt16(TCA_KIND), Array("htb".utf8) + [0])
        a.nest(UInt16(TCA_OPTIONS)) { o in
            var glob: [UInt8] = []
            for v in [UInt32(TC_HTB_PROTOVER), 10, UInt32(defaultClass), 0, 0] { glob.appendLE(v) }
            o.put(UInt16(TCA_HTB_INIT), glob)
            o.putU32(UInt16(TCA_HTB_DIRECT_QLEN), directQueue)
        }
        return b + a.bytes
    }
}
