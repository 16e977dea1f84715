//! JNI for the Android packet path: `net.omninervous.ffi.OmniNative`.
//!
//! Packets cross in direct `ByteBuffer`s, in place: no per-packet copy and no
//! allocation. A handle is a strong reference to a [`Tunnel`]
//! (`OmniNative.create`, or `Tunnel.packetHandle()` from the Kotlin bindings
//! for a tunnel configured there); `OmniNative.release` drops it.
//!
//! Packet calls return a `long`: `>= 0` is `(kind << 32) | length` with kind
//! 0 = nothing, 1 = a packet for the TUN device at `IN_PLACE_OFFSET`,
//! 2 = a datagram at offset 0 for the endpoint buffer's address; `< 0` is
//! `-(needed << 8 | -code)` with the C API's result codes. Network garbage
//! never throws: only misuse (a bad config, a non-direct buffer) does.
//!
//! Endpoint buffers (direct, >= 20 bytes): `[0]` family 4 or 6, `[1]` 0,
//! `[2..4]` port big-endian, `[4..8]` IPv4 or `[4..20]` IPv6.

use std::ffi::c_void;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use jni::objects::{JByteBuffer, JClass, JString};
use jni::sys::{jint, jlong, jstring, JNI_VERSION_1_6};
use jni::{JNIEnv, JavaVM};
use omni_core::node::{Received, IN_PLACE_OFFSET};
use omni_core::Transmit;

use crate::clock::Clock;
use crate::error::{recv_code, send_code, OmniResult};
use crate::tunnel::Tunnel;

const ENDPOINT_LEN: usize = 20;
const KIND_TUN: i64 = 1;
const KIND_NETWORK: i64 = 2;

fn ok(kind: i64, len: usize) -> jlong {
    (kind << 32) | i64::try_from(len).unwrap_or(0).min(0xffff_ffff)
}

fn err(code: OmniResult, needed: usize) -> jlong {
    let needed = i64::try_from(needed).unwrap_or(0).min(1 << 40);
    -((needed << 8) | -(code as i64))
}

/// Runs `f`, turning a panic into `OmniResult::Panic`.
fn guard(f: impl FnOnce() -> jlong) -> jlong {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| err(OmniResult::Panic, 0))
}

/// # Safety
/// `handle` is 0 or a live handle from `create`/`packetHandle`.
unsafe fn tunnel<'a>(handle: jlong) -> Option<&'a Tunnel> {
    // SAFETY: a non-zero handle is an `Arc<Tunnel>` pointer kept alive by the caller
    // until `release`.
    (handle != 0).then(|| unsafe { &*(handle as usize as *const Tunnel) })
}

/// The bytes of a direct buffer. `None` for a heap buffer.
///
/// # Safety
/// The buffer must stay alive and be used by no other thread during the call
/// (Java's direct buffers are not moved by the GC).
unsafe fn direct<'a>(env: &JNIEnv<'_>, buf: &JByteBuffer<'_>) -> Option<&'a mut [u8]> {
    let ptr = env.get_direct_buffer_address(buf).ok()?;
    let cap = env.get_direct_buffer_capacity(buf).ok()?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: JNI reports the buffer's address and capacity; the caller keeps it alive and unshared.
    Some(unsafe { std::slice::from_raw_parts_mut(ptr, cap) })
}

