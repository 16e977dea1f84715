package android.os;
public final class PowerManager {
    public static final String ACTION_DEVICE_IDLE_MODE_CHANGED = "android.os.action.DEVICE_IDLE_MODE_CHANGED";
    public boolean isDeviceIdleMode() { throw new RuntimeException("Stub!"); }
    public boolean isInteractive() { throw new RuntimeException("Stub!"); }
}
