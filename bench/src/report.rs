//! The figures format shared by every scenario: printed as a table, saved as JSON.

use serde::Serialize;

/// One measured number, and the floor it is compared with when there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
}

/// The baseline a figure is compared with, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub scenario: String,
    pub value: f64,
    /// `value / floor.value`: above 1 is more throughput (or more latency) than the floor.
    pub ratio: f64,
}

impl Figure {
    pub fn new(scenario: &str, metric: &str, value: f64, unit: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            value,
            unit: unit.to_owned(),
            floor: None,
        }
    }

    /// Attaches `floor` (a figure of the same metric) and the ratio value / floor.
    pub fn against(mut self, floor: &Figure) -> Self {
        let ratio = if floor.value == 0.0 {
            0.0
        } else {
            self.value / floor.value
        };
        self.floor = Some(Floor {
            scenario: floor.scenario.clone(),
            value: floor.value,
            ratio,
        });
        self
    }

    pub fn print(&self) {
        match &self.floor {
            Some(floor) => println!(
                "{:<34} {:<16} {:>12.1} {:<6}  floor {:<26} {:>12.1}  ratio {:.3}",
                self.scenario,
                self.metric,
                self.value,
                self.unit,
                floor.scenario,
                floor.value,
                floor.ratio
            ),
            None => println!(
                "{:<34} {:<16} {:>12.1} {:<6}",
                self.scenario, self.metric, self.value, self.unit
            ),
        }
    }
}

pub fn write(path: &std::path::Path, figures: &[Figure]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(figures)?)?;
    Ok(())
}
