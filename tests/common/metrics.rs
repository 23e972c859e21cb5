//! The one Prometheus text-format parser of the tests.

use std::collections::BTreeMap;

/// A parsed `/metrics` exposition: every sample and every family's type.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `series -> value`, the series with its labels as written
    /// (`poolside_commands_total{command="GET"}`).
    pub samples: BTreeMap<String, f64>,
    /// `family -> type` from the `# TYPE` lines.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses poolside's exposition. Panics on a sample line that does not
    /// parse, a series that is not poolside's, or a series given twice.
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(comment) = line.strip_prefix('#') {
                if let Some((name, kind)) = comment
                    .trim_start()
                    .strip_prefix("TYPE ")
                    .and_then(|rest| rest.split_once(' '))
                {
                    metrics
                        .types
                        .insert(name.to_string(), kind.trim().to_string());
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(series.starts_with("poolside_"), "{line}");
            assert!(
                metrics.samples.insert(series.to_string(), value).is_none(),
                "duplicate series {series}"
            );
        }
        metrics
    }

    /// The value of `series`; panics when there is no such series.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series}"))
    }

    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// Whether a `# TYPE family ...` line is there.
    pub fn has_family(&self, family: &str) -> bool {
        self.types.contains_key(family)
    }
}
