//! Message types mirroring `schemas/`: decoding of InputEvent and Actual, encoding of Prediction.
//!
//! Decoding writes feature values straight into a caller-provided slice in the bundle's feature
//! order, so validating an event allocates only the three strings it echoes back.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

mod scan;

/// Why an input event was dead-lettered; the `streamcast-error-kind` header carries [`Self::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    InvalidJson,
    MissingField,
    InvalidField,
    UnknownFeature,
    MissingFeature,
    NonFinite,
    WindowLength,
    Oversized,
    InferenceError,
    /// An observation older than its series' event-time window.
    LateObservation,
}

impl RejectKind {
    pub const ALL: [RejectKind; 10] = [
        RejectKind::InvalidJson,
        RejectKind::MissingField,
        RejectKind::InvalidField,
        RejectKind::UnknownFeature,
        RejectKind::MissingFeature,
        RejectKind::NonFinite,
        RejectKind::WindowLength,
        RejectKind::Oversized,
        RejectKind::InferenceError,
        RejectKind::LateObservation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::InvalidJson => "invalid_json",
            RejectKind::MissingField => "missing_field",
            RejectKind::InvalidField => "invalid_field",
            RejectKind::UnknownFeature => "unknown_feature",
            RejectKind::MissingFeature => "missing_feature",
            RejectKind::NonFinite => "non_finite",
            RejectKind::WindowLength => "window_length",
            RejectKind::Oversized => "oversized",
            RejectKind::InferenceError => "inference_error",
            RejectKind::LateObservation => "late_observation",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: the kind (a small fixed set, used as a metric label) and a readable reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct DecodeError {
    pub kind: RejectKind,
    pub reason: String,
}

impl DecodeError {
    fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        DecodeError { kind, reason: reason.into() }
    }
}

/// What decoding needs to know about the model: feature names and order, and the window length.
#[derive(Debug, Clone)]
pub struct FeatureSchema {
    pub names: Vec<String>,
    pub window: usize,
    pub max_message_bytes: usize,
    pub reject_unknown_features: bool,
    /// Longest `id` and `series_id` in bytes.
    pub max_id_bytes: usize,
}

/// `validation.max_id_bytes` by default.
pub const DEFAULT_MAX_ID_BYTES: usize = 512;

impl FeatureSchema {
    /// The schema a bundle implies; every decoder (stream, monitor, HTTP, batch) builds it here.
    pub fn for_bundle(m: &crate::bundle::Manifest, max_message_bytes: usize, reject_unknown_features: bool) -> Self {
        FeatureSchema {
            names: m.features.clone(),
            window: m.window,
            max_message_bytes,
            reject_unknown_features,
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
        }
    }

    /// The schema `[validation]` asks for.
    pub fn for_config(m: &crate::bundle::Manifest, v: &crate::config::ValidationConfig) -> Self {
        FeatureSchema {
            max_id_bytes: v.max_id_bytes,
            ..FeatureSchema::for_bundle(m, v.max_message_bytes, v.reject_unknown_features)
        }
    }

    pub fn width(&self) -> usize {
        self.names.len()
    }
}

/// A validated input event.
#[derive(Debug, Clone, PartialEq)]
pub struct InputEvent {
    pub id: String,
    pub series_id: String,
    /// The RFC 3339 timestamp exactly as sent; it is echoed in the prediction.
    pub timestamp: String,
    /// The same instant in milliseconds since the Unix epoch, for event-time windows.
    pub timestamp_ms: i64,
    /// What the event carries: one observation, or the whole window.
    pub values: EventValues,
    /// How many feature names in an object were not the bundle's (ignored unless configured).
    pub extra_features: u32,
}

/// A validated input event whose strings borrow from the message value where they can (always,
/// on the one-pass path): what the consumer decodes, so that an event costs no string copies
/// beyond the one [`crate::pipeline::StreamOrigin`] keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRef<'a> {
    pub id: Cow<'a, str>,
    pub series_id: Cow<'a, str>,
    /// The RFC 3339 timestamp exactly as sent; it is echoed in the prediction.
    pub timestamp: Cow<'a, str>,
    /// The same instant in milliseconds since the Unix epoch, for event-time windows.
    pub timestamp_ms: i64,
    /// What the event carries: one observation, or the whole window.
    pub values: EventValues,
    /// How many feature names in an object were not the bundle's (ignored unless configured).
    pub extra_features: u32,
}

