package android.os;
public class ParcelFileDescriptor implements java.io.Closeable {
    public java.io.FileDescriptor getFileDescriptor() { throw new RuntimeException("Stub!"); }
    public int getFd() { throw new RuntimeException("Stub!"); }
    public void close() throws java.io.IOException { throw new RuntimeException("Stub!"); }
}
