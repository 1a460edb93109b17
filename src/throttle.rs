//! Log lines that would repeat per request (a database away answers every
//! request with 503): at most one a second, with a count of the ones left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one line through per second and counts the others.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle that lets the first line through.
    pub const fn new() -> Throttle {
        Throttle { state: Mutex::new((None, 0)) }
    }

    /// `Some(lines left out since the last one)` when a line may be logged now.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                state.1 += 1;
                None
            }
            _ => {
                let left_out = state.1;
                *state = (Some(now), 0);
                Some(left_out)
            }
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_a_count_of_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        *t.state.lock().expect("lock") = (Some(Instant::now() - Duration::from_secs(2)), 2);
        assert_eq!(t.admit(), Some(2));
    }
}