impl EventRef<'_> {
    pub fn into_owned(self) -> InputEvent {
        InputEvent {
            id: self.id.into_owned(),
            series_id: self.series_id.into_owned(),
            timestamp: self.timestamp.into_owned(),
            timestamp_ms: self.timestamp_ms,
            values: self.values,
            extra_features: self.extra_features,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventValues {
    /// One observation (`features`), `F` raw values in the bundle's order.
    Observation(Vec<f32>),
    /// An explicit window (`window`), `T·F` raw values, oldest first, time-major.
    Window(Vec<f32>),
}

/// Whether a JSON text opens with an array. serde fills a struct from an array too, by position,
/// and no message schema here allows that; every other shape serde refuses by itself.
pub fn opens_array(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'[')
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    series_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    features: Option<&'a RawValue>,
    #[serde(borrow, default)]
    window: Option<&'a RawValue>,
}

impl InputEvent {
    fn check_size(bytes: &[u8], schema: &FeatureSchema) -> Result<(), DecodeError> {
        if bytes.len() > schema.max_message_bytes {
            return Err(DecodeError::new(
                RejectKind::Oversized,
                format!("message is {} bytes; the limit is {}", bytes.len(), schema.max_message_bytes),
            ));
        }
        Ok(())
    }

    /// Decodes and validates one `input_data` message value: in one pass when the event is valid
    /// and plain (`scan`), otherwise with serde, which also says why an event is refused.
    pub fn decode(bytes: &[u8], schema: &FeatureSchema) -> Result<InputEvent, DecodeError> {
        InputEvent::decode_ref(bytes, schema, &mut Vec::new()).map(EventRef::into_owned)
    }

    /// [`InputEvent::decode`], with the strings left in `bytes` where they can be, and the model
    /// input the event carries (its window, or its observation when the bundle's window is one
    /// step) written into `spare`'s allocation, which it takes, where the one-pass decoder
    /// accepts the event. The consumer thread hands it buffers the inference thread gave back,
    /// so a streamed event allocates none.
    pub fn decode_ref<'a>(
        bytes: &'a [u8],
        schema: &FeatureSchema,
        spare: &mut Vec<f32>,
    ) -> Result<EventRef<'a>, DecodeError> {
        InputEvent::check_size(bytes, schema)?;
        match scan::decode(bytes, schema, spare) {
            Some(event) => Ok(event),
            None => InputEvent::decode_serde_ref(bytes, schema),
        }
    }

    /// The reference decoder: serde, in two passes. [`InputEvent::decode`] uses it for every event
    /// the one-pass decoder declines, and tests and benchmarks compare the two.
    pub fn decode_with_serde(bytes: &[u8], schema: &FeatureSchema) -> Result<InputEvent, DecodeError> {
        InputEvent::decode_serde_ref(bytes, schema).map(EventRef::into_owned)
    }

    fn decode_serde_ref<'a>(bytes: &'a [u8], schema: &FeatureSchema) -> Result<EventRef<'a>, DecodeError> {
        InputEvent::check_size(bytes, schema)?;
        // serde fills a struct from a JSON array too, by position; an event is an object.
        if opens_array(bytes) {
            return Err(DecodeError::new(RejectKind::InvalidJson, "an event must be a JSON object, not an array"));
        }
        let raw: RawEvent<'_> = serde_json::from_slice(bytes).map_err(|e| {
            let mut d = json_error(bytes, &e, "event");
            // Every field of RawEvent accepts any JSON, so a data error means the value is no object.
            if d.kind == RejectKind::InvalidField {
                d = DecodeError::new(RejectKind::InvalidJson, format!("an event must be a JSON object: {e}"));
            }
            d
        })?;
        let id = required_string(raw.id, "id")?;
        let series_id = required_string(raw.series_id, "series_id")?;
        for (field, value) in [("id", &id), ("series_id", &series_id)] {
            if value.len() > schema.max_id_bytes {
                return Err(DecodeError::new(
                    RejectKind::InvalidField,
                    format!(
                        "`{field}` is {} bytes; the limit is {} (validation.max_id_bytes)",
                        value.len(),
                        schema.max_id_bytes
                    ),
                ));
            }
        }
        let timestamp = required_string(raw.timestamp, "timestamp")?;
        let Ok(instant) = chrono::DateTime::parse_from_rfc3339(&timestamp) else {
            return Err(DecodeError::new(
                RejectKind::InvalidField,
                format!("`timestamp` {timestamp:?} is not an RFC 3339 date-time"),
            ));
        };
        let width = schema.width();
        let mut extra = 0u32;
        let values = match (raw.window, raw.features) {
            (Some(window), features) => {
                let mut out = vec![0.0f32; schema.window * width];
                decode_window(window, schema, &mut out, &mut extra)?;
                // The current observation is optional next to a window, but must be valid if sent.
                if let Some(features) = features {
                    let mut obs = vec![0.0f32; width];
                    decode_observation(features, schema, &mut obs, &mut extra, "features")?;
                }
                EventValues::Window(out)
            }
            (None, Some(features)) => {
                let mut out = vec![0.0f32; width];
                decode_observation(features, schema, &mut out, &mut extra, "features")?;
                EventValues::Observation(out)
            }
            (None, None) => {
                return Err(DecodeError::new(RejectKind::MissingField, "`features` (or `window`) is required"));
            }
        };
        Ok(EventRef {
            id,
            series_id,
            timestamp_ms: instant.timestamp_millis(),
            timestamp,
            values,
            extra_features: extra,
        })
    }
}

