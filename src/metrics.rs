//! Prometheus metrics, in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the sign-latency histogram, in seconds.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0];

/// A latency histogram with [`BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, latency: Duration) {
        // One counter per bucket (not cumulative): one atomic add per request.
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        // Prometheus buckets are cumulative.
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // Never below the buckets (a concurrent request may be half counted).
        let count = self.count.load(Ordering::Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    signatures_ok: AtomicU64,
    signatures_failed: AtomicU64,
    token_errors: AtomicU64,
    latency: Histogram,
    audit_wait: Histogram,
}

impl Metrics {
    /// Counts a finished request by route pattern and status.
    pub fn request(&self, route: &str, status: u16) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((route.to_owned(), status)).or_default() += 1;
    }

    /// Counts signatures made (or failed) and their latency.
    pub fn signatures(&self, n: u64, ok: bool, latency: Duration) {
        if ok {
            self.signatures_ok.fetch_add(n, Ordering::Relaxed);
        } else {
            self.signatures_failed.fetch_add(n, Ordering::Relaxed);
        }
        self.latency.observe(latency);
    }

    /// Records how long a request waited for its audit rows to be committed.
    pub fn audit_wait(&self, wait: Duration) {
        self.audit_wait.observe(wait);
    }

    /// Counts a token (PKCS#11) failure.
    pub fn token_error(&self) {
        self.token_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, active_sessions: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP inkan_http_requests_total HTTP requests by route and status.");
        let _ = writeln!(out, "# TYPE inkan_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "inkan_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                route.replace('"', "'")
            );
        }
        let _ = writeln!(out, "# HELP inkan_signatures_total Signatures by outcome.");
        let _ = writeln!(out, "# TYPE inkan_signatures_total counter");
        let _ =
            writeln!(out, "inkan_signatures_total{{outcome=\"ok\"}} {}", self.signatures_ok.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "inkan_signatures_total{{outcome=\"error\"}} {}",
            self.signatures_failed.load(Ordering::Relaxed)
        );
        self.latency.render(
            &mut out,
            "inkan_sign_duration_seconds",
            "Time to sign a request (token and formatting, audit included).",
        );
        self.audit_wait.render(
            &mut out,
            "inkan_audit_wait_seconds",
            "Time a request waited for its audit rows to be durable (batching window and commit).",
        );
        let _ = writeln!(out, "# HELP inkan_token_errors_total PKCS#11 token failures.");
        let _ = writeln!(out, "# TYPE inkan_token_errors_total counter");
        let _ = writeln!(out, "inkan_token_errors_total {}", self.token_errors.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP inkan_active_sessions Auth sessions not yet expired.");
        let _ = writeln!(out, "# TYPE inkan_active_sessions gauge");
        let _ = writeln!(out, "inkan_active_sessions {active_sessions}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_render_cumulative() {
        let h = Histogram::default();
        for ms in [0.4, 1.2, 1.5, 2000.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let mut out = String::new();
        h.render(&mut out, "t", "test");
        let bucket = |le: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("t_bucket{{le=\"{le}\"}} ")))
                .unwrap_or_else(|| panic!("{le} in {out}"))
                .to_owned()
        };
        assert_eq!(bucket("0.0005"), "1");
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.0015"), "3", "1.5 ms falls in le=0.0015, with everything below");
        assert_eq!(bucket("1"), "3");
        assert_eq!(bucket("+Inf"), "4", "2 s is above every bound");
        assert!(out.contains("t_count 4\n"), "{out}");
    }
}
