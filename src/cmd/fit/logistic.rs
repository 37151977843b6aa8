//! L2-regularised logistic regression by Newton's method, and the two
//! calibrations of its output: Platt scaling and isotonic regression (pool
//! adjacent violators). Plain Rust: the problems are small (a few dozen
//! coefficients), where Newton converges in a handful of steps and a
//! linear-algebra crate would not earn its build time.

use crate::engine::propensity::sigmoid;

/// A fitted regression: the intercept and one weight per column.
#[derive(Clone, Debug, PartialEq)]
pub struct Logistic {
    /// The log-odds with every column at 0.
    pub intercept: f64,
    /// Each column's weight.
    pub weights: Vec<f64>,
}

impl Logistic {
    /// The log-odds of a row.
    pub fn logit(&self, row: &[f64]) -> f64 {
        self.intercept + self.weights.iter().zip(row).map(|(w, x)| w * x).sum::<f64>()
    }
}

/// Why a regression could not be fitted. Not retryable with the same data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LogisticError {
    /// Newton's method met a non-finite loss or a singular system.
    #[error("the logistic regression did not converge to a finite likelihood")]
    DidNotConverge,
}

/// The penalised negative log-likelihood of `model` (the intercept is not
/// penalised).
fn loss(rows: &[Vec<f64>], labels: &[bool], l2: f64, model: &Logistic) -> f64 {
    let data: f64 = rows
        .iter()
        .zip(labels)
        .map(|(r, y)| {
            let z = model.logit(r);
            // −log σ(z) = log(1 + e^−z), stably.
            let softplus = |v: f64| if v > 0.0 { v + (-v).exp().ln_1p() } else { v.exp().ln_1p() };
            if *y { softplus(-z) } else { softplus(z) }
        })
        .sum();
    data + 0.5 * l2 * model.weights.iter().map(|w| w * w).sum::<f64>()
}

/// Fits `labels` on `rows` (all the same width) with an L2 penalty of
/// `l2` on the weights, from `start` (or zeros): Newton steps with
/// backtracking until the largest change is below 1e-7.
pub fn fit_logistic(
    rows: &[Vec<f64>],
    labels: &[bool],
    l2: f64,
    start: Option<&Logistic>,
) -> Result<Logistic, LogisticError> {
    let d = rows.first().map_or(0, Vec::len);
    let mut model = start.cloned().unwrap_or(Logistic { intercept: 0.0, weights: vec![0.0; d] });
    let mut current = loss(rows, labels, l2, &model);
    for _ in 0..100 {
        // Gradient and Hessian over (intercept, weights).
        let n = d + 1;
        let mut grad = vec![0.0; n];
        let mut hess = vec![0.0; n * n];
        for (r, y) in rows.iter().zip(labels) {
            let p = sigmoid(model.logit(r));
            let residual = p - f64::from(u8::from(*y));
            let w = (p * (1.0 - p)).max(1e-12);
            // The intercept's row: (1, r).
            grad[0] += residual;
            hess[0] += w;
            for (h, x) in hess[1..n].iter_mut().zip(r) {
                *h += w * x;
            }
            // Each weight's row, upper triangle: x_i · (x_i, …, x_d).
            for (i, xi) in r.iter().enumerate() {
                grad[i + 1] += residual * xi;
                if *xi != 0.0 {
                    let wi = w * xi;
                    let row = &mut hess[(i + 1) * n + i + 1..(i + 2) * n];
                    for (h, xj) in row.iter_mut().zip(&r[i..]) {
                        *h += wi * xj;
                    }
                }
            }
        }
        for i in 1..n {
            grad[i] += l2 * model.weights[i - 1];
            hess[i * n + i] += l2;
        }
        for i in 0..n {
            hess[i * n + i] += 1e-9;
            for j in 0..i {
                hess[i * n + j] = hess[j * n + i];
            }
        }
        let step = solve(&mut hess, &grad, n).ok_or(LogisticError::DidNotConverge)?;
        let mut t = 1.0;
        let accepted = loop {
            let trial = Logistic {
                intercept: model.intercept - t * step[0],
                weights: model.weights.iter().zip(&step[1..]).map(|(w, s)| w - t * s).collect(),
            };
            let l = loss(rows, labels, l2, &trial);
            if l.is_finite() && l <= current + 1e-12 * current.abs() {
                break Some((trial, l));
            }
            t *= 0.5;
            if t < 1e-6 {
                break None;
            }
        };
        let Some((next, l)) = accepted else { break };
        let largest = step.iter().map(|s| (t * s).abs()).fold(0.0, f64::max);
        model = next;
        current = l;
        if largest < 1e-7 {
            break;
        }
    }
    if current.is_finite() && model.intercept.is_finite() && model.weights.iter().all(|w| w.is_finite()) {
        Ok(model)
    } else {
        Err(LogisticError::DidNotConverge)
    }
}

/// Solves `a · x = b` for a symmetric positive definite `a` (n × n, row
/// major; overwritten) by Cholesky decomposition; None if it is not
/// positive definite.
fn solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag.is_nan() || diag <= 0.0 {
            return None;
        }
        let diag = diag.sqrt();
        a[j * n + j] = diag;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / diag;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * n + k] * y[k];
        }
        y[i] = v / a[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut v = y[i];
        for k in i + 1..n {
            v -= a[k * n + i] * x[k];
        }
        x[i] = v / a[i * n + i];
    }
    Some(x)
}