fn required_string<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Cow<'a, str>, DecodeError> {
    let raw = raw.ok_or_else(|| DecodeError::new(RejectKind::MissingField, format!("`{field}` is required")))?;
    let s: Cow<'a, str> = Deserialize::deserialize(raw)
        .map_err(|_| DecodeError::new(RejectKind::InvalidField, format!("`{field}` must be a string")))?;
    if s.is_empty() {
        return Err(DecodeError::new(RejectKind::InvalidField, format!("`{field}` must not be empty")));
    }
    Ok(s)
}

/// Classifies a serde_json error. Non-finite numbers are reported as such, not as bad JSON:
/// Python's `json.dumps` writes `NaN`, and `1e999` overflows f64.
fn json_error(bytes: &[u8], e: &serde_json::Error, what: &str) -> DecodeError {
    let msg = e.to_string();
    if msg.contains("number out of range") || points_at_non_finite(bytes, e) {
        return DecodeError::new(RejectKind::NonFinite, format!("{what} holds a non-finite number ({msg})"));
    }
    match e.classify() {
        serde_json::error::Category::Data => DecodeError::new(RejectKind::InvalidField, format!("{what}: {msg}")),
        _ => DecodeError::new(RejectKind::InvalidJson, format!("not valid JSON: {msg}")),
    }
}

fn points_at_non_finite(bytes: &[u8], e: &serde_json::Error) -> bool {
    if e.line() == 0 {
        return false;
    }
    let line_start: usize = bytes.split(|b| *b == b'\n').take(e.line() - 1).map(|l| l.len() + 1).sum();
    // serde_json reports the column of the offending character (1-based) or just past it.
    let at = line_start + e.column().saturating_sub(1);
    [at.saturating_sub(1), at].into_iter().any(|p| {
        let rest = bytes.get(p..).unwrap_or_default();
        rest.starts_with(b"NaN") || rest.starts_with(b"Infinity") || rest.starts_with(b"-Infinity")
    })
}

/// Decodes one observation (object or array) into `out` (`F` values, bundle order).
fn decode_observation(
    raw: &RawValue,
    schema: &FeatureSchema,
    out: &mut [f32],
    extra: &mut u32,
    what: &str,
) -> Result<(), DecodeError> {
    let kind = Cell::new(None);
    let seed = ObservationSeed { schema, out, extra, kind: &kind };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    seed.deserialize(&mut de).map_err(|e| classify_seed_error(raw, &e, &kind, what))
}

fn decode_window(raw: &RawValue, schema: &FeatureSchema, out: &mut [f32], extra: &mut u32) -> Result<(), DecodeError> {
    let kind = Cell::new(None);
    let seed = WindowSeed { schema, out, extra, kind: &kind };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    seed.deserialize(&mut de).map_err(|e| classify_seed_error(raw, &e, &kind, "window"))
}

fn classify_seed_error(
    raw: &RawValue,
    e: &serde_json::Error,
    kind: &Cell<Option<RejectKind>>,
    what: &str,
) -> DecodeError {
    match kind.get() {
        Some(kind) => DecodeError::new(kind, format!("`{what}`: {e}")),
        None => {
            let mut d = json_error(raw.get().as_bytes(), e, &format!("`{what}`"));
            if d.kind == RejectKind::InvalidJson {
                d.kind = RejectKind::InvalidField;
            }
            d
        }
    }
}

