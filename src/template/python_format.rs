//! Python's format mini-language for text and numbers, with Python's output:
//! `format(value, spec)`.

use std::fmt::Write;

/// No width or precision may exceed a key's length: a larger one can only fail
/// later, after allocating.
const MAX_WIDTH: usize = 1024;

const TYPES: &str = "sdboxXeEfFgG%";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
    Center,
    AfterSign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Minus,
    Plus,
    Space,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FormatSpec {
    fill: Option<char>,
    align: Option<Align>,
    sign: Option<Sign>,
    coerce_zero: bool,
    alternate: bool,
    zero: bool,
    width: usize,
    grouping: Option<char>,
    precision: Option<usize>,
    ty: Option<char>,
}

fn align_of(c: char) -> Option<Align> {
    match c {
        '<' => Some(Align::Left),
        '>' => Some(Align::Right),
        '^' => Some(Align::Center),
        '=' => Some(Align::AfterSign),
        _ => None,
    }
}

fn read_number(chars: &[char], i: &mut usize, what: &str) -> Result<Option<usize>, String> {
    let start = *i;
    while chars.get(*i).is_some_and(char::is_ascii_digit) {
        *i += 1;
    }
    if *i == start {
        return Ok(None);
    }
    let digits: String = chars[start..*i].iter().collect();
    match digits.parse::<usize>() {
        Ok(n) if n <= MAX_WIDTH => Ok(Some(n)),
        _ => Err(format!(
            "{what} {digits} is larger than a location can be ({MAX_WIDTH})"
        )),
    }
}

impl FormatSpec {
    /// `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`
    pub(super) fn parse(spec: &str) -> Result<Self, String> {
        let chars: Vec<char> = spec.chars().collect();
        let mut i = 0;
        let mut s = FormatSpec {
            fill: None,
            align: None,
            sign: None,
            coerce_zero: false,
            alternate: false,
            zero: false,
            width: 0,
            grouping: None,
            precision: None,
            ty: None,
        };
        if let Some(a) = chars.get(1).copied().and_then(align_of) {
            s.fill = Some(chars[0]);
            s.align = Some(a);
            i = 2;
        } else if let Some(a) = chars.first().copied().and_then(align_of) {
            s.align = Some(a);
            i = 1;
        }
        s.sign = match chars.get(i) {
            Some('-') => Some(Sign::Minus),
            Some('+') => Some(Sign::Plus),
            Some(' ') => Some(Sign::Space),
            _ => None,
        };
        i += usize::from(s.sign.is_some());
        if chars.get(i) == Some(&'z') {
            s.coerce_zero = true;
            i += 1;
        }
        if chars.get(i) == Some(&'#') {
            s.alternate = true;
            i += 1;
        }
        if chars.get(i) == Some(&'0') {
            s.zero = true;
            i += 1;
        }
        s.width = read_number(&chars, &mut i, "width")?.unwrap_or(0);
        if let Some(&g @ (',' | '_')) = chars.get(i) {
            s.grouping = Some(g);
            i += 1;
            if let Some(',' | '_') = chars.get(i) {
                return Err("',' and '_' cannot both be given".into());
            }
        }
        if chars.get(i) == Some(&'.') {
            i += 1;
            s.precision = Some(
                read_number(&chars, &mut i, "precision")?
                    .ok_or("'.' must be followed by a precision")?,
            );
        }
        if let Some(&t) = chars.get(i) {
            if !TYPES.contains(t) {
                return Err(format!(
                    "unknown format type '{t}' (expected one of s, d, b, o, x, X, e, E, f, F, g, G, %)"
                ));
            }
            s.ty = Some(t);
            i += 1;
        }
        if i < chars.len() {
            let rest: String = chars[i..].iter().collect();
            return Err(format!("unexpected '{rest}' after the format type"));
        }
        Ok(s)
    }