fn read_endpoint(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match b.first()? {
        4 => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        6 => {
            let a: [u8; 16] = b.get(4..20)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

fn write_endpoint(b: &mut [u8], a: SocketAddr) {
    let Some(b) = b.get_mut(..ENDPOINT_LEN) else { return };
    b.fill(0);
    b[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(v4) => {
            b[0] = 4;
            b[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b[0] = 6;
            b[4..20].copy_from_slice(&v6.octets());
        }
    }
}

fn throw(env: &mut JNIEnv<'_>, class: &str, msg: &str) {
    let _ = env.throw_new(class, msg);
}

#[no_mangle]
pub extern "system" fn JNI_OnLoad(_vm: JavaVM, _reserved: *mut c_void) -> jint {
    let _ = catch_unwind(crate::logging::init);
    JNI_VERSION_1_6
}

/// `static native long create(String wgQuick)`; throws IllegalArgumentException.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_create<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    config: JString<'l>,
) -> jlong {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let text: String = match env.get_string(&config) {
            Ok(s) => s.into(),
            Err(_) => return Err("configuration is null or not a string".to_owned()),
        };
        crate::config::parse_wg_quick(&text)
            .and_then(|c| Tunnel::build(&c, Clock::System))
            .map(|t| Arc::into_raw(Arc::new(t)) as usize as jlong)
            .map_err(|e| e.to_string())
    }));
    match r {
        Ok(Ok(h)) => h,
        Ok(Err(msg)) => {
            throw(&mut env, "java/lang/IllegalArgumentException", &msg);
            0
        }
        Err(_) => {
            throw(&mut env, "java/lang/IllegalStateException", "omni-ffi panicked");
            0
        }
    }
}

/// `static native void release(long handle)`: drops the handle's reference. 0 is a no-op.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_release<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    let _ = catch_unwind(|| {
        if handle != 0 {
            // SAFETY: the handle came from Arc::into_raw (create / packetHandle) and is released once.
            drop(unsafe { Arc::from_raw(handle as usize as *const Tunnel) });
        }
    });
}

/// `static native long sendIp(long h, ByteBuffer buf, int len, ByteBuffer endpoint)`:
/// the packet is at `buf[IN_PLACE_OFFSET..][..len]`; a datagram comes back at
/// `buf[0..]`, its destination in `endpoint`.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_sendIp<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    buf: JByteBuffer<'l>,
    len: jint,
    endpoint: JByteBuffer<'l>,
) -> jlong {
    guard(|| {
        let Some(t) = (unsafe { tunnel(handle) }) else { return err(OmniResult::NullArgument, 0) };
        let (Some(b), Some(ep)) = (unsafe { direct(&env, &buf) }, unsafe { direct(&env, &endpoint) }) else {
            return err(OmniResult::InvalidArgument, 0);
        };
        let Ok(len) = usize::try_from(len) else { return err(OmniResult::InvalidArgument, 0) };
        if ep.len() < ENDPOINT_LEN {
            return err(OmniResult::BufferTooSmall, ENDPOINT_LEN);
        }
        match t.send_ip_in_place(t.now(), b, len) {
            Ok(Some(tx)) => transmitted(ep, tx),
            Ok(None) => ok(0, 0),
            Err(e) => {
                let (c, n) = send_code(e);
                err(c, n)
            }
        }
    })
}

fn transmitted(ep: &mut [u8], tx: Transmit) -> jlong {
    write_endpoint(ep, tx.to);
    ok(KIND_NETWORK, tx.len)
}

/// `static native long handleDatagram(long h, ByteBuffer buf, int len, ByteBuffer endpoint)`:
/// `buf[0..len]` is the datagram received from `endpoint`. A packet comes back at
/// `buf[IN_PLACE_OFFSET..]`, a reply for `endpoint` at `buf[0..]`.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_handleDatagram<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    buf: JByteBuffer<'l>,
    len: jint,
    endpoint: JByteBuffer<'l>,
) -> jlong {
    guard(|| {
        let Some(t) = (unsafe { tunnel(handle) }) else { return err(OmniResult::NullArgument, 0) };
        let (Some(b), Some(ep)) = (unsafe { direct(&env, &buf) }, unsafe { direct(&env, &endpoint) }) else {
            return err(OmniResult::InvalidArgument, 0);
        };
        let Some(from) = read_endpoint(ep) else { return err(OmniResult::InvalidArgument, 0) };
        let Some(dg) = usize::try_from(len).ok().and_then(|l| b.get_mut(..l)) else {
            return err(OmniResult::InvalidArgument, 0);
        };
        match t.handle_datagram_in_place(t.now(), from, dg) {
            Ok(Received::Done) => ok(0, 0),
            Ok(Received::Reply { len }) => ok(KIND_NETWORK, len),
            Ok(Received::Packet { len, .. }) => ok(KIND_TUN, len),
            Err(e) => {
                let (c, n) = recv_code(e);
                err(c, n)
            }
        }
    })
}

