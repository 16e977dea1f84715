//! `log` records (omni-core's and ours) forwarded to a host-provided sink.
//! On Android, with no sink set, they go to logcat through android_logger.

use std::sync::{Arc, OnceLock, RwLock};

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
    fn from_level(l: log::Level) -> Self {
        match l {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }
}

/// Receives log records. Called on whatever thread logged, possibly while a
/// tunnel is locked: an implementation must not call back into a tunnel.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    fn log(&self, level: LogLevel, target: String, message: String);
}

struct Forwarder {
    sink: RwLock<Option<Arc<dyn LogSink>>>,
    #[cfg(target_os = "android")]
    logcat: android_logger::AndroidLogger,
}

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let sink = self.sink.read().unwrap_or_else(|e| e.into_inner()).clone();
        match sink {
            Some(s) => {
                s.log(LogLevel::from_level(record.level()), record.target().to_owned(), record.args().to_string())
            }
            None => self.platform_log(record),
        }
    }
    fn flush(&self) {}
}

impl Forwarder {
    /// Where records go without a sink: logcat on Android, nowhere elsewhere.
    fn platform_log(&self, _record: &log::Record<'_>) {
        #[cfg(target_os = "android")]
        log::Log::log(&self.logcat, _record);
    }
}

fn forwarder() -> &'static Forwarder {
    static F: OnceLock<&'static Forwarder> = OnceLock::new();
    F.get_or_init(|| {
        let f: &'static Forwarder = Box::leak(Box::new(Forwarder {
            sink: RwLock::new(None),
            #[cfg(target_os = "android")]
            logcat: android_logger::AndroidLogger::new(
                android_logger::Config::default().with_tag("omni").with_max_level(log::LevelFilter::Trace),
            ),
        }));
        // Another logger may already be installed by the embedding program; then
        // records go there and the sink sees nothing, which is its choice.
        if log::set_logger(f).is_ok() {
            #[cfg(target_os = "android")]
            log::set_max_level(log::LevelFilter::Info);
            #[cfg(not(target_os = "android"))]
            log::set_max_level(log::LevelFilter::Off);
        }
        f
    })
}

/// Installs the forwarding logger once (idempotent; cheap after the first call).
pub(crate) fn init() {
    let _ = forwarder();
}

/// Sends log records up to `max_level` to `sink` (None: stop forwarding; on
/// Android records then go to logcat).
#[uniffi::export]
pub fn set_log_sink(sink: Option<Arc<dyn LogSink>>, max_level: LogLevel) {
    let f = forwarder();
    *f.sink.write().unwrap_or_else(|e| e.into_inner()) = sink;
    log::set_max_level(max_level.filter());
}
