package android.net;
public final class LinkProperties {
    public java.util.List<LinkAddress> getLinkAddresses() { throw new RuntimeException("Stub!"); }
}
