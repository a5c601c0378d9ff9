//! The shutdown signal shared by every task and thread.
//!
//! Threads poll [`Shutdown::is_triggered`] between bounded waits; async tasks `select!` on
//! [`Shutdown::wait`]. Triggering is idempotent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(false);
        Shutdown { flag: Arc::new(AtomicBool::new(false)), tx: Arc::new(tx) }
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sends `value` on a bounded channel, waiting while it is full, but never past a trigger:
    /// `Err` when shutting down or when the receiver is gone.
    pub fn send<T>(&self, tx: &std::sync::mpsc::SyncSender<T>, mut value: T) -> Result<(), T> {
        use std::sync::mpsc::TrySendError;
        loop {
            if self.is_triggered() {
                return Err(value);
            }
            match tx.try_send(value) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(v)) => return Err(v),
                Err(TrySendError::Full(v)) => {
                    value = v;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }

    /// Resolves once the signal has been triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // `wait_for` checks the current value first, so a trigger before the call is not missed.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Triggers on SIGTERM or SIGINT. Must be called inside a Tokio runtime.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                tracing::error!("Cannot install signal handlers.");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "Shutting down."),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "Shutting down."),
            }
            this.trigger();
        });
    }
}
