//! The `Email` newtype: trimmed, lower-cased and checked once, so that a value of this type
//! is always a plausible mailbox address (the same rule for sign-up and for imported rows).

use std::fmt;

/// Longest address accepted (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailError {
    Empty,
    TooLong,
    Invalid,
}

impl fmt::Display for EmailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmailError::Empty => "email is empty",
            EmailError::TooLong => "email is longer than 254 characters",
            EmailError::Invalid => "email is not a valid address",
        })
    }
}

impl std::error::Error for EmailError {}

impl Email {
    /// Trims surrounding whitespace, lower-cases, then validates: one `@`, a local part of
    /// 1–64 printable characters without spaces, a domain of dot-separated labels made of
    /// letters, digits and hyphens (not at a label's ends), with at least one dot.
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        // At most one character per byte: only a long value needs counting.
        if trimmed.len() > MAX_EMAIL_LEN && trimmed.chars().count() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let lowered = trimmed.to_lowercase();
        let (local, domain) = lowered.rsplit_once('@').ok_or(EmailError::Invalid)?;
        if local.is_empty()
            || local.len() > MAX_LOCAL_LEN
            || local.contains('@')
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(is_local_char)
        {
            return Err(EmailError::Invalid);
        }
        if !domain.contains('.') || !domain.split('.').all(is_domain_label) {
            return Err(EmailError::Invalid);
        }
        Ok(Email(lowered))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The characters other than letters and digits a local part may hold (RFC 5322 atext, and the dot).
const LOCAL_SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";

fn is_local_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(&(c as u8))
    } else {
        c.is_alphanumeric()
    }
}

fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_alphanumeric() || c == '-')
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            Email::parse("  Ann.Lee@Example.COM \t").unwrap().as_str(),
            "ann.lee@example.com"
        );
    }

    #[test]
    fn accepts_common_addresses() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'neil@example.ie",
            "x_y-z@a-b.example",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn local_characters_are_letters_digits_and_the_rfc_5322_specials() {
        // The ASCII fast path of `is_local_char` says exactly what this does, for every char.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let want = c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
            assert_eq!(is_local_char(c), want, "{c:?}");
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            "a@@b.com",
            "a@-b.com",
            "a@b-.com",
            "a@b..com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@b.com\u{0}",
            "=cmd()@x.com,",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn empty_and_too_long() {
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
        let local65 = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&local65), Err(EmailError::Invalid));
    }
}
