//! Scalers from the model bundle: pure, allocation-free transforms applied in place.

use serde::{Deserialize, Serialize};

/// A per-column affine scaler, as fitted in training.
///
/// Both kinds reduce to `(x - offset) / scale`; the constructor precomputes `1 / scale` so the
/// hot path is one multiply-add per value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScalerSpec {
    /// `(x - mean) / std`.
    Standard { mean: Vec<f64>, std: Vec<f64> },
    /// `(x - min) / (max - min)`.
    Minmax { min: Vec<f64>, max: Vec<f64> },
}

/// Why a scaler's parameters cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalerError {
    #[error("has {got} parameters, expected {expected}")]
    Length { expected: usize, got: usize },
    #[error("parameter {field}[{index}] is not finite")]
    NonFinite { field: &'static str, index: usize },
    #[error("column {index} has zero or negative scale")]
    ZeroScale { index: usize },
}

/// A validated scaler, ready for the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    offset: Vec<f32>,
    inv_scale: Vec<f32>,
    scale: Vec<f32>,
}

impl Scaler {
    /// Validates `spec` for `columns` columns.
    pub fn new(spec: &ScalerSpec, columns: usize) -> Result<Scaler, ScalerError> {
        let (a_name, a, b_name, b) = match spec {
            ScalerSpec::Standard { mean, std } => ("mean", mean, "std", std),
            ScalerSpec::Minmax { min, max } => ("min", min, "max", max),
        };
        for v in [a, b] {
            if v.len() != columns {
                return Err(ScalerError::Length { expected: columns, got: v.len() });
            }
        }
        let mut offset = Vec::with_capacity(columns);
        let mut scale = Vec::with_capacity(columns);
        for i in 0..columns {
            if !a[i].is_finite() {
                return Err(ScalerError::NonFinite { field: a_name, index: i });
            }
            if !b[i].is_finite() {
                return Err(ScalerError::NonFinite { field: b_name, index: i });
            }
            let s = match spec {
                ScalerSpec::Standard { .. } => b[i],
                ScalerSpec::Minmax { .. } => b[i] - a[i],
            };
            if s <= 0.0 || !(s as f32).is_normal() {
                return Err(ScalerError::ZeroScale { index: i });
            }
            offset.push(a[i] as f32);
            scale.push(s as f32);
        }
        let inv_scale = scale.iter().map(|s| 1.0 / s).collect();
        Ok(Scaler { offset, inv_scale, scale })
    }

    pub fn columns(&self) -> usize {
        self.offset.len()
    }

    /// Normalizes `values` in place; `values` holds whole rows of `columns()` values.
    #[inline]
    pub fn normalize(&self, values: &mut [f32]) {
        let c = self.columns();
        debug_assert_eq!(values.len() % c, 0);
        for row in values.chunks_exact_mut(c) {
            for ((v, o), k) in row.iter_mut().zip(&self.offset).zip(&self.inv_scale) {
                *v = (*v - o) * k;
            }
        }
    }

    /// Inverts the scaler in place. A one-column scaler applies to every value, which is how a
    /// single target scaler covers every step of a multi-step horizon.
    #[inline]
    pub fn denormalize(&self, values: &mut [f32]) {
        if self.columns() == 1 {
            for v in values.iter_mut() {
                *v = *v * self.scale[0] + self.offset[0];
            }
            return;
        }
        for row in values.chunks_exact_mut(self.columns()) {
            for ((v, o), s) in row.iter_mut().zip(&self.offset).zip(&self.scale) {
                *v = *v * s + o;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_round_trips_and_matches_formula() {
        let s = Scaler::new(&ScalerSpec::Standard { mean: vec![350.0, 0.0], std: vec![10.0, 0.5] }, 2).unwrap();
        let mut v = vec![360.0, 0.25, 340.0, -0.5];
        s.normalize(&mut v);
        assert_eq!(v, vec![1.0, 0.5, -1.0, -1.0]);
        s.denormalize(&mut v);
        assert_eq!(v, vec![360.0, 0.25, 340.0, -0.5]);
    }

    #[test]
    fn minmax_maps_range_to_unit_interval() {
        let s = Scaler::new(&ScalerSpec::Minmax { min: vec![10.0], max: vec![20.0] }, 1).unwrap();
        let mut v = vec![10.0, 15.0, 20.0];
        s.normalize(&mut v);
        assert_eq!(v, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn one_column_target_scaler_covers_every_horizon_step() {
        let s = Scaler::new(&ScalerSpec::Standard { mean: vec![100.0], std: vec![2.0] }, 1).unwrap();
        let mut v = vec![0.0, 1.0, -1.0, 0.5];
        s.denormalize(&mut v);
        assert_eq!(v, vec![100.0, 102.0, 98.0, 101.0]);
    }

    #[test]
    fn bad_parameters_are_refused_with_their_position() {
        let bad = |mean: Vec<f64>, std: Vec<f64>| Scaler::new(&ScalerSpec::Standard { mean, std }, 2).unwrap_err();
        assert_eq!(bad(vec![1.0], vec![1.0]), ScalerError::Length { expected: 2, got: 1 });
        assert_eq!(bad(vec![1.0, f64::NAN], vec![1.0, 1.0]), ScalerError::NonFinite { field: "mean", index: 1 });
        assert_eq!(bad(vec![1.0, 1.0], vec![1.0, 0.0]), ScalerError::ZeroScale { index: 1 });
        let mm = Scaler::new(&ScalerSpec::Minmax { min: vec![5.0], max: vec![5.0] }, 1).unwrap_err();
        assert_eq!(mm, ScalerError::ZeroScale { index: 0 });
    }
}