    /// Text (and booleans): only fill, align, width, precision (truncation), `s`.
    pub(super) fn format_str(&self, s: &str, kind: &str) -> Result<String, String> {
        if let Some(t) = self.ty.filter(|&t| t != 's') {
            return Err(format!(
                "uses type '{t}', which is for numbers; this value is {kind}"
            ));
        }
        let refuse = |what: &str| {
            Err(format!(
                "uses {what}, which is for numbers; this value is {kind}"
            ))
        };
        if self.sign.is_some() {
            return refuse("a sign");
        }
        if self.alternate {
            return refuse("'#'");
        }
        if self.coerce_zero {
            return refuse("'z'");
        }
        if let Some(g) = self.grouping {
            return refuse(&format!("'{g}'"));
        }
        if self.align == Some(Align::AfterSign) {
            return refuse("'=' alignment");
        }
        let body: String = match self.precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        };
        let fill = self.fill.unwrap_or(if self.zero { '0' } else { ' ' });
        Ok(pad(
            &body,
            self.width,
            fill,
            self.align.unwrap_or(Align::Left),
        ))
    }

    pub(super) fn format_int(&self, v: i64) -> Result<String, String> {
        let (radix, prefix) = match self.ty {
            None | Some('d') => (10, ""),
            Some('b') => (2, "0b"),
            Some('o') => (8, "0o"),
            Some('x') => (16, "0x"),
            Some('X') => (16, "0X"),
            // Python formats an int with a float type as the float.
            Some('e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%') => return self.format_float(v as f64),
            Some(t) => {
                return Err(format!(
                    "uses type '{t}', which is for text; this value is a whole number"
                ))
            }
        };
        if self.precision.is_some() {
            return Err(
                "gives a precision, which whole numbers do not take (use type 'f' for decimals)"
                    .into(),
            );
        }
        if self.coerce_zero {
            return Err(
                "uses 'z', which is for floating-point numbers; this value is a whole number"
                    .into(),
            );
        }
        if radix != 10 && self.grouping == Some(',') {
            return Err(format!(
                "cannot group with ',' for type '{}' (use '_')",
                self.ty.unwrap_or('d')
            ));
        }
        let magnitude = v.unsigned_abs();
        let digits = match (radix, self.ty) {
            (2, _) => format!("{magnitude:b}"),
            (8, _) => format!("{magnitude:o}"),
            (16, Some('X')) => format!("{magnitude:X}"),
            (16, _) => format!("{magnitude:x}"),
            _ => magnitude.to_string(),
        };
        let prefix = if self.alternate { prefix } else { "" };
        let group = self.grouping.map(|g| (g, if radix == 10 { 3 } else { 4 }));
        Ok(self.assemble(v < 0, prefix, &digits, "", group))
    }

    pub(super) fn format_float(&self, x: f64) -> Result<String, String> {
        if let Some(t @ ('s' | 'd' | 'b' | 'o' | 'x' | 'X')) = self.ty {
            let what = if t == 's' { "text" } else { "whole numbers" };
            return Err(format!(
                "uses type '{t}', which is for {what}; this value is a floating-point number"
            ));
        }
        let mut negative = x.is_sign_negative() && !x.is_nan();
        let a = x.abs();
        let upper = matches!(self.ty, Some('E' | 'F' | 'G'));
        if !a.is_finite() {
            let mut body = if a.is_nan() { "nan" } else { "inf" }.to_string();
            if upper {
                body.make_ascii_uppercase();
            }
            let rest = if self.ty == Some('%') { "%" } else { "" };
            return Ok(self.assemble(negative, "", &body, rest, None));
        }
        let alt = self.alternate;
        let (int, mut rest) = match self.ty {
            Some('f' | 'F') => fixed(a, self.precision.unwrap_or(6), alt),
            Some('e' | 'E') => scientific(a, self.precision.unwrap_or(6), alt, upper, false),
            Some('%') => {
                let (int, rest) = fixed(a * 100.0, self.precision.unwrap_or(6), alt);
                (int, rest + "%")
            }
            Some('g' | 'G') => general(a, self.precision.unwrap_or(6), alt, upper, false),
            None => match self.precision {
                Some(p) => general(a, p, alt, false, true),
                None => repr_parts(a),
            },
            Some(t) => unreachable!("type '{t}' is refused above"),
        };
        if negative && self.coerce_zero && is_zero(&int, &rest) {
            negative = false;
        }
        if upper {
            rest.make_ascii_uppercase();
        }
        let group = self.grouping.map(|g| (g, 3));
        Ok(self.assemble(negative, "", &int, &rest, group))
    }

    /// Sign, prefix, grouped digits, the rest (fraction, exponent, `%`), padded.
    fn assemble(
        &self,
        negative: bool,
        prefix: &str,
        digits: &str,
        rest: &str,
        group: Option<(char, usize)>,
    ) -> String {
        let sign = match (negative, self.sign) {
            (true, _) => "-",
            (false, Some(Sign::Plus)) => "+",
            (false, Some(Sign::Space)) => " ",
            (false, _) => "",
        };
        let fill = self.fill.unwrap_or(if self.zero { '0' } else { ' ' });
        let align = self.align.unwrap_or(if self.zero {
            Align::AfterSign
        } else {
            Align::Right
        });
        let head = format!("{sign}{prefix}");
        let digits = match group {
            // Python widens zero padding into the grouped digits: `{:010,}` of 1234
            // is `00,001,234`.
            Some((sep, size)) if align == Align::AfterSign && fill == '0' => {
                let min = self
                    .width
                    .saturating_sub(head.chars().count() + rest.chars().count());
                group_digits(digits, sep, size, min)
            }
            Some((sep, size)) => group_digits(digits, sep, size, 0),
            None => digits.to_string(),
        };
        let body_len = head.chars().count() + digits.chars().count() + rest.chars().count();
        if align == Align::AfterSign {
            let padding: String =
                std::iter::repeat_n(fill, self.width.saturating_sub(body_len)).collect();
            format!("{head}{padding}{digits}{rest}")
        } else {
            pad(&format!("{head}{digits}{rest}"), self.width, fill, align)
        }
    }
}

