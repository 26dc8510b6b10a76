//! Merging the Prometheus text expositions of several processes into one.

use std::collections::HashMap;

/// One metric family of the output: its `# HELP` and `# TYPE` lines (the first seen) and its
/// samples in the order they came.
#[derive(Debug, Default)]
struct Family<'a> {
    help: Option<&'a str>,
    kind: Option<&'a str>,
    samples: Vec<Sample<'a>>,
}

#[derive(Debug)]
struct Sample<'a> {
    /// `name{labels}` as written: the series' identity.
    series: &'a str,
    value: Value<'a>,
    /// The optional timestamp, with its leading space.
    timestamp: &'a str,
}

#[derive(Debug)]
enum Value<'a> {
    /// The text as it came (one process had this series).
    Text(&'a str),
    /// The sum of several processes' values for the same series.
    Sum(f64),
}

/// Merges the Prometheus text expositions (format 0.0.4) of several processes into one valid
/// exposition: each family's `# HELP` and `# TYPE` once (the first seen), followed by all its
/// samples, families in the order they first appear, samples in input order.
///
/// Give each process's samples a label of their own ([`render`](super::render) with
/// `&[("worker", "3")]`) so that their series stay apart. Should two inputs still hold the same
/// series (same name, same labels written the same way), their values are added up, which is
/// the right total for every counter, gauge and histogram series m2wsgi writes; the first
/// one's timestamp, if any, is kept.
///
/// A sample is put in the family of its own name, else (for `_bucket`, `_sum`, `_count`) in the
/// histogram or summary family it belongs to, else in an untyped family of its own. Other
/// comments, blank lines and lines that are not samples are left out. The output ends with a
/// newline.
///
/// ```
/// use m2wsgi::wsgi::metrics::merge;
///
/// let a = "# HELP up Whether it is up.\n# TYPE up gauge\nup{worker=\"0\"} 1\n";
/// let b = "# HELP up Whether it is up.\n# TYPE up gauge\nup{worker=\"1\"} 1\n";
/// assert_eq!(
///     merge(&[a, b]),
///     "# HELP up Whether it is up.\n# TYPE up gauge\nup{worker=\"0\"} 1\nup{worker=\"1\"} 1\n"
/// );
/// ```
pub fn merge(texts: &[&str]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: HashMap<&str, Family<'_>> = HashMap::new();
    // series -> (family, index in its samples)
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();

    for text in texts {
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(rest) = line.strip_prefix('#') {
                let rest = rest.trim_start();
                let (word, rest) = split_word(rest);
                if word != "HELP" && word != "TYPE" {
                    continue;
                }
                let (name, rest) = split_word(rest);
                if name.is_empty() {
                    continue;
                }
                let fam = families.entry(name).or_insert_with(|| {
                    order.push(name);
                    Family::default()
                });
                if word == "HELP" {
                    fam.help.get_or_insert(rest);
                } else if !rest.is_empty() {
                    fam.kind.get_or_insert(rest.trim());
                }
                continue;
            }
            let Some(s) = parse_sample(line) else {
                continue;
            };
            let family = family_of(&families, s.name);
            if let Some(&(fam, i)) = seen.get(s.series) {
                let old = &mut families.get_mut(fam).expect("known family").samples[i];
                old.value = Value::Sum(value_of(&old.value) + parse_value(s.value));
                continue;
            }
            let fam = families.entry(family).or_insert_with(|| {
                order.push(family);
                Family::default()
            });
            seen.insert(s.series, (family, fam.samples.len()));
            fam.samples.push(Sample {
                series: s.series,
                value: Value::Text(s.value),
                timestamp: s.timestamp,
            });
        }
    }

    let mut out = String::new();
    for name in order {
        let fam = &families[name];
        if let Some(help) = fam.help {
            out.push_str("# HELP ");
            out.push_str(name);
            if !help.is_empty() {
                out.push(' ');
                out.push_str(help);
            }
            out.push('\n');
        }
        if let Some(kind) = fam.kind {
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        }
        for s in &fam.samples {
            out.push_str(s.series);
            out.push(' ');
            match s.value {
                Value::Text(t) => out.push_str(t),
                Value::Sum(v) => out.push_str(&format_value(v)),
            }
            out.push_str(s.timestamp);
            out.push('\n');
        }
    }
    out
}

/// The first word of `s` (up to a space or tab) and the rest after the blanks that follow it.
fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

struct Parsed<'a> {
    name: &'a str,
    series: &'a str,
    value: &'a str,
    timestamp: &'a str,
}

/// `name{labels} value [timestamp]`; `None` for anything else.
fn parse_sample(line: &str) -> Option<Parsed<'_>> {
    let line = line.trim_start_matches([' ', '\t']);
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut series_end = name_end;
    if line[name_end..].starts_with('{') {
        series_end = name_end + labels_end(&line[name_end..])?;
    }
    let series = &line[..series_end];
    let rest = line[series_end..].trim_start_matches([' ', '\t']);
    if rest.is_empty() {
        return None;
    }
    let (value, ts) = match rest.find([' ', '\t']) {
        Some(i) => (&rest[..i], rest[i..].trim_end()),
        None => (rest, ""),
    };
    let ts_ok = ts.is_empty() || ts.trim_start().parse::<i64>().is_ok();
    if !ts_ok || value_parses(value).is_none() {
        return None;
    }
    let timestamp = if ts.is_empty() { "" } else { ts };
    Some(Parsed {
        name,
        series,
        value,
        timestamp,
    })
}

/// The length of the `{...}` that starts `s`, quotes and escapes in label values respected.
fn labels_end(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if in_quotes {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_quotes = false,
                _ => {}
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c == '}' {
            return Some(i + 1);
        }
    }
    None
}

/// The family a sample named `name` belongs to.
fn family_of<'a>(families: &HashMap<&'a str, Family<'a>>, name: &'a str) -> &'a str {
    if families.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((&base, fam)) = families.get_key_value(base) {
                let kind = fam.kind.unwrap_or("");
                if kind == "histogram" || (kind == "summary" && suffix != "_bucket") {
                    return base;
                }
            }
        }
    }
    name
}

fn value_parses(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

fn parse_value(v: &str) -> f64 {
    value_parses(v).unwrap_or(f64::NAN)
}

fn value_of(v: &Value<'_>) -> f64 {
    match v {
        Value::Text(t) => parse_value(t),
        Value::Sum(f) => *f,
    }
}

/// A sum written back: an integer without a fraction when it is one, else the shortest text
/// that reads back as the same number.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
