//! Proxy credentials (`--auth-file`, `KUBELAN_PROXY_AUTH`, `--auth user:password`) and
//! their constant-time check.

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
    /// A credentials file whose first line is empty (or an empty file).
    #[error("the first line must be user:password, but it is empty")]
    EmptyFile,
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

    /// The password (for the fuzz checks; never logged).
    #[cfg(any(fuzzing, feature = "fuzz"))]
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// Credentials from the text of a credentials file: its first line is
    /// `user:password` (a trailing `\r` is dropped; nothing else is trimmed, so a password
    /// may start or end with spaces). Later lines are ignored.
    ///
    /// # Errors
    ///
    /// [`CredentialsError::EmptyFile`] for an empty first line, else as [`str::parse`].
    pub fn from_file_text(text: &str) -> Result<Credentials, CredentialsError> {
        let line = text.split('\n').next().unwrap_or("");
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return Err(CredentialsError::EmptyFile);
        }
        line.parse()
    }

    /// Whether `username`/`password` match, in time that depends on neither their
    /// lengths nor the position of the first differing byte.
    pub(crate) fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        // `&`, not `&&`: always compare both.
        ct_eq(self.username.as_bytes(), username) & ct_eq(self.password.as_bytes(), password)
    }

    /// Checks an HTTP `Proxy-Authorization` value (`Basic base64(user:password)`).
    pub(crate) fn matches_basic(&self, header: &[u8]) -> bool {
        let Some(decoded) = decode_basic(header) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => self.matches(&decoded[..i], &decoded[i + 1..]),
            None => false,
        }
    }
}

/// The `user:password` bytes of a `Basic` authorization value, if it is one.
fn decode_basic(header: &[u8]) -> Option<Vec<u8>> {
    let rest = header
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case(b"basic "))
        .and_then(|_| header.get(6..))?;
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()
}

/// The username of a `Basic` authorization value, for the log (empty when it does not
/// decode).
pub(crate) fn basic_username(header: &[u8]) -> Vec<u8> {
    let mut decoded = decode_basic(header).unwrap_or_default();
    decoded.truncate(
        decoded
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(decoded.len()),
    );
    decoded
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

/// Bytes [`ct_eq`] always compares: the longest username or password there is.
const CT_LEN: usize = 255;

/// Equality of two byte strings whose running time is the same for every input: it
/// always walks [`CT_LEN`] bytes (so neither the secret's length nor the first
/// differing byte shows) and folds the length difference in without a branch. Inputs
/// longer than [`CT_LEN`] never equal a credential, whose parts are at most that long.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64 | u64::from(a.len() > CT_LEN);
    for i in 0..CT_LEN {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        // black_box keeps the optimiser from turning the fold into an early exit.
        diff |= u64::from(std::hint::black_box(x ^ y));
    }
    std::hint::black_box(diff) == 0
}

/// Why a credentials file may not be used, from its Unix permission bits: anyone else on
/// the machine could read (or replace) the password. `None` when the mode is private.
pub fn file_mode_problem(mode: u32) -> Option<String> {
    let open = mode & 0o077;
    (open != 0).then(|| {
        let who = match (open & 0o070 != 0, open & 0o007 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "other users",
        };
        format!("it is accessible to {who} (mode {:04o})", mode & 0o7777)
    })
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
    fn ct_eq_compares_everything() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(
            !ct_eq(b"abc", b"abc\0"),
            "a zero byte past the end still counts"
        );
        assert!(!ct_eq(b"abc\0", b"abc"));
        assert!(!ct_eq(b"", b"\0"));
        let long = [b'x'; 300];
        assert!(!ct_eq(&long, &long), "longer than any credential");
        assert!(ct_eq(&long[..255], &long[..255]));
        assert!(!ct_eq(&long[..255], &long[..256]));
        // Length differences far apart must not cancel out in the fold.
        assert!(!ct_eq(&[0u8; 1], &[0u8; 257]));
    }

    #[test]
    fn credentials_files() {
        let c = Credentials::from_file_text("alice: pw with spaces \r\nignored\n").unwrap();
        assert!(c.matches(b"alice", b" pw with spaces "));
        for text in ["alice:pw", "alice:pw\r", "alice:pw\n"] {
            let c = Credentials::from_file_text(text).unwrap();
            assert!(c.matches(b"alice", b"pw"), "{text:?}");
        }
        for bad in ["", "\n", "\nalice:pw\n", "\r\n"] {
            assert_eq!(
                Credentials::from_file_text(bad),
                Err(CredentialsError::EmptyFile),
                "{bad:?}"
            );
        }
        assert_eq!(
            Credentials::from_file_text("alice\n"),
            Err(CredentialsError::MissingColon)
        );
        assert_eq!(file_mode_problem(0o100600), None);
        assert_eq!(file_mode_problem(0o400), None);
        assert_eq!(
            file_mode_problem(0o100644).unwrap(),
            "it is accessible to group and others (mode 0644)"
        );
        assert_eq!(
            file_mode_problem(0o640).unwrap(),
            "it is accessible to its group (mode 0640)"
        );
        assert_eq!(
            file_mode_problem(0o602).unwrap(),
            "it is accessible to other users (mode 0602)"
        );
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
        assert_eq!(
            basic_username(format!("Basic {wrong}").as_bytes()),
            b"alice"
        );
        assert_eq!(basic_username(b"Basic !!!"), b"");
    }
}
