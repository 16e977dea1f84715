package android.content;
public class ContextWrapper extends Context {
    public Object getSystemService(String name) { throw new RuntimeException("Stub!"); }
    public Intent registerReceiver(BroadcastReceiver receiver, IntentFilter filter) { throw new RuntimeException("Stub!"); }
    public void unregisterReceiver(BroadcastReceiver receiver) { throw new RuntimeException("Stub!"); }
    public String getPackageName() { throw new RuntimeException("Stub!"); }
}
