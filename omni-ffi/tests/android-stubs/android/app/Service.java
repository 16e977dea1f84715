package android.app;
import android.content.Intent;
public abstract class Service extends android.content.ContextWrapper {
    public static final int START_NOT_STICKY = 2;
    public static final int START_STICKY = 1;
    public void onCreate() { throw new RuntimeException("Stub!"); }
    public int onStartCommand(Intent intent, int flags, int startId) { throw new RuntimeException("Stub!"); }
    public void onDestroy() { throw new RuntimeException("Stub!"); }
    public final void stopSelf() { throw new RuntimeException("Stub!"); }
}
