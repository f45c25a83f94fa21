//! The command-line conventions both binaries (`streamflix-replay` and `streamflix`) share, so
//! they behave alike: one log filter variable, one `KEY=VALUE` parser, one way to stop.
//!
//! - **Logs** go to stderr, filtered by `STREAMFLIX_LOG` ([`LOG_ENV`]; default `warn`), e.g.
//!   `STREAMFLIX_LOG=info` or `STREAMFLIX_LOG=streamflix=debug`.
//! - **`-X KEY=VALUE`** (librdkafka properties) and other key/value flags: key and value trimmed;
//!   an empty key is an error.
//! - **Stopping**: the first SIGINT (Ctrl-C) or SIGTERM asks the command to stop cleanly (finish
//!   the current record, flush what was sent or checkpoint, print a summary); it then exits with
//!   status **0**, since nothing is lost and a rerun continues where it stopped. A second signal
//!   exits at once with status **130** (128 + SIGINT), without the clean-up. Errors exit with 1,
//!   usage errors (clap) with 2.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses none of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The environment variable holding the log filter (tracing's `EnvFilter` syntax).
pub const LOG_ENV: &str = "STREAMFLIX_LOG";

/// Exit status when a second signal cuts a clean stop short.
pub const KILLED: i32 = 130;

/// Sends log lines to stderr, filtered by [`LOG_ENV`] (default `warn`), in colour only when
/// stderr is a terminal (a log file or a pipe gets no escape codes).
pub fn init_logging() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A `KEY=VALUE` argument that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not KEY=VALUE")]
pub struct NotKeyValue(pub String);

/// Parses `KEY=VALUE` (a clap value parser): key and value trimmed, the key non-empty.
///
/// # Errors
/// No `=`, or an empty key.
pub fn key_value(s: &str) -> Result<(String, String), NotKeyValue> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(NotKeyValue(s.to_string())),
    }
}

/// The stop request of a running command: raised by the first SIGINT or SIGTERM (or by the
/// command itself), read by synchronous loops ([`Shutdown::flag`]) and awaited by async tasks
/// ([`Shutdown::subscribe`]).
#[derive(Clone)]
pub struct Shutdown {
    stop: Arc<AtomicBool>,
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { stop: Arc::new(AtomicBool::new(false)), stopped: tokio::sync::watch::Sender::new(false) }
    }
}

impl Shutdown {
    /// Listens for the signals on `rt`: the first prints `message` (if any) to stderr and
    /// requests the stop; a second exits the process at once with status [`KILLED`].
    pub fn listen(&self, rt: &tokio::runtime::Handle, message: Option<&'static str>) {
        let this = self.clone();
        rt.spawn(async move {
            signal().await;
            if let Some(m) = message {
                eprintln!("{m}");
            }
            this.request();
            signal().await;
            std::process::exit(KILLED);
        });
    }

    /// [`Shutdown::listen`] on a small runtime of its own thread, for commands without one.
    pub fn listen_on_own_thread(&self, message: Option<&'static str>) {
        let this = self.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            this.listen(rt.handle(), message);
            // The listener never ends by itself: it exits the process on a second signal.
            rt.block_on(std::future::pending::<()>());
        });
    }

    /// Requests the stop (as a signal does).
    pub fn request(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stopped.send_replace(true);
    }

    /// Whether the stop was requested.
    pub fn requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The flag synchronous loops poll.
    pub fn flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Resolves once the stop is requested.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopped.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// The next SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_trimmed_and_need_a_key() {
        assert_eq!(key_value(" acks = all ").unwrap(), ("acks".to_string(), "all".to_string()));
        assert_eq!(key_value("a=b=c").unwrap(), ("a".to_string(), "b=c".to_string()));
        assert_eq!(key_value("k=").unwrap(), ("k".to_string(), String::new()));
        assert!(key_value("=v").is_err());
        assert!(key_value("novalue").is_err());
    }

    #[test]
    fn a_requested_stop_is_seen_by_flag_and_waiters() {
        let s = Shutdown::default();
        assert!(!s.requested());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let waiter = s.wait();
        s.request();
        rt.block_on(waiter);
        assert!(s.flag().load(Ordering::SeqCst));
    }
}
