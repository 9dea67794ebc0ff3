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

/// A header value as text: UTF-8 when its bytes are UTF-8, else ISO-8859-1 (HTTP's historical
/// charset for `obs-text`), so `filename="résumé.pdf"` reads whichever way the client encoded it.
pub fn header_value_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Decodes an RFC 8187 extended value, `charset'language'percent-encoded`, in UTF-8 or
/// ISO-8859-1.
fn ext_value(value: &str) -> Result<String, &'static str> {
    let mut fields = value.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(encoded)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("filename* must be charset'language'value, e.g. UTF-8''na%C3%AFve.txt");
    };
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
            let byte =
                hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("broken %-escape in filename*")?;
            bytes.push(byte);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    match charset.to_ascii_lowercase().as_str() {
        "utf-8" => String::from_utf8(bytes).map_err(|_| "filename* is not valid UTF-8"),
        "iso-8859-1" => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        _ => Err("filename* charset must be UTF-8 or ISO-8859-1"),
    }
}

/// The filename of a `Content-Disposition` value, if it names one: `filename*` (RFC 8187, any
/// UTF-8 name) when given, else `filename`. Kept as sent; see [`safe_filename`] for using it.
pub fn disposition_filename(value: &str) -> Result<Option<String>, String> {
    let invalid = |why: &str| format!("invalid Content-Disposition {value:?}: {why}");
    let parts = split_params(value).ok_or_else(|| invalid("unbalanced quotes"))?;
    if !is_token(parts[0]) {
        return Err(invalid("expected a disposition type such as attachment"));
    }
    let (mut plain, mut extended) = (None, None);
    for part in &parts[1..] {
        let (name, value) = param(part).ok_or_else(|| invalid("malformed parameter"))?;
        match name.as_str() {
            "filename" => plain = Some(value),
            "filename*" => extended = Some(ext_value(&value).map_err(invalid)?),
            _ => {}
        }
    }
    match extended.or(plain) {
        Some(name) if name.is_empty() || name.chars().any(char::is_control) => {
            Err(invalid("empty filename or control characters"))
        }
        other => Ok(other),
    }
}

/// The filename of a `Content-Disposition` header as received (raw bytes, read by
/// [`header_value_text`]).
pub fn disposition_header_filename(value: &[u8]) -> Result<Option<String>, String> {
    disposition_filename(&header_value_text(value))
}

/// The longest file name kept by [`safe_filename`], in bytes (most file systems' limit).
const FILENAME_MAX_BYTES: usize = 255;

/// A stored filename made safe to use as a file's name: its last path component, without control
/// characters, surrounding spaces or trailing dots, at most 255 bytes; `None` when nothing usable
/// is left (`..`, `/`, an empty name). Manifests come from anyone: every consumer (download
/// headers, the CLI choosing an output path) names files with this, never with the raw name.
pub fn safe_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let mut cleaned = cleaned.trim().trim_end_matches(['.', ' ']).to_string();
    if cleaned.len() > FILENAME_MAX_BYTES {
        let mut end = FILENAME_MAX_BYTES;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
    }
    (!cleaned.is_empty()).then_some(cleaned)
}

/// `attachment; filename="..."; filename*=UTF-8''...` for a stored filename (RFC 6266): its safe
/// base name, with an ASCII fallback (other characters as `_`) for clients without RFC 8187.
pub fn disposition_for(filename: &str) -> Option<String> {
    let name = safe_filename(filename)?;
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect();
    let mut encoded = String::new();
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Some(format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"))
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
    }

    #[test]
    fn extended_filenames() {
        // RFC 8187 names, preferred over the plain parameter (RFC 6266 section 4.3).
        for (value, want) in [
            ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
            (
                "attachment; filename=\"EURO rates.txt\"; filename*=utf-8''%E2%82%AC%20rates.txt",
                "€ rates.txt",
            ),
            ("attachment; filename*=UTF-8'en'plain.txt", "plain.txt"),
            ("attachment; filename*=ISO-8859-1''r%E9sum%E9.pdf", "résumé.pdf"),
            ("attachment; filename=\"résumé.pdf\"", "résumé.pdf"),
        ] {
            assert_eq!(disposition_filename(value), Ok(Some(want.to_string())), "{value}");
        }
        for bad in [
            "attachment; filename*=%E2%82%AC.txt",      // no charset
            "attachment; filename*=UTF-8''%E2%82.txt",  // broken UTF-8
            "attachment; filename*=UTF-8''%G1.txt",     // broken escape
            "attachment; filename*=KOI8-R''x.txt",      // unsupported charset
            "attachment; filename*=UTF-8''%0Aevil.txt", // a control character
        ] {
            assert!(disposition_filename(bad).is_err(), "{bad:?} accepted");
        }
        // Raw header bytes: UTF-8 when valid, else ISO-8859-1.
        assert_eq!(header_value_text("r\u{e9}sum\u{e9}".as_bytes()), "résumé");
        assert_eq!(header_value_text(b"r\xe9sum\xe9"), "résumé");
    }

    #[test]
    fn stored_names_are_used_only_as_safe_base_names() {
        for (stored, want) in [
            ("../../etc/passwd", Some("passwd")),
            ("C:\\Windows\\system.ini", Some("system.ini")),
            ("dir/", None),
            ("..", None),
            ("/", None),
            ("  spaced.txt  ", Some("spaced.txt")),
            ("trailing...", Some("trailing")),
            ("bell\u{7}.txt", Some("bell.txt")),
            (".hidden", Some(".hidden")),
            ("€ rates.txt", Some("€ rates.txt")),
        ] {
            assert_eq!(safe_filename(stored).as_deref(), want, "{stored:?}");
        }
        let long = "é".repeat(200);
        let kept = safe_filename(&long).unwrap();
        assert!(kept.len() <= 255 && kept.chars().all(|c| c == 'é'), "{} bytes", kept.len());
    }

    #[test]
    fn download_dispositions_carry_both_forms() {
        assert_eq!(
            disposition_for("../€ \"rates\".txt").as_deref(),
            Some(
                "attachment; filename=\"_ \\\"rates\\\".txt\"; filename*=UTF-8''%E2%82%AC%20%22rates%22.txt"
            )
        );
        assert_eq!(disposition_for("../.."), None);
        // What we answer, we read back the same.
        for name in ["plain.txt", "résumé.pdf", "€ rates.txt", "a;b=c.txt", "q\"uote"] {
            let header = disposition_for(name).unwrap();
            assert_eq!(disposition_filename(&header), Ok(Some(name.to_string())), "{header}");
        }
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
