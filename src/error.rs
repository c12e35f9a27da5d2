//! Errors of the configuration.

use std::fmt;

/// A comment text was rejected: it contains a CR or LF, which would end the comment line and
/// let the rest be read as a field (I5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidComment(());

impl InvalidComment {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for InvalidComment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("comment text contains a line break")
    }
}

impl std::error::Error for InvalidComment {}

/// Checks a comment text for line breaks.
pub(crate) fn check_comment(text: &str) -> Result<(), InvalidComment> {
    if memchr::memchr2(b'\r', b'\n', text.as_bytes()).is_some() {
        Err(InvalidComment::new())
    } else {
        Ok(())
    }
}