/// `static native long pollTransmit(long h, ByteBuffer buf, ByteBuffer endpoint)`.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_pollTransmit<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    buf: JByteBuffer<'l>,
    endpoint: JByteBuffer<'l>,
) -> jlong {
    guard(|| {
        let Some(t) = (unsafe { tunnel(handle) }) else { return err(OmniResult::NullArgument, 0) };
        let (Some(b), Some(ep)) = (unsafe { direct(&env, &buf) }, unsafe { direct(&env, &endpoint) }) else {
            return err(OmniResult::InvalidArgument, 0);
        };
        if ep.len() < ENDPOINT_LEN {
            return err(OmniResult::BufferTooSmall, ENDPOINT_LEN);
        }
        match t.poll_transmit_into(t.now(), b) {
            Ok(Some(tx)) => transmitted(ep, tx),
            Ok(None) => ok(0, 0),
            Err(e) => {
                let (c, n) = send_code(e);
                err(c, n)
            }
        }
    })
}

/// `static native long pollTimeout(long h)`: the next deadline on the tunnel's
/// clock in nanoseconds, or -1.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_pollTimeout<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) -> jlong {
    guard(|| match unsafe { tunnel(handle) } {
        Some(t) => t.poll_timeout_instant().and_then(|d| i64::try_from(d.as_nanos()).ok()).unwrap_or(-1),
        None => -1,
    })
}

/// `static native void handleTimeout(long h)`.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_handleTimeout<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    guard(|| {
        if let Some(t) = unsafe { tunnel(handle) } {
            t.handle_timeout_at(t.now());
        }
        0
    });
}

/// `static native long now(long h)`: the tunnel's clock (nanoseconds; on
/// Android the same as `SystemClock.elapsedRealtimeNanos()`).
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_now<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) -> jlong {
    guard(|| {
        let n = match unsafe { tunnel(handle) } {
            Some(t) => t.now().as_nanos(),
            None => crate::clock::system_now_nanos(),
        };
        i64::try_from(n).unwrap_or(i64::MAX)
    })
}

/// `static native void networkChanged(long h)`: rebind (call after recreating
/// and protecting the socket).
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_networkChanged<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    guard(|| {
        if let Some(t) = unsafe { tunnel(handle) } {
            t.on_network_changed();
        }
        0
    });
}

fn string_result(env: &mut JNIEnv<'_>, r: std::thread::Result<Result<String, String>>) -> jstring {
    match r {
        Ok(Ok(s)) => match env.new_string(s) {
            Ok(j) => j.into_raw(),
            Err(_) => std::ptr::null_mut(), // OutOfMemoryError is pending
        },
        Ok(Err(msg)) => {
            throw(env, "java/lang/IllegalArgumentException", &msg);
            std::ptr::null_mut()
        }
        Err(_) => {
            throw(env, "java/lang/IllegalStateException", "omni-ffi panicked");
            std::ptr::null_mut()
        }
    }
}

/// `static native String publicKey(long h)`.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_publicKey<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) -> jstring {
    let r = catch_unwind(|| match unsafe { tunnel(handle) } {
        Some(t) => Ok(t.public_key()),
        None => Err("null handle".to_owned()),
    });
    string_result(&mut env, r)
}

/// `static native String generatePrivateKey()`.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_generatePrivateKey<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
) -> jstring {
    let r = catch_unwind(|| Ok(crate::generate_private_key()));
    string_result(&mut env, r)
}

/// `static native String publicKeyFromPrivate(String privateKey)`; throws IllegalArgumentException.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_publicKeyFromPrivate<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    private_key: JString<'l>,
) -> jstring {
    let key: Option<String> = env.get_string(&private_key).ok().map(Into::into);
    let r = catch_unwind(|| match key {
        Some(k) => crate::public_key_from_private(k).map_err(|e| e.to_string()),
        None => Err("private key is null".to_owned()),
    });
    string_result(&mut env, r)
}

/// `static int inPlaceOffset()`: kept in Rust so Java cannot drift.
#[no_mangle]
pub extern "system" fn Java_net_omninervous_ffi_OmniNative_inPlaceOffset<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
) -> jint {
    IN_PLACE_OFFSET as jint
}
