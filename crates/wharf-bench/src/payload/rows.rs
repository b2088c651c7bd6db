//! Rows measured run by run by the payload suite, handed to the harness at the end.
//!
//! Ratios need both of their figures from the same run, and those figures come from
//! different systems (`wharf`, `machine`), which one [`Harness::measure_many`] call cannot
//! produce; so the suite drives its runs itself and records the rows with
//! [`Harness::record`].

use crate::harness::{Harness, format_value};

/// What identifies a row: workload, system, durability and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub workload: &'static str,
    pub system: &'static str,
    pub durability: &'static str,
    pub unit: &'static str,
}

impl Key {
    pub const fn new(
        workload: &'static str,
        system: &'static str,
        durability: &'static str,
        unit: &'static str,
    ) -> Self {
        Self {
            workload,
            system,
            durability,
            unit,
        }
    }
}

struct Row {
    key: Key,
    runs: Vec<f64>,
    note: Option<String>,
}

/// The rows of one suite invocation, in the order they were first added.
pub struct Rows {
    rows: Vec<Row>,
    runs: usize,
}

impl Rows {
    /// Rows of an invocation doing `runs` runs.
    pub fn new(runs: usize) -> Self {
        Self {
            rows: Vec::new(),
            runs,
        }
    }

    /// Adds the value of run `run` (1-based) to the row of `key`, creating it on first use,
    /// and reports it on stderr as the harness does.
    pub fn add(&mut self, run: usize, key: Key, value: f64) {
        eprintln!(
            "[payload] {} ({}, {}) run {run}/{}: {} {}",
            key.workload,
            key.system,
            key.durability,
            self.runs,
            format_value(value),
            key.unit
        );
        match self.rows.iter_mut().find(|r| r.key == key) {
            Some(row) => row.runs.push(value),
            None => self.rows.push(Row {
                key,
                runs: vec![value],
                note: None,
            }),
        }
    }

    /// Sets the note of the row of `key`, added earlier (the last note wins).
    pub fn note(&mut self, key: Key, note: String) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.key == key) {
            row.note = Some(note);
        }
    }

    /// Records every row into `h`.
    pub fn record(self, h: &mut Harness<'_>) -> anyhow::Result<()> {
        for Row { key, runs, note } in self.rows {
            h.record(key.workload, key.system, key.durability, key.unit, runs)?;
            if let Some(note) = &note {
                h.note(key.workload, key.system, note)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::harness::BenchConfig;

    #[test]
    fn rows_keep_runs_in_order_and_carry_notes() {
        let config = BenchConfig {
            runs: 2,
            quick: true,
            dir: PathBuf::from("."),
            only: None,
        };
        let ratio = Key::new("w", "s", "d", "%");
        let refused = Key::new("r", "s", "d", "MB/s");
        let mut rows = Rows::new(2);
        rows.add(1, ratio, 1.0);
        rows.add(1, refused, 0.0);
        rows.add(2, ratio, 3.0);
        rows.note(refused, "refused".into());
        let mut h = Harness::new("payload", &config);
        rows.record(&mut h).unwrap();
        let results = h.into_results();
        assert_eq!(results[0].runs, [1.0, 3.0]);
        assert_eq!(results[0].median, 2.0);
        assert_eq!(results[0].note, None);
        assert_eq!(results[1].note.as_deref(), Some("refused"));
    }
}
