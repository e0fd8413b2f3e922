//! Proxy credentials (`--auth user:password`) and their constant-time check.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

/// The username and password clients must present. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

/// Why a `user:password` string is not usable as proxy credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// No `:` between username and password.
    #[error("proxy credentials must look like user:password (no ':' found)")]
    MissingColon,
    /// The username or password is empty.
    #[error("proxy credentials need a non-empty username and password")]
    Empty,
    /// SOCKS5 (RFC 1929) carries at most 255 bytes of each.
    #[error("proxy username and password must be at most 255 bytes each (a SOCKS5 limit)")]
    TooLong,
    /// HTTP Basic auth splits at the first `:`, so the username cannot contain one.
    #[error("proxy username must not contain ':'")]
    ColonInUsername,
}

impl Credentials {
    /// Credentials from a username and a password.
    ///
    /// # Errors
    ///
    /// Either is empty or longer than 255 bytes, or the username contains `:`.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Credentials, CredentialsError> {
        let (username, password) = (username.into(), password.into());
        if username.is_empty() || password.is_empty() {
            return Err(CredentialsError::Empty);
        }
        if username.len() > 255 || password.len() > 255 {
            return Err(CredentialsError::TooLong);
        }
        if username.contains(':') {
            return Err(CredentialsError::ColonInUsername);
        }
        Ok(Credentials { username, password })
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether `username`/`password` match, in time that does not depend on where they
    /// differ.
    pub(crate) fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        // `&`, not `&&`: always compare both.
        ct_eq(self.username.as_bytes(), username) & ct_eq(self.password.as_bytes(), password)
    }

    /// Checks an HTTP `Proxy-Authorization` value (`Basic base64(user:password)`).
    pub(crate) fn matches_basic(&self, header: &[u8]) -> bool {
        let Some(rest) = header
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case(b"basic "))
            .and_then(|_| header.get(6..))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim_ascii())
        else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => self.matches(&decoded[..i], &decoded[i + 1..]),
            None => false,
        }
    }
}

impl FromStr for Credentials {
    type Err = CredentialsError;

    /// Parses `user:password` (the password may contain `:`).
    fn from_str(s: &str) -> Result<Credentials, CredentialsError> {
        let (user, pass) = s.split_once(':').ok_or(CredentialsError::MissingColon)?;
        Credentials::new(user, pass)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Equality whose running time depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let c: Credentials = "alice:s3cr:et".parse().unwrap();
        assert_eq!(c.username(), "alice");
        assert!(c.matches(b"alice", b"s3cr:et"));
        assert!(!c.matches(b"alice", b"s3cr:e"));
        assert!(!c.matches(b"alic", b"s3cr:et"));
        assert!(!c.matches(b"", b""));
        assert!(!format!("{c:?}").contains("s3cr"));
        assert_eq!(
            "nocolon".parse::<Credentials>(),
            Err(CredentialsError::MissingColon)
        );
        assert_eq!(":pw".parse::<Credentials>(), Err(CredentialsError::Empty));
        assert_eq!("u:".parse::<Credentials>(), Err(CredentialsError::Empty));
        let long = format!("u:{}", "x".repeat(256));
        assert_eq!(long.parse::<Credentials>(), Err(CredentialsError::TooLong));
    }

    #[test]
    fn basic_header() {
        let c = Credentials::new("alice", "pw").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pw");
        assert!(c.matches_basic(format!("Basic {b64}").as_bytes()));
        assert!(c.matches_basic(format!("basic {b64} ").as_bytes()));
        assert!(!c.matches_basic(format!("Bearer {b64}").as_bytes()));
        assert!(!c.matches_basic(b"Basic !!!"));
        assert!(!c.matches_basic(b"Basic"));
        let wrong = base64::engine::general_purpose::STANDARD.encode("alice:pW");
        assert!(!c.matches_basic(format!("Basic {wrong}").as_bytes()));
    }
}
