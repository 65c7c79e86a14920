//! Log lines captured in memory, as JSON (the Lambda format), so a test can
//! assert what a person would read: every line about an order carries its
//! trace. Installed once per test process (nextest runs each test alone).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The buffer every line goes to.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Installs the capture as the process's subscriber (level info, JSON
    /// with the span fields); the same capture on every call.
    pub fn install() -> Self {
        static CAPTURE: OnceLock<CapturedLogs> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = CapturedLogs::default();
                let writer = capture.clone();
                let subscriber = tracing_subscriber::fmt()
                    .json()
                    .flatten_event(true)
                    .with_env_filter("info")
                    .with_writer(move || writer.clone())
                    .finish();
                if tracing::subscriber::set_global_default(subscriber).is_err() {
                    panic!("another subscriber was installed first: capture logs before anything logs");
                }
                capture
            })
            .clone()
    }

    /// Every line so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("a JSON log line: {error}: {line}")))
            .collect()
    }
}
