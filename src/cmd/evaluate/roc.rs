//! Ranking and classification measures: ROC area and curve, precision,
//! recall and F1, score deciles.

use serde::Serialize;

use super::outcomes::Judged;

/// A yes/no prediction judged against the actual outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// Customers predicted positive.
    pub predicted: usize,
    /// Customers actually positive.
    pub actual: usize,
    /// Predicted and actually positive.
    pub true_positives: usize,
    /// `true_positives / predicted` (null when nothing was predicted).
    pub precision: Option<f64>,
    /// `true_positives / actual` (null when nothing was positive).
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall (null if either is, 0 if both are 0).
    pub f1: Option<f64>,
}

/// The predictors whose ROC areas are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predictor {
    /// The composite score.
    Score,
    /// P(alive).
    PAlive,
    /// Expected holdout purchase days (0 for customers who never bought).
    ExpectedPurchases,
    /// Minus the idle days (more recent ranks higher).
    Recency,
}

impl Predictor {
    /// All four, in report order.
    pub const ALL: [Predictor; 4] =
        [Predictor::Score, Predictor::PAlive, Predictor::ExpectedPurchases, Predictor::Recency];

    /// The report's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Predictor::Score => "score",
            Predictor::PAlive => "p_alive",
            Predictor::ExpectedPurchases => "expected_purchases",
            Predictor::Recency => "recency",
        }
    }
}

/// Each judged customer's value of a predictor (higher: more likely to buy).
pub fn predictor(judged: &[Judged], p: Predictor) -> Vec<f64> {
    judged
        .iter()
        .map(|j| match p {
            Predictor::Score => j.score,
            Predictor::PAlive => j.p_alive,
            Predictor::ExpectedPurchases => j.expected_purchases.unwrap_or(0.0),
            Predictor::Recency => -j.idle_days,
        })
        .collect()
}

/// Precision, recall and F1 of `predicted` against `actual` (same length).
pub fn classify(predicted: &[bool], actual: &[bool]) -> Classification {
    let count = |f: &dyn Fn(usize) -> bool| (0..predicted.len()).filter(|i| f(*i)).count();
    let true_positives = count(&|i| predicted[i] && actual[i]);
    let (n_predicted, n_actual) = (count(&|i| predicted[i]), count(&|i| actual[i]));
    let ratio = |n: usize| (n > 0).then(|| true_positives as f64 / n as f64);
    let (precision, recall) = (ratio(n_predicted), ratio(n_actual));
    let f1 = precision.zip(recall).map(|(p, r)| if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 });
    Classification { predicted: n_predicted, actual: n_actual, true_positives, precision, recall, f1 }
}

/// Area under the ROC curve of `scores` as predictors of `labels`: the
/// probability that a random positive scores above a random negative, ties
/// counting one half (the Mann–Whitney statistic, with mid-ranks). None
/// unless there are both positives and negatives.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * order[i..=j].iter().filter(|k| labels[**k]).count() as f64;
        i = j + 1;
    }
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    (positives > 0.0 && negatives > 0.0)
        .then(|| (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// The ROC curve of `scores` for `labels`: (false positive rate, true
/// positive rate) from (0, 0) to (1, 1), one point per distinct score from
/// the highest down, so tied scores make one diagonal step. Empty unless
/// there are both positives and negatives.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut curve = vec![(0.0, 0.0)];
    for (n, k) in order.iter().enumerate() {
        if labels[*k] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if order.get(n + 1).is_none_or(|next| scores[*next] != scores[*k]) {
            curve.push((fp / negatives, tp / positives));
        }
    }
    curve
}

/// Share of customers who bought in the holdout in each score decile
/// (customers sorted by score at T1, split into ten equal-count groups,
/// lowest first; fewer groups with fewer than ten customers).
pub fn score_deciles(judged: &[Judged]) -> Vec<f64> {
    let mut order: Vec<&Judged> = judged.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    let groups = order.len().min(10);
    (0..groups)
        .map(|g| {
            let part = &order[g * order.len() / groups..(g + 1) * order.len() / groups];
            part.iter().filter(|j| j.purchased()).count() as f64 / part.len() as f64
        })
        .collect()
}
