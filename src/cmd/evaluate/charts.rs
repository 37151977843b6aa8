//! `engage evaluate`'s plots: the BG/NBD calibration/holdout table, the
//! repurchase rate by score decile, the ROC curves, and with a
//! `[churn.model]` the learned probability's reliability diagram.

use std::path::Path;

use super::EvaluateReport;
use super::outcomes::Judged;
use super::roc::{Predictor, predictor, roc_curve, score_deciles};
use crate::charts::{LineChart, Series, line_charts};
use crate::history::ReplayError;

/// Writes the three plots into `dir`; returns their file names.
pub(super) fn write_plots(dir: &Path, judged: &[Judged], report: &EvaluateReport) -> Result<Vec<String>, ReplayError> {
    let rows = &report.calibration_holdout;
    let by_frequency = LineChart {
        title: "BG/NBD: mean holdout purchase days by calibration repeat purchases",
        x_label: "calibration repeat purchase days (x)",
        series: vec![
            Series {
                name: "expected",
                colour: "#1f77b4",
                points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.expected)).collect(),
            },
            Series {
                name: "actual",
                colour: "#d62728",
                points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.actual)).collect(),
            },
        ],
        x_categories: Some(rows.iter().map(|r| r.frequency.clone()).collect()),
        y_max: None,
    };
    let deciles = score_deciles(judged);
    let by_decile = LineChart {
        title: "share of customers who bought in the holdout, by score decile at the calibration end",
        x_label: "score decile (1 lowest)",
        series: vec![Series {
            name: "repurchase rate",
            colour: "#2ca02c",
            points: deciles.iter().enumerate().map(|(i, r)| (i as f64, *r)).collect(),
        }],
        x_categories: Some((1..=deciles.len()).map(|d| d.to_string()).collect()),
        y_max: Some(1.0),
    };
    let bought: Vec<bool> = judged.iter().map(Judged::purchased).collect();
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];
    let mut curves: Vec<Series<'_>> = Predictor::ALL
        .iter()
        .zip(colours)
        .map(|(p, colour)| Series { name: p.name(), colour, points: roc_curve(&predictor(judged, *p), &bought) })
        .collect();
    curves.push(Series { name: "chance", colour: "#999999", points: vec![(0.0, 0.0), (1.0, 1.0)] });
    let roc = LineChart {
        title: "ROC curves: predictors of a purchase in the holdout",
        x_label: "false positive rate",
        series: curves,
        x_categories: None,
        y_max: Some(1.0),
    };
    let mut charts =
        vec![("calibration_holdout.svg", by_frequency), ("score_deciles.svg", by_decile), ("roc.svg", roc)];
    let title;
    if let Some(m) = &report.purchase_model {
        title = format!("reliability of {}: observed purchase rate by predicted decile", m.field);
        charts.push((
            "reliability.svg",
            LineChart {
                title: &title,
                x_label: "mean predicted probability in the decile",
                series: vec![
                    Series {
                        name: "observed",
                        colour: "#d62728",
                        points: m.reliability.iter().map(|b| (b.predicted, b.observed)).collect(),
                    },
                    Series { name: "perfectly calibrated", colour: "#999999", points: vec![(0.0, 0.0), (1.0, 1.0)] },
                ],
                x_categories: None,
                y_max: Some(1.0),
            },
        ));
    }
    let mut names = Vec::new();
    for (name, chart) in charts {
        let path = dir.join(name);
        let svg =
            line_charts(&[chart]).map_err(|e| ReplayError::Chart { path: path.clone(), detail: e.to_string() })?;
        std::fs::write(&path, svg).map_err(|source| ReplayError::Io { action: "writing", path, source })?;
        names.push(name.to_string());
    }
    Ok(names)
}
