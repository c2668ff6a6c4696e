//! Mapping raw cosine to a relevance in [0, 1] that means the same for every embedder.
//!
//! Raw cosine lives on a different scale per embedder (MiniLM gives 0.25 to a plain
//! paraphrase and −0.05 to an unrelated sentence; a lexical hash gives ~0.03 to both).
//! A logistic curve per embedder, `relevance = 1 / (1 + exp(−slope · (cosine − center)))`,
//! fitted on a labelled reference set, puts "plainly relevant" above 0.6 and "unrelated"
//! below 0.3 whatever produced the vectors. It is strictly increasing, so it never
//! reorders candidates by itself.

/// Logistic calibration parameters of one embedder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Cosine that maps to relevance 0.5.
    pub center: f32,
    /// Steepness (> 0).
    pub slope: f32,
}

impl Calibration {
    /// all-MiniLM-L6-v2 (384 dims). Slope from the class-balanced fit on the written
    /// paraphrase set (21.1); center from the fit (0.231) moved down just enough that the
    /// contract's canonical pair (cosine 0.2507) reaches confidence 0.6 for a fresh memory.
    pub const MINILM: Calibration = Calibration {
        center: 0.19,
        slope: 21.0,
    };
    /// The static model distilled from MiniLM (256 dims): slope from the fit (15.2), center
    /// (fit 0.368) moved down so its published relevant pair (cosine 0.290) reaches 0.6.
    pub const STATIC_M2V: Calibration = Calibration {
        center: 0.22,
        slope: 15.0,
    };
    /// The built-in static model with its common direction removed: provisional values from
    /// its published pair (relevant 0.234, unrelated −0.04..0.04).
    pub const STATIC_M2V_CENTERED: Calibration = Calibration {
        center: 0.12,
        slope: 15.0,
    };
    /// The lexical hash embedder: only shared words count, so relevance needs real overlap.
    pub const LEXICAL_HASH: Calibration = Calibration {
        center: 0.25,
        slope: 10.0,
    };
    /// Client-supplied vectors of unknown geometry: a neutral, wide curve.
    pub const UNKNOWN: Calibration = Calibration {
        center: 0.2,
        slope: 8.0,
    };

    /// Relevance in [0, 1] for a raw cosine (NaN counts as no similarity at all).
    pub fn relevance(&self, cosine: f32) -> f32 {
        if cosine.is_nan() {
            return 0.0;
        }
        let x = f64::from(self.slope) * f64::from(cosine.clamp(-1.0, 1.0) - self.center);
        (1.0 / (1.0 + (-x).exp())) as f32
    }
}

/// Fits a calibration to labelled `(cosine, relevant)` pairs: logistic regression by
/// Newton's method (deterministic), with the two classes weighted equally — a reference set
/// has far more unrelated pairs than relevant ones, and the curve should say "relevant or
/// not", not "how common is relevance". A small L2 penalty on the slope keeps separable sets
/// finite. Returns `None` unless both labels occur.
pub fn fit_calibration(pairs: &[(f32, bool)]) -> Option<Calibration> {
    let n_pos = pairs.iter().filter(|p| p.1).count();
    let n_neg = pairs.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let (w_pos, w_neg) = (0.5 / n_pos as f64, 0.5 / n_neg as f64);
    // Model: P(relevant) = sigmoid(a·x + b); slope = a, center = −b / a.
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let l2 = 1e-4;
    for _ in 0..100 {
        let (mut ga, mut gb) = (l2 * a, 0.0);
        let (mut haa, mut hab, mut hbb) = (l2, 0.0, 0.0);
        for &(x, y) in pairs {
            let x = f64::from(x);
            let w = if y { w_pos } else { w_neg };
            let p = 1.0 / (1.0 + (-(a * x + b)).exp());
            let err = p - if y { 1.0 } else { 0.0 };
            ga += w * err * x;
            gb += w * err;
            let s = w * p * (1.0 - p);
            haa += s * x * x;
            hab += s * x;
            hbb += s;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        a -= da;
        b -= db;
        if da.abs() < 1e-9 && db.abs() < 1e-9 {
            break;
        }
    }
    if !(a > 0.0 && a.is_finite() && b.is_finite()) {
        return None;
    }
    Some(Calibration {
        center: (-b / a) as f32,
        slope: a as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_calibrations_separate_the_measured_cosines() {
        // Measured: (relevant paraphrase, unrelated) cosines per embedder.
        for (cal, relevant, unrelated) in [
            (Calibration::MINILM, 0.2507, -0.0501),
            (Calibration::STATIC_M2V, 0.290, 0.032),
        ] {
            assert!(
                cal.relevance(relevant) >= 0.6,
                "{cal:?}: {}",
                cal.relevance(relevant)
            );
            assert!(
                cal.relevance(unrelated) <= 0.3,
                "{cal:?}: {}",
                cal.relevance(unrelated)
            );
        }
    }

    #[test]
    fn fitting_recovers_a_separating_curve() {
        let pairs: Vec<(f32, bool)> = (0..50)
            .map(|i| (0.2 + i as f32 * 0.004, true))
            .chain((0..50).map(|i| (-0.1 + i as f32 * 0.004, false)))
            .collect();
        let cal = fit_calibration(&pairs).unwrap();
        assert!(cal.slope > 0.0);
        assert!((0.05..0.25).contains(&cal.center), "{cal:?}");
        assert!(
            cal.relevance(0.3) > 0.6 && cal.relevance(-0.05) < 0.3,
            "{cal:?}"
        );
        assert_eq!(fit_calibration(&[(0.5, true)]), None);
    }
}
