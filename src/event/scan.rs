//! The one-pass decoder for well-formed events: the hot path of every replica.
//!
//! It reads each byte of an event once, writing feature values straight into the output buffer
//! as it meets them, with no intermediate JSON tree and no second parse of the window. It only
//! ever *accepts*: anything unusual (an escape in a string, a duplicate key, a number that does
//! not fit, any error at all) makes it return `None`, and the caller falls back to the serde
//! decoder, which is the reference for what is valid and says why an event is refused. So a
//! refusal costs two passes, and an accepted event one.
//!
//! Numbers are parsed to a correctly rounded f64 in the same pass that checks their grammar, then
//! narrowed to f32 as the serde decoder does. serde_json's own f64 parsing is not always
//! correctly rounded, so the two paths can differ by one f32 ulp on rare inputs
//! (`tests/decoder_fuzz.rs` checks that they agree within that).

use std::borrow::Cow;

use super::{EventRef, EventValues, FeatureSchema};

/// serde_json's default recursion limit: deeper input goes to the serde decoder, which refuses it.
const MAX_DEPTH: usize = 128;

/// Decodes `bytes` if it is a well-formed event in a common shape; `None` means "ask serde".
/// The model input (the window, or the observation of a one-step window) goes into `spare`'s
/// allocation.
pub(super) fn decode<'a>(bytes: &'a [u8], schema: &FeatureSchema, spare: &mut Vec<f32>) -> Option<EventRef<'a>> {
    let mut s = Scanner { b: bytes, i: 0 };
    let (t, w) = (schema.window, schema.width());
    let (mut id, mut series_id, mut timestamp) = (None, None, None);
    let mut window: Option<Vec<f32>> = None;
    let mut features: Option<Vec<f32>> = None;
    let mut extra = 0u32;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        s.ws();
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            b"id" => set_once(&mut id, s.string()?)?,
            b"series_id" => set_once(&mut series_id, s.string()?)?,
            b"timestamp" => set_once(&mut timestamp, s.string()?)?,
            b"features" => {
                if features.is_some() {
                    return None;
                }
                // Not `vec![0.0; w]`: that is calloc, which glibc serves without its per-thread
                // cache, and this runs for every observation of a windowed model.
                let mut out = if t == 1 { zeroed(spare, w) } else { zeroed(&mut Vec::new(), w) };
                s.observation(schema, &mut out, &mut extra)?;
                features = Some(out);
            }
            b"window" => {
                if window.is_some() {
                    return None;
                }
                let mut out = zeroed(spare, t * w);
                s.ws();
                s.eat(b'[')?;
                for step in 0..t {
                    s.ws();
                    if step > 0 {
                        s.eat(b',')?;
                        s.ws();
                    }
                    s.observation(schema, &mut out[step * w..(step + 1) * w], &mut extra)?;
                }
                s.ws();
                s.eat(b']')?;
                window = Some(out);
            }
            _ => s.skip_value(0)?,
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != bytes.len() {
        return None;
    }
    let checked = |v: Option<&'a [u8]>| -> Option<Cow<'a, str>> {
        let v = v?;
        (!v.is_empty() && v.len() <= schema.max_id_bytes).then(|| std::str::from_utf8(v).ok().map(Cow::Borrowed))?
    };
    let id = checked(id)?;
    let series_id = checked(series_id)?;
    let timestamp = std::str::from_utf8(timestamp?).ok().filter(|t| !t.is_empty())?;
    let instant = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    let values = match (window, features) {
        (Some(window), _) => EventValues::Window(window),
        (None, Some(obs)) => EventValues::Observation(obs),
        (None, None) => return None,
    };
    Some(EventRef {
        id,
        series_id,
        timestamp: Cow::Borrowed(timestamp),
        timestamp_ms: instant.timestamp_millis(),
        values,
        extra_features: extra,
    })
}

/// `spare`'s allocation (which it takes), holding `n` zeros.
fn zeroed(spare: &mut Vec<f32>, n: usize) -> Vec<f32> {
    let mut out = std::mem::take(spare);
    out.clear();
    out.resize(n, 0.0);
    out
}

