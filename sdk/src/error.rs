use std::fmt;

/// Why a processor could not handle a record.
///
/// Any error type converts into it with `?`, so plugin code can use the
/// errors of the libraries it calls. The message reaches the pipeline's
/// status and logs; the pipeline's error policy decides what happens to the
/// record.
///
/// ```
/// use eddy_sdk::Error;
///
/// fn parse(bytes: &[u8]) -> Result<u32, Error> {
///     let text = std::str::from_utf8(bytes)?;
///     text.trim().parse::<u32>().map_err(|e| Error::new(format!("not a count: {e}")))
/// }
/// assert!(parse(b"12").is_ok());
/// assert_eq!(parse(b"x").unwrap_err().message(), "not a count: invalid digit found in string");
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Self::new(error.to_string())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `Result` with eddy's [`Error`] as the default error type.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;
