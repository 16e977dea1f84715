package android.net;
public class LinkAddress {
    public java.net.InetAddress getAddress() { throw new RuntimeException("Stub!"); }
}