fn set_once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string with no escapes and valid UTF-8; its bytes without the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let mut ascii = true;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                c if c >= 0x80 => ascii = false,
                _ => {}
            }
        }
        let s = &self.b[start..self.i - 1];
        if !ascii {
            std::str::from_utf8(s).ok()?;
        }
        Some(s)
    }

    /// A JSON number, grammar-checked (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) and
    /// parsed in the same pass, eight digits at a time where it can. A mantissa of up to 2^53
    /// with a power of ten within ±22 is the exact case: both are exact f64s, so one correctly
    /// rounded multiply or divide gives the answer. Anything else is parsed again from its text by
    /// `fast-float2`.
    fn number(&mut self) -> Option<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
            1e19, 1e20, 1e21, 1e22,
        ];
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut m = Mantissa::default();
        let mut exp10: i64 = 0;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                let (taken, total) = m.digits(b, &mut i);
                // Integer digits that did not fit scale the mantissa up.
                exp10 += (total - taken) as i64;
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let (taken, total) = m.digits(b, &mut i);
            if total == 0 {
                return None;
            }
            exp10 -= taken as i64;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            let negative_exp = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let exp_start = i;
            let mut e: i64 = 0;
            while let Some(c @ b'0'..=b'9') = b.get(i) {
                e = (e * 10 + i64::from(c - b'0')).min(1 << 20);
                i += 1;
            }
            if i == exp_start {
                return None;
            }
            exp10 += if negative_exp { -e } else { e };
        }
        self.i = i;
        if !m.truncated && m.value <= 1 << 53 && (-22..=22).contains(&exp10) {
            let v = m.value as f64;
            let v = if exp10 >= 0 { v * POW10[exp10 as usize] } else { v / POW10[(-exp10) as usize] };
            return Some(if negative { -v } else { v });
        }
        fast_float2::parse(&b[start..i]).ok()
    }

    /// A finite f32 feature value (through f64, as the serde decoder does).
    fn value(&mut self) -> Option<f32> {
        let v = self.number()? as f32;
        v.is_finite().then_some(v)
    }

    /// One observation, an array by position or an object by name, into `out` (`F` values).
    fn observation(&mut self, schema: &FeatureSchema, out: &mut [f32], extra: &mut u32) -> Option<()> {
        match self.next()? {
            b'[' => {
                for (k, slot) in out.iter_mut().enumerate() {
                    self.ws();
                    if k > 0 {
                        self.eat(b',')?;
                        self.ws();
                    }
                    *slot = self.value()?;
                }
                self.ws();
                self.eat(b']')
            }
            b'{' => {
                // Up to 128 features are tracked in a bitmask; wider models take the serde path.
                if out.len() > 128 {
                    return None;
                }
                let mut seen: u128 = 0;
                self.ws();
                if self.peek()? != b'}' {
                    loop {
                        self.ws();
                        let name = self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                        match schema.names.iter().position(|n| n.as_bytes() == name) {
                            Some(k) => {
                                if seen & (1 << k) != 0 {
                                    return None;
                                }
                                seen |= 1 << k;
                                out[k] = self.value()?;
                            }
                            None if schema.reject_unknown_features => return None,
                            None => {
                                self.skip_value(2)?;
                                *extra += 1;
                            }
                        }
                        self.ws();
                        match self.next()? {
                            b',' => continue,
                            b'}' => break,
                            _ => return None,
                        }
                    }
                } else {
                    self.i += 1;
                }
                (seen.count_ones() as usize == out.len()).then_some(())
            }
            _ => None,
        }
    }

    /// Skips any JSON value, checking its grammar, at nesting `depth`.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }
}

/// The decimal digits of a number, as far as 19 fit in a u64.
#[derive(Default)]
struct Mantissa {
    value: u64,
    /// Digits taken into `value` (leading zeros of a fraction included).
    taken: u32,
    /// A non-zero digit was dropped: `value` is not exact.
    truncated: bool,
}

impl Mantissa {
    const MAX_DIGITS: u32 = 19;

    /// Reads a run of digits at `b[*i..]`; returns (digits taken into the mantissa, digits read).
    fn digits(&mut self, b: &[u8], i: &mut usize) -> (u32, u32) {
        let (taken0, start) = (self.taken, *i);
        while self.taken + 8 <= Self::MAX_DIGITS {
            match b.get(*i..*i + 8).and_then(eight_digits) {
                Some(v) => {
                    self.value = self.value * 100_000_000 + v;
                    self.taken += 8;
                    *i += 8;
                }
                None => break,
            }
        }
        while let Some(c @ b'0'..=b'9') = b.get(*i) {
            if self.taken < Self::MAX_DIGITS {
                self.value = self.value * 10 + u64::from(c - b'0');
                self.taken += 1;
            } else if *c != b'0' {
                self.truncated = true;
            }
            *i += 1;
        }
        (self.taken - taken0, (*i - start) as u32)
    }
}

/// The value of eight ASCII digits, or `None` if any byte is not one (SWAR, as fast_float does).
fn eight_digits(chunk: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(chunk.try_into().ok()?);
    let all_digits = (v & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030
        && (v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030;
    if !all_digits {
        return None;
    }
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = v - 0x3030_3030_3030_3030;
    let v = v * 10 + (v >> 8);
    Some(((v & MASK).wrapping_mul(MUL1).wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2))) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Option<f64> {
        let mut s = Scanner { b: text.as_bytes(), i: 0 };
        let v = s.number()?;
        (s.i == text.len()).then_some(v)
    }

    #[test]
    fn numbers_parse_like_the_standard_library_and_follow_json_grammar() {
        for text in [
            "0",
            "-0",
            "7",
            "316.1",
            "-0.8660254037844386",
            "0.5000000000000001",
            "12345678901234567890123",
            "1e5",
            "1E-5",
            "2.5e+3",
            "0.000000000000000000001234",
            "9007199254740993",
            "123456789.123456789",
            "1e308",
            "4.9e-324",
            "0.1",
            "99999999999999999999.5",
            "1.7976931348623157e308",
        ] {
            let want: f64 = text.parse().unwrap();
            assert_eq!(number(text), Some(want), "{text}");
        }
        for bad in ["", "-", "01", "1.", ".5", "+1", "1e", "1e+", "--1", "0x10", "NaN", "Infinity", "1.e5"] {
            assert_eq!(number(bad), None, "{bad:?} is not a JSON number");
        }
    }

    #[test]
    fn eight_digits_reads_only_digits() {
        assert_eq!(eight_digits(b"12345678"), Some(12_345_678));
        assert_eq!(eight_digits(b"00000009"), Some(9));
        assert_eq!(eight_digits(b"1234567:"), None);
        assert_eq!(eight_digits(b"1234/678"), None);
    }
}
