//! Counters and histograms in the Prometheus text exposition format (0.0.4),
//! for the binaries' `/metrics`: a registry behind one mutex, cheap to update
//! from any task, rendered on scrape. Pure formatting, no I/O: the binary
//! serves the text and supplies the gauges it computes at scrape time.

pub mod agent;
pub mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A metric family: name, type (`counter`, `gauge`, `histogram`) and help.
pub type Family = (&'static str, &'static str, &'static str);

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

type Key = (&'static str, String);

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<Key, u64>,
    histograms: BTreeMap<Key, Histogram>,
}

/// `k="v",k2="v2"` with the values escaped as the text format requires, for
/// samples a binary writes itself (gauges, info metrics).
pub fn label_pairs(pairs: &[(&str, &str)]) -> String {
    labels(pairs)
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out
}

/// Counters and histograms of the families given at construction; the
/// binary renders its gauges itself ([`Registry::render`]).
#[derive(Debug)]
pub struct Registry {
    families: &'static [Family],
    inner: Mutex<Inner>,
}

impl Registry {
    /// An empty registry of `families`, rendered in that order.
    pub fn new(families: &'static [Family]) -> Self {
        Self {
            families,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `n` to the counter `name{labels}`.
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        *self
            .lock()
            .counters
            .entry((name, labels(pairs)))
            .or_default() += n;
    }

    /// Adds one to the counter `name{labels}`.
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    /// Records `d` in the histogram `name{labels}`.
    pub fn observe(&self, name: &'static str, pairs: &[(&str, &str)], d: Duration) {
        self.lock()
            .histograms
            .entry((name, labels(pairs)))
            .or_default()
            .observe(d.as_secs_f64());
    }

    /// The value of a counter (tests, benchmarks).
    pub fn counter(&self, name: &str, pairs: &[(&str, &str)]) -> u64 {
        let key = labels(pairs);
        self.lock()
            .counters
            .iter()
            .filter(|((n, l), _)| *n == name && *l == key)
            .map(|(_, v)| *v)
            .sum()
    }

    /// The sum of a counter over all its label sets.
    pub fn counter_total(&self, name: &str) -> u64 {
        self.lock()
            .counters
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Renders every family in order: `gauge(name, out)` writes a gauge family's
    /// samples (after its `# HELP`/`# TYPE` lines), and may add samples of a counter
    /// kept elsewhere (a client's own counters); counters and histograms are the
    /// registry's.
    pub fn render(&self, mut gauge: impl FnMut(&str, &mut String)) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        for (name, kind, help) in self.families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "gauge" => gauge(name, &mut out),
                "counter" => {
                    for ((n, l), v) in inner.counters.iter().filter(|((n, _), _)| n == name) {
                        if l.is_empty() {
                            let _ = writeln!(out, "{n} {v}");
                        } else {
                            let _ = writeln!(out, "{n}{{{l}}} {v}");
                        }
                    }
                    gauge(name, &mut out);
                }
                _ => {
                    for ((n, l), h) in inner.histograms.iter().filter(|((n, _), _)| n == name) {
                        let sep = if l.is_empty() { "" } else { "," };
                        for (i, bound) in BUCKETS.iter().enumerate() {
                            let _ = writeln!(
                                out,
                                "{n}_bucket{{{l}{sep}le=\"{bound}\"}} {}",
                                h.counts.get(i).copied().unwrap_or(0)
                            );
                        }
                        let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                        let braces = if l.is_empty() {
                            String::new()
                        } else {
                            format!("{{{l}}}")
                        };
                        let _ = writeln!(out, "{n}_sum{braces} {}", h.sum);
                        let _ = writeln!(out, "{n}_count{braces} {}", h.count);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\")]), "a=\"x\\\"y\\\\\"");
    }
}
