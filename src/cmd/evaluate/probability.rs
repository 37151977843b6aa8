//! Measures of a predicted probability against what happened: Brier score,
//! log loss, the reliability table by deciles and its expected calibration
//! error; and lift, for any ranking.

use serde::Serialize;

/// Mean squared error of probabilities `p` against outcomes (0 is perfect;
/// always predicting the base rate r scores r·(1 − r)). None when empty.
pub fn brier(p: &[f64], outcomes: &[bool]) -> Option<f64> {
    (!p.is_empty()).then(|| {
        p.iter().zip(outcomes).map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2)).sum::<f64>() / p.len() as f64
    })
}

/// Mean negative log-likelihood of outcomes under probabilities `p`, in
/// nats, each clipped to [1e-15, 1 − 1e-15] so a confident miss costs
/// about 34.5 rather than infinity. None when empty.
pub fn log_loss(p: &[f64], outcomes: &[bool]) -> Option<f64> {
    (!p.is_empty()).then(|| {
        p.iter()
            .zip(outcomes)
            .map(|(p, y)| {
                let p = p.clamp(1e-15, 1.0 - 1e-15);
                -(if *y { p.ln() } else { (1.0 - p).ln() })
            })
            .sum::<f64>()
            / p.len() as f64
    })
}

/// One bin of a reliability table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// Customers in the bin.
    pub customers: usize,
    /// Their mean predicted probability.
    pub predicted: f64,
    /// The share of them that bought.
    pub observed: f64,
}

/// The reliability table: customers sorted by predicted probability, split
/// into `bins` equal-count groups (fewer with fewer customers), lowest
/// first. A calibrated probability has `predicted ≈ observed` in each.
pub fn reliability(p: &[f64], outcomes: &[bool], bins: usize) -> Vec<Bin> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let groups = order.len().min(bins);
    (0..groups)
        .map(|g| {
            let part = &order[g * order.len() / groups..(g + 1) * order.len() / groups];
            let n = part.len() as f64;
            Bin {
                customers: part.len(),
                predicted: part.iter().map(|i| p[*i]).sum::<f64>() / n,
                observed: part.iter().filter(|i| outcomes[**i]).count() as f64 / n,
            }
        })
        .collect()
}

/// Expected calibration error of a reliability table: the mean, weighted
/// by customers, of |predicted − observed| over its bins. None when empty.
pub fn expected_calibration_error(bins: &[Bin]) -> Option<f64> {
    let total: usize = bins.iter().map(|b| b.customers).sum();
    (total > 0)
        .then(|| bins.iter().map(|b| b.customers as f64 * (b.predicted - b.observed).abs()).sum::<f64>() / total as f64)
}

/// Lift at `share` (e.g. 0.1): the purchase rate among the `share` of
/// customers ranked highest by `scores`, over the rate among all. Customers
/// tied at the boundary count in proportion, as a random tie-break would
/// on average. None without any purchase.
pub fn lift(scores: &[f64], outcomes: &[bool], share: f64) -> Option<f64> {
    let n = scores.len();
    let positives = outcomes.iter().filter(|y| **y).count() as f64;
    if n == 0 || positives == 0.0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let k = (share * n as f64).ceil().clamp(1.0, n as f64);
    let (mut taken, mut hits, mut i) = (0.0, 0.0, 0);
    while i < n && taken < k {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let block = (j - i + 1) as f64;
        let block_hits = order[i..=j].iter().filter(|t| outcomes[**t]).count() as f64;
        let take = block.min(k - taken);
        hits += block_hits * take / block;
        taken += take;
        i = j + 1;
    }
    Some((hits / taken) / (positives / n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brier_and_log_loss_of_hand_worked_cases() {
        let y = [true, false, true, false];
        assert_eq!(brier(&[1.0, 0.0, 1.0, 0.0], &y), Some(0.0));
        assert_eq!(brier(&[0.5; 4], &y), Some(0.25));
        // Two right at 0.8 (loss −ln 0.8 each), two at 0.5 (−ln 0.5).
        let l = log_loss(&[0.8, 0.2, 0.5, 0.5], &y).unwrap();
        assert!((l - (-(0.8f64.ln()) - 0.5f64.ln()) / 2.0).abs() < 1e-15);
        assert!(log_loss(&[0.0], &[true]).unwrap().is_finite());
        assert_eq!(brier(&[], &[]), None);
    }

    #[test]
    fn reliability_and_calibration_error_of_a_hand_worked_case() {
        // Bins of two: predicted 0.1 (observed 0), 0.5 (observed ½), 0.9 (observed 1).
        let p = [0.1, 0.1, 0.5, 0.5, 0.9, 0.9];
        let y = [false, false, true, false, true, true];
        let bins = reliability(&p, &y, 3);
        let table: Vec<_> = bins.iter().map(|b| (b.customers, b.predicted, b.observed)).collect();
        assert_eq!(table, vec![(2, 0.1, 0.0), (2, 0.5, 0.5), (2, 0.9, 1.0)]);
        // (0.1 + 0 + 0.1) / 3.
        assert!((expected_calibration_error(&bins).unwrap() - 0.2 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn lift_counts_ties_in_proportion() {
        // 10 customers, 2 buyers; the top 10 % (one) is a buyer: lift 5.
        let scores: Vec<f64> = (0..10).map(f64::from).collect();
        let mut y = [false; 10];
        y[9] = true;
        y[0] = true;
        assert_eq!(lift(&scores, &y, 0.1), Some(5.0));
        // Everyone tied: the top 10 % is an average customer, lift 1.
        assert_eq!(lift(&[1.0; 10], &y, 0.1), Some(1.0));
        assert_eq!(lift(&[1.0; 3], &[false; 3], 0.1), None);
    }
}
