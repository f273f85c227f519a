//! The metrics registry behind `GET /metrics`.
//!
//! Each subsystem owns its metrics (`PipelineMetrics` in `media`, `RelayMetrics` in `rtc`,
//! `SwapMetrics` in `swap::live`, `SchedulerMetrics` in `infer`, the room and roulette gauges in
//! `room`, the session gauges in `signal`) and registers them, with their names and help
//! texts, into one [`Registry`] when the app is built; `/metrics` renders that registry in the
//! Prometheus text format. Everything recorded is a relaxed atomic: recording costs a few
//! nanoseconds on the hot path and never takes a lock.
//!
//! This module depends on no other module of the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.133, 0.25, 0.5, 1.0,
];

/// A latency histogram with the server's fixed buckets (0.5 ms to 1 s), lock-free: relaxed
/// atomics, so recording on a codec thread costs a few nanoseconds. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCounts>);

#[derive(Debug, Default)]
struct HistogramCounts {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let c = &self.0;
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            c.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        c.count.fetch_add(1, Ordering::Relaxed);
        c.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&c.buckets)
            .map(|(&bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let sum = c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<Labels>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Labels of a family: fixed names, values known when the series is made.
pub type Labels = Vec<(&'static str, &'static str)>;

/// A family of latency histograms.
pub type HistogramFamily = Family<Labels, Histogram>;

/// The series of `family` with one label, kept by the caller so that recording needs no map
/// lookup.
pub fn series<M: Clone + Default + TypedMetric + EncodeMetric>(
    family: &Family<Labels, M>,
    label: &'static str,
    value: &'static str,
) -> M {
    family.get_or_create_owned(&vec![(label, value)])
}

/// Figures read when `/metrics` is scraped (the live counts of rooms, sessions, connections;
/// totals a subsystem keeps for itself), each from a function of the subsystem that owns it.
#[derive(Default)]
pub struct Scraped {
    gauges: Vec<ScrapedFigure>,
}

struct ScrapedFigure {
    name: &'static str,
    help: &'static str,
    counter: bool,
    read: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Scraped {
    /// A gauge (a figure that goes up and down).
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> &mut Self {
        self.push(name, help, false, read)
    }

    /// A counter (a total since start; `_total` is appended to the name).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> &mut Self {
        self.push(name, help, true, read)
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        counter: bool,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> &mut Self {
        self.gauges.push(ScrapedFigure {
            name,
            help,
            counter,
            read: Arc::new(read),
        });
        self
    }

    /// Hands the gauges to `registry`.
    pub fn register(self, registry: &mut Registry) {
        if !self.gauges.is_empty() {
            registry.register_collector(Box::new(self));
        }
    }
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.gauges.iter().map(|g| g.name))
            .finish()
    }
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for g in &self.gauges {
            let value = (g.read)();
            if g.counter {
                let counter = ConstCounter::new(value);
                counter.encode(encoder.encode_descriptor(
                    g.name,
                    g.help,
                    None,
                    counter.metric_type(),
                )?)?;
            } else {
                let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                gauge.encode(encoder.encode_descriptor(
                    g.name,
                    g.help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// The registry in the Prometheus text exposition format (version 0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an encoder error would be a bug in a metric.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot render the metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_is_in_seconds() {
        let mut registry = Registry::default();
        let h = Histogram::default();
        registry.register("x", "A latency", h.clone());
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(5));
        let out = render(&registry);
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 5.0033"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn scraped_figures_are_read_at_each_render() {
        let mut registry = Registry::default();
        let n = Arc::new(AtomicU64::new(2));
        let (read, total) = (n.clone(), n.clone());
        let mut scraped = Scraped::default();
        scraped
            .gauge("things", "Things alive.", move || {
                read.load(Ordering::Relaxed)
            })
            .counter("made", "Things made.", move || {
                10 * total.load(Ordering::Relaxed)
            });
        scraped.register(&mut registry);
        let text = render(&registry);
        assert!(text.contains("# TYPE things gauge\nthings 2\n"), "{text}");
        assert!(
            text.contains("# TYPE made_total counter\nmade_total 20\n"),
            "{text}"
        );
        n.store(5, Ordering::Relaxed);
        assert!(render(&registry).contains("things 5\n"));
    }

    #[test]
    fn a_family_series_kept_by_its_recorder_is_rendered_with_its_label() {
        let mut registry = Registry::default();
        let family = Family::<Labels, Counter>::default();
        registry.register("refused", "Refusals", family.clone());
        let full = series(&family, "reason", "room_full");
        full.inc();
        full.inc();
        let text = render(&registry);
        assert!(text.contains("# TYPE refused_total counter\n"), "{text}");
        assert!(
            text.contains("refused_total{reason=\"room_full\"} 2\n"),
            "{text}"
        );
    }
}