fn pad(body: &str, width: usize, fill: char, align: Align) -> String {
    let len = body.chars().count();
    let missing = width.saturating_sub(len);
    let (left, right) = match align {
        Align::Left => (0, missing),
        Align::Center => (missing / 2, missing - missing / 2),
        Align::Right | Align::AfterSign => (missing, 0),
    };
    let mut out = String::with_capacity(body.len() + missing);
    out.extend(std::iter::repeat_n(fill, left));
    out.push_str(body);
    out.extend(std::iter::repeat_n(fill, right));
    out
}

/// Groups `digits` by `size` with `sep`, left-padding with zeros until the result
/// is at least `min` characters (never starting with a separator, as Python).
fn group_digits(digits: &str, sep: char, size: usize, min: usize) -> String {
    let grouped_len = |n: usize| n + n.saturating_sub(1) / size;
    let mut n = digits.len();
    while grouped_len(n) < min {
        n += 1;
    }
    let padded = format!("{digits:0>n$}");
    let mut out = String::with_capacity(grouped_len(n));
    for (i, c) in padded.chars().enumerate() {
        if i > 0 && (n - i) % size == 0 {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

fn is_zero(int: &str, rest: &str) -> bool {
    let mantissa = rest.split(['e', 'E']).next().unwrap_or_default();
    int.chars()
        .chain(mantissa.chars())
        .all(|c| matches!(c, '0' | '.' | '%'))
}

/// `f`: integer digits and the rest (`.` and the fraction).
fn fixed(a: f64, precision: usize, alt: bool) -> (String, String) {
    let s = format!("{a:.precision$}");
    match s.split_once('.') {
        Some((int, frac)) => (int.to_string(), format!(".{frac}")),
        None => (s, if alt { ".".into() } else { String::new() }),
    }
}

/// `e`: one integer digit, the fraction, `e`, a sign and at least two exponent
/// digits. `strip` drops trailing zeros of the fraction (for `g`).
fn scientific(a: f64, precision: usize, alt: bool, upper: bool, strip: bool) -> (String, String) {
    let s = format!("{a:.precision$e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let frac = if strip {
        frac.trim_end_matches('0')
    } else {
        frac
    };
    let mut rest = String::new();
    if !frac.is_empty() {
        rest.push('.');
        rest.push_str(frac);
    } else if alt {
        rest.push('.');
    }
    rest.push(if upper { 'E' } else { 'e' });
    let _ = write!(
        rest,
        "{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
    (int.to_string(), rest)
}

/// `g` (and the typeless form with a precision, `add_dot_0`): `precision`
/// significant digits, fixed or scientific by the exponent, trailing zeros
/// dropped unless `#`.
fn general(a: f64, precision: usize, alt: bool, upper: bool, add_dot_0: bool) -> (String, String) {
    let p = precision.max(1);
    let probe = format!("{a:.prec$e}", prec = p - 1);
    let exp: i64 = probe
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    // CPython: the typeless form switches to exponents one digit earlier.
    let limit = if add_dot_0 { p as i64 - 1 } else { p as i64 };
    if exp < -4 || exp + 1 > limit {
        return scientific(a, p - 1, alt, upper, !alt);
    }
    let (int, mut rest) = fixed(a, (p as i64 - 1 - exp) as usize, alt);
    if !alt {
        rest = rest.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if add_dot_0 && rest.is_empty() {
        rest = ".0".into();
    }
    (int, rest)
}

/// Python's `repr` of a non-negative finite float: the shortest digits that read
/// back the same, scientific below 1e-4 and from 1e16.
fn repr_parts(a: f64) -> (String, String) {
    let s = format!("{a:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let decpt = exp.parse::<i64>().unwrap_or(0) + 1;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if decpt <= -4 || decpt > 16 {
        let (int, frac) = digits.split_at(1);
        let mut rest = if frac.is_empty() {
            String::new()
        } else {
            format!(".{frac}")
        };
        let e = decpt - 1;
        let _ = write!(
            rest,
            "e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
        return (int.to_string(), rest);
    }
    let n = digits.len() as i64;
    if decpt <= 0 {
        let zeros = "0".repeat(decpt.unsigned_abs() as usize);
        ("0".into(), format!(".{zeros}{digits}"))
    } else if decpt >= n {
        let zeros = "0".repeat((decpt - n) as usize);
        (format!("{digits}{zeros}"), ".0".into())
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        (int.to_string(), format!(".{frac}"))
    }
}

/// `repr(x)` as Python prints a float: `0.1`, `1.0`, `1e+20`, `-inf`, `nan`.
pub(crate) fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x.is_infinite() {
        return format!("{sign}inf");
    }
    let (int, rest) = repr_parts(x.abs());
    format!("{sign}{int}{rest}")
}