/// Writes one observation into `out`, accepting an object (by name) or an array (by position).
struct ObservationSeed<'s, 'o> {
    schema: &'s FeatureSchema,
    out: &'o mut [f32],
    extra: &'o mut u32,
    kind: &'s Cell<Option<RejectKind>>,
}

impl ObservationSeed<'_, '_> {
    fn fail<E: serde::de::Error>(&self, kind: RejectKind, msg: impl fmt::Display) -> E {
        self.kind.set(Some(kind));
        E::custom(msg)
    }

    fn store<E: serde::de::Error>(&self, slot: &mut f32, value: f64, name: &str) -> Result<(), E> {
        let v = value as f32;
        if !v.is_finite() {
            return Err(
                self.fail(RejectKind::NonFinite, format_args!("feature `{name}` is not a finite f32 ({value})"))
            );
        }
        *slot = v;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ObservationSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObservationSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object of feature values or an array of {} numbers", self.schema.width())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A bitmask keeps the missing-feature check allocation-free for up to 128 features.
        let width = self.schema.width();
        let mut seen_small: u128 = 0;
        let mut seen_big: Vec<bool> = if width > 128 { vec![false; width] } else { Vec::new() };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.schema.names.iter().position(|n| *n == *key) {
                Some(i) => {
                    let value: f64 = map.next_value().map_err(|e: A::Error| {
                        if e.to_string().contains("out of range") {
                            self.fail(RejectKind::NonFinite, format_args!("feature `{key}`: {e}"))
                        } else {
                            self.fail(RejectKind::InvalidField, format_args!("feature `{key}` must be a number"))
                        }
                    })?;
                    let mut slot = self.out[i];
                    self.store(&mut slot, value, &key)?;
                    self.out[i] = slot;
                    if width > 128 {
                        seen_big[i] = true;
                    } else {
                        seen_small |= 1 << i;
                    }
                }
                None => {
                    if self.schema.reject_unknown_features {
                        return Err(self.fail(RejectKind::UnknownFeature, format_args!("unknown feature `{key}`")));
                    }
                    map.next_value::<serde::de::IgnoredAny>()?;
                    *self.extra += 1;
                }
            }
        }
        let missing = if width > 128 {
            seen_big.iter().position(|s| !s)
        } else {
            (0..width).find(|i| seen_small & (1 << i) == 0)
        };
        if let Some(i) = missing {
            let name = &self.schema.names[i];
            return Err(self.fail(RejectKind::MissingFeature, format_args!("feature `{name}` is missing")));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let width = self.schema.width();
        let mut i = 0;
        loop {
            let next: Option<f64> = seq.next_element().map_err(|e: A::Error| {
                if e.to_string().contains("out of range") {
                    self.fail(RejectKind::NonFinite, format_args!("value {i}: {e}"))
                } else {
                    self.fail(RejectKind::InvalidField, format_args!("value {i} must be a number"))
                }
            })?;
            let Some(v) = next else { break };
            if i >= width {
                return Err(self.fail(
                    RejectKind::UnknownFeature,
                    format_args!("array has more than the {width} features the model expects"),
                ));
            }
            let name = &self.schema.names[i];
            let mut slot = 0.0;
            self.store(&mut slot, v, name)?;
            self.out[i] = slot;
            i += 1;
        }
        if i < width {
            return Err(self.fail(
                RejectKind::MissingFeature,
                format_args!("array has {i} values; the model expects {width} ({})", self.schema.names.join(", ")),
            ));
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.fail(RejectKind::InvalidField, "must be an object or an array, not a string"))
    }
}

/// Writes a `window` (array of observations, oldest first) into `out` (`T·F` values).
struct WindowSeed<'s, 'o> {
    schema: &'s FeatureSchema,
    out: &'o mut [f32],
    extra: &'o mut u32,
    kind: &'s Cell<Option<RejectKind>>,
}

impl<'de> DeserializeSeed<'de> for WindowSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WindowSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} observations", self.schema.window)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (t, w) = (self.schema.window, self.schema.width());
        let mut step = 0;
        loop {
            if step == t {
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    self.kind.set(Some(RejectKind::WindowLength));
                    return Err(A::Error::custom(format_args!("window has more than the model's {t} steps")));
                }
                break;
            }
            let seed = ObservationSeed {
                schema: self.schema,
                out: &mut self.out[step * w..(step + 1) * w],
                extra: &mut *self.extra,
                kind: self.kind,
            };
            if seq.next_element_seed(seed)?.is_none() {
                self.kind.set(Some(RejectKind::WindowLength));
                return Err(A::Error::custom(format_args!("window has {step} steps; the model needs {t}")));
            }
            step += 1;
        }
        Ok(())
    }
}

