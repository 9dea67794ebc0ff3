//! Parsing the request headers the API honours: `Content-Type`, `Content-Disposition`, `Range`.

use std::ops::Range;

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits `a; b="c;d"; e` at semicolons outside quotes.
fn split_params(value: &str) -> Option<Vec<&str>> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(value[start..].trim());
    Some(parts)
}

/// A `name=value` parameter with a token or quoted-string value (unquoted).
fn param(part: &str) -> Option<(String, String)> {
    let (name, value) = part.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    if !is_token(name) {
        return None;
    }
    let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            out.push(if c == '\\' { chars.next()? } else { c });
        }
        out
    } else if is_token(value) {
        value.to_string()
    } else {
        return None;
    };
    Some((name.to_ascii_lowercase(), value))
}

/// Validates a MIME type (`type/subtype` with optional parameters); returns it trimmed.
pub fn mime_type(value: &str) -> Result<String, String> {
    let invalid = || format!("invalid Content-Type {value:?}: expected type/subtype, e.g. image/png");
    let parts = split_params(value).ok_or_else(invalid)?;
    let (kind, subtype) = parts[0].split_once('/').ok_or_else(invalid)?;
    if !is_token(kind) || !is_token(subtype) || parts[1..].iter().any(|p| param(p).is_none()) {
        return Err(invalid());
    }
    Ok(value.trim().to_string())
}

/// The filename of a `Content-Disposition` value, if it names one.
pub fn disposition_filename(value: &str) -> Result<Option<String>, String> {
    let invalid = |why: &str| format!("invalid Content-Disposition {value:?}: {why}");
    let parts = split_params(value).ok_or_else(|| invalid("unbalanced quotes"))?;
    if !is_token(parts[0]) {
        return Err(invalid("expected a disposition type such as attachment"));
    }
    let mut filename = None;
    for part in &parts[1..] {
        let (name, value) = param(part).ok_or_else(|| invalid("malformed parameter"))?;
        if name == "filename" {
            filename = Some(value);
        }
    }
    match filename {
        Some(name) if name.is_empty() || name.chars().any(char::is_control) => {
            Err(invalid("empty filename or control characters"))
        }
        other => Ok(other),
    }
}

/// `attachment; filename="..."` for a stored filename, escaping quotes and backslashes.
pub fn disposition_for(filename: &str) -> String {
    let escaped: String = filename
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect();
    format!("attachment; filename=\"{escaped}\"")
}

/// What a `Range` header asks of a resource of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: answer with the whole resource (RFC 9110 lets us ignore it).
    Whole,
    /// One satisfiable byte range.
    Part(Range<u64>),
    /// Syntactically valid but outside the resource: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`).
pub fn range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole; // multiple ranges: served whole rather than as multipart
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), parse(first), parse(last)) {
        (true, _, Some(suffix)) if suffix > 0 && size > 0 => {
            RangeRequest::Part(size.saturating_sub(suffix)..size)
        }
        (true, _, Some(_)) => RangeRequest::Unsatisfiable,
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            let end = end.map_or(size, |e| e.saturating_add(1).min(size));
            if start >= size {
                RangeRequest::Unsatisfiable
            } else if end <= start {
                RangeRequest::Whole // last < first: invalid, ignored
            } else {
                RangeRequest::Part(start..end)
            }
        }
        _ => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types() {
        for ok in
            ["image/png", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "a/b; x=\"y;z\""]
        {
            assert_eq!(mime_type(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "",
            "png",
            "image/",
            "/png",
            "image/png; charset",
            "text/plain; =x",
            "ima ge/png",
            "a/b; x=\"open",
        ] {
            assert!(mime_type(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dispositions() {
        // (header value, filename)
        for (value, want) in [
            ("attachment; filename=\"example.png\"", Some("example.png")),
            ("attachment; filename=plain.txt", Some("plain.txt")),
            ("inline", None),
            ("form-data; name=\"file\"; filename=\"a;b.txt\"", Some("a;b.txt")),
            ("attachment; filename=\"q\\\"uote\"", Some("q\"uote")),
        ] {
            assert_eq!(disposition_filename(value), Ok(want.map(String::from)), "{value}");
        }
        for bad in [
            "attachment; filename=\"open",
            "; filename=x",
            "attachment; filename=a b",
            "attachment; filename=\"\"",
        ] {
            assert!(disposition_filename(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(disposition_for("a\"b"), "attachment; filename=\"a\\\"b\"");
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        // (header, size, answer)
        for (value, size, want) in [
            ("bytes=0-9", 100, Part(0..10)),
            ("bytes=90-", 100, Part(90..100)),
            ("bytes=-10", 100, Part(90..100)),
            ("bytes=-500", 100, Part(0..100)), // suffix longer than the resource
            ("bytes=50-1000", 100, Part(50..100)), // end clamped
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-0", 0, Unsatisfiable),
            ("bytes=9-3", 100, Whole),     // invalid: ignored
            ("bytes=0-1,5-6", 100, Whole), // multiple ranges: whole
            ("items=0-1", 100, Whole),     // unknown unit
            ("bytes=x-y", 100, Whole),
        ] {
            assert_eq!(range(value, size), want, "{value} of {size}");
        }
    }
}
