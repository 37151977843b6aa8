//! Shutdown signals: the first SIGTERM or SIGINT cancels the token, so the
//! pipeline stops fetching, finishes in-flight work, flushes and commits;
//! a second one exits at once (code 130), for an operator who cannot wait.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A token cancelled by the first SIGTERM/SIGINT; the second exits the
/// process immediately.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting now without finishing in-flight work");
        std::process::exit(130);
    });
    Ok(token)
}
