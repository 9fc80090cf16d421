//! Families of values read at scrape time, written through the client
//! library's encoder under the names they are exposed as.
//!
//! Names here are the exposed ones, `_total` included, so that they read
//! as an operator sees them; the library appends `_total` to a counter's
//! name itself, so it is taken off before the name reaches the library.

use std::fmt;

use prometheus_client::{
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelValue, EncodeMetric,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// The name to hand the library, and the type: an exposed name ending in
/// `_total` is a counter, any other a gauge.
fn split(name: &str) -> (&str, MetricType) {
    match name.strip_suffix("_total") {
        Some(base) => (base, MetricType::Counter),
        None => (name, MetricType::Gauge),
    }
}

/// Writes one unlabelled counter; `name` as exposed, ending in `_total`.
pub fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    debug_assert!(name.ends_with("_total"), "counter {name} without _total");
    let (base, _) = split(name);
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(base, help, None, MetricType::Counter)?)
}

/// Writes one unlabelled gauge.
pub fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Writes a family with one label: one series per `(label value, value)`.
/// A counter if `name` ends in `_total`, else a gauge.
pub fn labelled<L: EncodeLabelValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let (base, kind) = split(name);
    let mut family = enc.encode_descriptor(base, help, None, kind)?;
    for (value_label, value) in series {
        let labels = [(label, value_label)];
        let one = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(one)?,
            _ => ConstGauge::new(value).encode(one)?,
        }
    }
    Ok(())
}