/// The model that scored a prediction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// Which routing path produced a prediction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Primary,
    Candidate,
    Shadow,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Primary => "primary",
            Variant::Candidate => "candidate",
            Variant::Shadow => "shadow",
        }
    }
}

/// A `predictions` message. Borrowed so encoding allocates nothing but the output buffer.
#[derive(Debug, Serialize)]
pub struct PredictionOut<'a> {
    pub id: &'a str,
    pub series_id: &'a str,
    pub timestamp: &'a str,
    pub prediction: &'a [f32],
    pub model: &'a ModelRef,
    pub variant: Variant,
    pub latency_ms: f64,
    pub produced_at: &'a str,
    /// True when the series had fewer than `window` observations and the window was left-padded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
    /// Steps of the event-time window that the gap policy filled in; absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub gap_filled: u32,
    /// True when the fallback served this prediction (circuit breaker open, or the primary
    /// failed the batch); `model` then names the fallback.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// The calibrated interval (`intervals.enabled`), or that there is none yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<IntervalOut<'a>>,
    /// A quantile bundle's quantiles (absent for the fallback's rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<QuantilesOut<'a>>,
}

/// A quantile bundle's forecast as `predictions` carries it:
/// `{"levels": [Q], "values": [[Q values] for each step]}`, each step's values increasing.
#[derive(Debug, Clone, Copy)]
pub struct QuantilesOut<'a> {
    pub levels: &'a [f64],
    /// Step-major: step 1's `levels.len()` values first.
    pub values: &'a [f32],
}

impl Serialize for QuantilesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Steps<'a>(&'a [f32], usize);
        impl Serialize for Steps<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.chunks_exact(self.1.max(1)))
            }
        }
        let mut s = serializer.serialize_struct("QuantilesOut", 2)?;
        s.serialize_field("levels", self.levels)?;
        s.serialize_field("values", &Steps(self.values, self.levels.len()))?;
        s.end()
    }
}

impl QuantilesOut<'_> {
    /// The point forecast of a quantile row: each step's 0.5 quantile, into `point` (cleared
    /// first). Bundle validation guarantees that 0.5 is one of the levels.
    pub fn median_into(&self, point: &mut Vec<f32>) {
        point.clear();
        let q = self.levels.len().max(1);
        let median = self.levels.iter().position(|l| *l == 0.5).unwrap_or(q / 2);
        point.extend(self.values.chunks_exact(q).map(|step| step[median]));
    }
}

/// A prediction's quantiles as consumers read them back (the monitor's pinball loss).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct QuantilesIn {
    pub levels: Vec<f64>,
    /// Per step, the value at each level.
    pub values: Vec<Vec<f64>>,
}

/// The interval a prediction carries (`interval` in `predictions`).
#[derive(Debug, Serialize)]
pub struct IntervalOut<'a> {
    pub level: f64,
    pub calibrated: bool,
    /// Per step, only when calibrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<&'a [f32]>,
}

/// A prediction's interval as consumers read it back (the monitor judges coverage with it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct IntervalIn {
    pub level: f64,
    pub calibrated: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upper: Vec<f64>,
}

