//! Encoding of rows in PostgreSQL's COPY text format (tab-separated, `\N` for NULL).

use crate::validate::{Customer, RowError};
use std::io::Write;
use uuid::Uuid;

fn push_text(buf: &mut Vec<u8>, value: Option<&str>) {
    let Some(s) = value else {
        buf.extend_from_slice(b"\\N");
        return;
    };
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.push(b),
        }
    }
}

/// Columns: email, first_name, last_name, phone, city, then `tail` (already encoded).
pub fn push_customer(buf: &mut Vec<u8>, c: &Customer, tail: &[u8]) {
    push_text(buf, Some(c.email()));
    for i in 0..4 {
        buf.push(b'\t');
        push_text(buf, c.field(i));
    }
    buf.extend_from_slice(tail);
    buf.push(b'\t');
    // Formatted into the buffer, without a String per row.
    let _ = write!(buf, "{}", c.line);
    buf.push(b'\n');
}

/// Columns: job_id, line, code, message, email, first_name, last_name, phone, city.
pub fn push_error(buf: &mut Vec<u8>, job_id: Uuid, e: &RowError) {
    buf.extend_from_slice(job_id.to_string().as_bytes());
    buf.push(b'\t');
    buf.extend_from_slice(e.line.to_string().as_bytes());
    buf.push(b'\t');
    push_text(buf, Some(e.code.as_str()));
    buf.push(b'\t');
    push_text(buf, Some(&e.message));
    for f in &e.fields {
        buf.push(b'\t');
        push_text(buf, f.as_deref());
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials_and_nulls() {
        let mut buf = vec![];
        push_text(&mut buf, Some("a\tb\\c\nd\re"));
        buf.push(b'|');
        push_text(&mut buf, None);
        assert_eq!(buf, b"a\\tb\\\\c\\nd\\re|\\N");
    }
}