/// Platt scaling: the (a, b) of `p = σ(a·z + b)` that best fit `labels`
/// given log-odds `z`, by maximum likelihood.
pub fn fit_platt(z: &[f64], labels: &[bool]) -> Result<(f64, f64), LogisticError> {
    let rows: Vec<Vec<f64>> = z.iter().map(|v| vec![*v]).collect();
    let start = Logistic { intercept: 0.0, weights: vec![1.0] };
    let m = fit_logistic(&rows, labels, 1e-6, Some(&start))?;
    Ok((m.weights[0], m.intercept))
}

/// Isotonic calibration: the non-decreasing map from log-odds to the
/// observed purchase rate that best fits `labels` in squared error (pool
/// adjacent violators), on at most `max_points` equal-count groups of
/// log-odds so that no point rests on a handful of customers. Returns the
/// curve's points: each group's mean log-odds and its pooled rate.
pub fn fit_isotonic(z: &[f64], labels: &[bool], max_points: usize) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|a, b| z[*a].total_cmp(&z[*b]));
    let groups = max_points.clamp(1, z.len().max(1));
    // (sum of z, sum of y, count) per block.
    let mut blocks: Vec<(f64, f64, f64)> = Vec::with_capacity(groups);
    for g in 0..groups {
        let part = &order[g * order.len() / groups..(g + 1) * order.len() / groups];
        if part.is_empty() {
            continue;
        }
        let sz: f64 = part.iter().map(|i| z[*i]).sum();
        let sy: f64 = part.iter().map(|i| f64::from(u8::from(labels[*i]))).sum();
        blocks.push((sz, sy, part.len() as f64));
        // Pool while the last two blocks violate monotonicity.
        while blocks.len() > 1 {
            let (a, b) = (blocks[blocks.len() - 2], blocks[blocks.len() - 1]);
            if a.1 / a.2 < b.1 / b.2 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
        }
    }
    let logits = blocks.iter().map(|b| b.0 / b.2).collect::<Vec<_>>();
    let rates = blocks.iter().map(|b| b.1 / b.2).collect::<Vec<_>>();
    // Pooled blocks have distinct, increasing means unless their log-odds
    // are tied; keep the first of equal ones.
    let mut xs: Vec<f64> = Vec::with_capacity(logits.len());
    let mut ys: Vec<f64> = Vec::with_capacity(logits.len());
    for (x, y) in logits.into_iter().zip(rates) {
        if xs.last().is_none_or(|last| x > *last) {
            xs.push(x);
            ys.push(y);
        }
    }
    (xs, ys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::loadgen::synth::SplitMix64;

    #[test]
    fn recovers_known_coefficients_from_simulated_data() {
        // y ~ Bernoulli(σ(−0.5 + 1.5·x1 − 1·x2)), x ~ U(−2, 2).
        let mut rng = SplitMix64::new(5);
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let (x1, x2) = (4.0 * rng.next_f64() - 2.0, 4.0 * rng.next_f64() - 2.0);
            rows.push(vec![x1, x2]);
            labels.push(rng.next_f64() < sigmoid(-0.5 + 1.5 * x1 - x2));
        }
        let m = fit_logistic(&rows, &labels, 0.0, None).unwrap();
        assert!((m.intercept + 0.5).abs() < 0.06, "{m:?}");
        assert!((m.weights[0] - 1.5).abs() < 0.06 && (m.weights[1] + 1.0).abs() < 0.06, "{m:?}");
        // A strong penalty shrinks the weights towards zero.
        let shrunk = fit_logistic(&rows, &labels, 1e5, None).unwrap();
        assert!(shrunk.weights.iter().all(|w| w.abs() < 0.2), "{shrunk:?}");
    }

    #[test]
    fn separable_data_stays_finite_under_a_penalty() {
        let rows: Vec<Vec<f64>> = (0..100).map(|i| vec![f64::from(i) - 49.5]).collect();
        let labels: Vec<bool> = (0..100).map(|i| i >= 50).collect();
        let m = fit_logistic(&rows, &labels, 1.0, None).unwrap();
        assert!(m.weights[0] > 0.0 && m.weights[0].is_finite());
    }

    #[test]
    fn platt_undoes_a_known_distortion() {
        // True probability σ(2z + 1); Platt must find a ≈ 2, b ≈ 1.
        let mut rng = SplitMix64::new(9);
        let z: Vec<f64> = (0..20_000).map(|_| 4.0 * rng.next_f64() - 2.0).collect();
        let y: Vec<bool> = z.iter().map(|v| rng.next_f64() < sigmoid(2.0 * v + 1.0)).collect();
        let (a, b) = fit_platt(&z, &y).unwrap();
        assert!((a - 2.0).abs() < 0.1 && (b - 1.0).abs() < 0.1, "{a} {b}");
    }

    #[test]
    fn isotonic_pools_violators_into_a_non_decreasing_curve() {
        // Rates by group: 0, 1, 0, 1 → pooled to 0, ½, ½, 1 → points 0, ½, 1.
        let z = [1.0, 2.0, 3.0, 4.0];
        let y = [false, true, false, true];
        let (xs, ys) = fit_isotonic(&z, &y, 4);
        assert_eq!(xs, vec![1.0, 2.5, 4.0]);
        assert_eq!(ys, vec![0.0, 0.5, 1.0]);
        assert!(ys.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = solve(&mut a, &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        assert!(solve(&mut [0.0, 0.0, 0.0, 0.0], &[1.0, 1.0], 2).is_none());
    }
}