impl PredictionOut<'_> {
    /// Encodes into `buf` (cleared first), reusing its capacity: the same bytes as serde_json
    /// writes for the derived `Serialize` (a test holds the two together), written directly.
    /// Every event pays for this, and serde_json's per-byte string escaping of ids, names and
    /// timestamps that almost never need it was the encoder's largest cost.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(b"{\"id\":");
        write_str(buf, self.id);
        buf.extend_from_slice(b",\"series_id\":");
        write_str(buf, self.series_id);
        buf.extend_from_slice(b",\"timestamp\":");
        write_str(buf, self.timestamp);
        buf.extend_from_slice(b",\"prediction\":");
        write_f32s(buf, self.prediction);
        buf.extend_from_slice(b",\"model\":{\"name\":");
        write_str(buf, &self.model.name);
        buf.extend_from_slice(b",\"version\":");
        write_str(buf, &self.model.version);
        buf.extend_from_slice(b"},\"variant\":\"");
        buf.extend_from_slice(self.variant.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"latency_ms\":");
        write_f64(buf, self.latency_ms);
        buf.extend_from_slice(b",\"produced_at\":");
        write_str(buf, self.produced_at);
        if self.warmup {
            buf.extend_from_slice(b",\"warmup\":true");
        }
        if self.gap_filled != 0 {
            buf.extend_from_slice(b",\"gap_filled\":");
            buf.extend_from_slice(itoa(self.gap_filled, &mut [0; 10]));
        }
        if self.fallback {
            buf.extend_from_slice(b",\"fallback\":true");
        }
        // On every prediction while intervals are on (the default), so written directly too.
        if let Some(interval) = &self.interval {
            buf.extend_from_slice(b",\"interval\":{\"level\":");
            write_f64(buf, interval.level);
            let calibrated: &[u8] =
                if interval.calibrated { b",\"calibrated\":true" } else { b",\"calibrated\":false" };
            buf.extend_from_slice(calibrated);
            for (name, bounds) in [(&b",\"lower\":"[..], interval.lower), (&b",\"upper\":"[..], interval.upper)] {
                if let Some(bounds) = bounds {
                    buf.extend_from_slice(name);
                    write_f32s(buf, bounds);
                }
            }
            buf.push(b'}');
        }
        // Rare and nested: serde writes these.
        if let Some(quantiles) = &self.quantiles {
            buf.extend_from_slice(b",\"quantiles\":");
            serde_json::to_writer(&mut *buf, quantiles).expect("writing JSON to a Vec cannot fail");
        }
        buf.push(b'}');
    }
}

/// A JSON string. Ids, names and timestamps almost never hold a character JSON must escape, so
/// one branch-free pass (which the compiler vectorizes) checks the whole string, and it is copied
/// as is; serde_json escapes the rest.
fn write_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().fold(false, |escape, b| escape | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        serde_json::to_writer(&mut *buf, s).expect("writing JSON to a Vec cannot fail");
        return;
    }
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

/// A JSON array of f32s, shortest round-trip (what serde_json writes; `null` if not finite).
fn write_f32s(buf: &mut Vec<u8>, values: &[f32]) {
    let mut fmt = zmij::Buffer::new();
    buf.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        if v.is_finite() {
            buf.extend_from_slice(fmt.format_finite(*v).as_bytes());
        } else {
            buf.extend_from_slice(b"null");
        }
    }
    buf.push(b']');
}

fn write_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        buf.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        buf.extend_from_slice(b"null");
    }
}

/// `n` in decimal, in the tail of `out`.
fn itoa(mut n: u32, out: &mut [u8; 10]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}

/// A `predictions` message as read back by consumers (the monitor, tests, the demo).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub series_id: String,
    pub timestamp: String,
    pub prediction: Vec<f64>,
    pub model: ModelRef,
    pub variant: Variant,
    pub latency_ms: f64,
    pub produced_at: String,
    #[serde(default)]
    pub warmup: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_filled: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<IntervalIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<QuantilesIn>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An `actuals` message; `actual` may be a bare number when the horizon is 1.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Actual {
    /// The event id of the forecast it judges; empty (absent) for an actual addressed by time
    /// (`monitor.join_by = "time"`).
    #[serde(default)]
    pub id: String,
    pub series_id: String,
    pub timestamp: String,
    #[serde(deserialize_with = "number_or_array")]
    pub actual: Vec<f64>,
}

fn number_or_array<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrVec {
        N(f64),
        V(Vec<f64>),
    }
    Ok(match NumOrVec::deserialize(d)? {
        NumOrVec::N(n) => vec![n],
        NumOrVec::V(v) => v,
    })
}

