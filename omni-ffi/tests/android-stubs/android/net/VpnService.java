package android.net;
import android.os.ParcelFileDescriptor;
import java.net.DatagramSocket;
import java.net.Socket;
public class VpnService extends android.app.Service {
    public boolean protect(int socket) { throw new RuntimeException("Stub!"); }
    public boolean protect(Socket socket) { throw new RuntimeException("Stub!"); }
    public boolean protect(DatagramSocket socket) { throw new RuntimeException("Stub!"); }
    public boolean setUnderlyingNetworks(Network[] networks) { throw new RuntimeException("Stub!"); }
    public void onRevoke() { throw new RuntimeException("Stub!"); }
    public class Builder {
        public Builder() { throw new RuntimeException("Stub!"); }
        public Builder setSession(String session) { throw new RuntimeException("Stub!"); }
        public Builder setMtu(int mtu) { throw new RuntimeException("Stub!"); }
        public Builder addAddress(String address, int prefixLength) { throw new RuntimeException("Stub!"); }
        public Builder addRoute(String address, int prefixLength) { throw new RuntimeException("Stub!"); }
        public Builder addDnsServer(String address) { throw new RuntimeException("Stub!"); }
        public Builder addSearchDomain(String domain) { throw new RuntimeException("Stub!"); }
        public Builder setBlocking(boolean blocking) { throw new RuntimeException("Stub!"); }
        public Builder setUnderlyingNetworks(Network[] networks) { throw new RuntimeException("Stub!"); }
        public ParcelFileDescriptor establish() { throw new RuntimeException("Stub!"); }
    }
}