/// Formats a timestamp as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// `produced_at`'s form: RFC 3339, UTC, to the millisecond.
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> FeatureSchema {
        FeatureSchema {
            names: vec!["load".into(), "temp".into()],
            window: 2,
            max_message_bytes: 1024,
            reject_unknown_features: false,
            max_id_bytes: 16,
        }
    }

    fn decode(s: &str) -> Result<InputEvent, DecodeError> {
        InputEvent::decode(s.as_bytes(), &schema())
    }

    fn kind(s: &str) -> RejectKind {
        decode(s).unwrap_err().kind
    }

    const HEAD: &str = r#""id":"e1","series_id":"s","timestamp":"2026-11-26T19:00:00Z""#;

    #[test]
    fn ids_longer_than_the_limit_are_invalid_fields() {
        let long = "x".repeat(17);
        let ok = r#"{"id":"0123456789abcdef","series_id":"s","timestamp":"2026-01-01T00:00:00Z","features":[1,2]}"#;
        assert!(decode(ok).is_ok(), "16 bytes is the limit, inclusive");
        for (field, event) in [
            ("id", format!(r#"{{"id":"{long}","series_id":"s","timestamp":"2026-01-01T00:00:00Z","features":[1,2]}}"#)),
            (
                "series_id",
                format!(r#"{{"id":"e","series_id":"{long}","timestamp":"2026-01-01T00:00:00Z","features":[1,2]}}"#),
            ),
        ] {
            let e = decode(&event).unwrap_err();
            assert_eq!(e.kind, RejectKind::InvalidField);
            assert!(e.reason.contains(field) && e.reason.contains("17 bytes"), "{e}");
        }
    }

    #[test]
    fn an_array_is_not_an_event_even_where_serde_would_fill_one() {
        // serde_json fills a struct from an array by position; every field here is optional.
        let array = r#" ["e1","s","2026-11-26T19:00:00Z",[12.5,3.5]]"#;
        for e in [decode(array).unwrap_err(), InputEvent::decode_with_serde(array.as_bytes(), &schema()).unwrap_err()] {
            assert_eq!(e.kind, RejectKind::InvalidJson, "{e}");
            assert!(e.reason.contains("JSON object"), "{e}");
        }
        assert!(opens_array(b"\n\t [") && !opens_array(b" {\"a\":[1]}") && !opens_array(b""));
    }

    #[test]
    fn both_feature_forms_decode_in_bundle_order() {
        let a = decode(&format!(r#"{{{HEAD},"features":{{"temp":3.5,"load":12.5,"hum":1}}}}"#)).unwrap();
        assert_eq!(a.values, EventValues::Observation(vec![12.5, 3.5]));
        assert_eq!(a.extra_features, 1);
        let b = decode(&format!(r#"{{{HEAD},"features":[12.5,3.5]}}"#)).unwrap();
        assert_eq!(b.values, EventValues::Observation(vec![12.5, 3.5]));
        assert_eq!((b.id.as_str(), b.series_id.as_str()), ("e1", "s"));
    }

    #[test]
    fn window_in_mixed_forms_decodes_time_major() {
        let e = decode(&format!(r#"{{{HEAD},"window":[[1,2],{{"load":3,"temp":4}}]}}"#)).unwrap();
        assert_eq!(e.values, EventValues::Window(vec![1.0, 2.0, 3.0, 4.0]));
    }

    #[test]
    fn every_malformed_case_gets_its_kind() {
        assert_eq!(kind("{not json"), RejectKind::InvalidJson);
        assert_eq!(
            kind(r#"{"series_id":"s","timestamp":"2026-11-26T19:00:00Z","features":[1,2]}"#),
            RejectKind::MissingField
        );
        assert_eq!(kind(&format!(r#"{{{HEAD}}}"#)), RejectKind::MissingField);
        assert_eq!(
            kind(r#"{"id":5,"series_id":"s","timestamp":"2026-11-26T19:00:00Z","features":[1,2]}"#),
            RejectKind::InvalidField
        );
        assert_eq!(
            kind(r#"{"id":"e","series_id":"s","timestamp":"yesterday","features":[1,2]}"#),
            RejectKind::InvalidField
        );
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":"1,2"}}"#)), RejectKind::InvalidField);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":{{"load":"x","temp":1}}}}"#)), RejectKind::InvalidField);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":{{"load":1}}}}"#)), RejectKind::MissingFeature);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":[1]}}"#)), RejectKind::MissingFeature);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":[1,2,3]}}"#)), RejectKind::UnknownFeature);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":{{"load":NaN,"temp":1}}}}"#)), RejectKind::NonFinite);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":[1e999,1]}}"#)), RejectKind::NonFinite);
        assert_eq!(kind(&format!(r#"{{{HEAD},"features":[1e300,1]}}"#)), RejectKind::NonFinite);
        assert_eq!(kind(&format!(r#"{{{HEAD},"window":[[1,2]]}}"#)), RejectKind::WindowLength);
        assert_eq!(kind(&format!(r#"{{{HEAD},"window":[[1,2],[1,2],[1,2]]}}"#)), RejectKind::WindowLength);
        assert_eq!(
            kind(&format!(r#"{{{HEAD},"features":[1,2],"pad":"{}"}}"#, "x".repeat(2000))),
            RejectKind::Oversized
        );
    }

    #[test]
    fn unknown_features_can_be_rejected() {
        let mut s = schema();
        s.reject_unknown_features = true;
        let e = InputEvent::decode(format!(r#"{{{HEAD},"features":{{"load":1,"temp":2,"x":3}}}}"#).as_bytes(), &s);
        assert_eq!(e.unwrap_err().kind, RejectKind::UnknownFeature);
    }

    #[test]
    fn prediction_encodes_contract_fields() {
        let model = ModelRef { name: "m".into(), version: "3".into() };
        let p = PredictionOut {
            id: "e1",
            series_id: "s",
            timestamp: "t",
            prediction: &[1.5],
            model: &model,
            variant: Variant::Primary,
            latency_ms: 0.5,
            produced_at: "p",
            warmup: false,
            gap_filled: 0,
            fallback: false,
            interval: None,
            quantiles: None,
        };
        let mut buf = Vec::new();
        p.encode(&mut buf);
        let back: Prediction = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back.prediction, vec![1.5]);
        assert_eq!(back.variant, Variant::Primary);
        assert!(!String::from_utf8(buf).unwrap().contains("warmup"));
    }

    /// The hand-written encoder against serde_json's output for the derived `Serialize`, over
    /// every optional field and strings that must be escaped.
    #[test]
    fn hand_written_encoder_writes_what_serde_json_writes() {
        let plain = ModelRef { name: "co2-mlp".into(), version: "1.2.0".into() };
        let odd = ModelRef { name: "m\"\\\u{1}".into(), version: "v\u{e9}\u{1F600}\n".into() };
        let lower = [1.0f32, -2.5e-8];
        let upper = [3.25f32, 1e30];
        let levels = [0.1, 0.5, 0.9];
        let qvalues = [1.0f32, 2.0, 3.0, 4.0, 5.5, 6.0];
        let ids = ["e1", "", "quote\"back\\slash", "tab\tnl\ncr\r\u{7f}\u{1f}", "caf\u{e9} \u{2028}\u{1F600}"];
        let predictions: [&[f32]; 5] =
            [&[], &[1.5], &[0.1, f32::NAN, f32::INFINITY, -0.0], &[1e-45, 3.4e38, 12345.678], &[7.0; 24]];
        let intervals = [
            None,
            Some(IntervalOut { level: 0.9, calibrated: false, lower: None, upper: None }),
            Some(IntervalOut { level: 0.8, calibrated: true, lower: Some(&lower), upper: Some(&upper) }),
        ];
        let quantiles = [None, Some(QuantilesOut { levels: &levels, values: &qvalues })];
        let mut buf = Vec::new();
        let mut cases = 0;
        for (i, id) in ids.iter().enumerate() {
            for (j, prediction) in predictions.iter().enumerate() {
                for (k, interval) in intervals.iter().enumerate() {
                    for (l, q) in quantiles.iter().enumerate() {
                        let n = i + j + k + l;
                        let p = PredictionOut {
                            id,
                            series_id: ids[(i + 1) % ids.len()],
                            timestamp: ids[(i + 2) % ids.len()],
                            prediction,
                            model: if n % 2 == 0 { &plain } else { &odd },
                            variant: [Variant::Primary, Variant::Candidate, Variant::Shadow][n % 3],
                            latency_ms: [0.0, 0.123456789, 1e-7, 250.5, f64::NAN][n % 5],
                            produced_at: "2026-12-04T04:00:00.123Z",
                            warmup: n % 2 == 1,
                            gap_filled: [0, 1, 4_294_967_295][n % 3],
                            fallback: n % 4 == 3,
                            interval: interval.as_ref().map(|v| IntervalOut { lower: v.lower, upper: v.upper, ..*v }),
                            quantiles: *q,
                        };
                        p.encode(&mut buf);
                        let expected = serde_json::to_vec(&p).unwrap();
                        assert_eq!(
                            String::from_utf8_lossy(&buf),
                            String::from_utf8_lossy(&expected),
                            "case id={i} prediction={j} interval={k} quantiles={l}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 150);
    }

    #[test]
    fn actual_accepts_bare_number() {
        let a: Actual = serde_json::from_str(r#"{"id":"e","series_id":"s","timestamp":"t","actual":13.0}"#).unwrap();
        assert_eq!(a.actual, vec![13.0]);
    }
}
