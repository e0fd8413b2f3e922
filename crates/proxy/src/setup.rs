//! What `kubelan proxy` checks before it listens: where the credentials come from
//! (`--auth`, `--auth-file`, [`AUTH_ENV`]), that a credentials file is private, and that a
//! proxy reachable from other machines is never open.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::{Credentials, CredentialsError, file_mode_problem};

/// The environment variable holding `user:password` for `kubelan proxy`.
pub const AUTH_ENV: &str = "KUBELAN_PROXY_AUTH";

/// Largest credentials file read (the first line is all that counts).
const AUTH_FILE_MAX: u64 = 64 * 1024;

/// Why the proxy does not start; each says the fix. The password is never in a message.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// [`AUTH_ENV`] does not hold `user:password`.
    #[error("{AUTH_ENV} is not usable")]
    EnvUnusable(#[source] CredentialsError),
    /// [`AUTH_ENV`] is not UTF-8.
    #[error("{AUTH_ENV} is not valid UTF-8: set it to user:password")]
    EnvNotUnicode,
    /// The credentials file cannot be opened.
    #[error("cannot open the proxy credentials file {}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Its permissions cannot be read.
    #[error("cannot read the permissions of {}", .path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Others could read it.
    #[error(
        "refusing the proxy credentials file {shown}: {why}, so others could read the password; run `chmod 600 {shown}`",
        shown = .path.display()
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Who could read it.
        why: String,
    },
    /// It is not text.
    #[error("cannot read {} as text", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Its first line is not `user:password`.
    #[error("the proxy credentials file {} is not usable", .path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CredentialsError,
    },
    /// Reachable from other machines without credentials.
    #[error(
        "{listen} is reachable from other machines: refusing to start an open proxy into the cluster; add --auth-file FILE (a chmod 600 file holding user:password) or set {AUTH_ENV}=user:password"
    )]
    OpenProxy {
        /// The listen address.
        listen: SocketAddr,
    },
    /// Not loopback without `--allow-lan`.
    #[error(
        "{listen} is not a loopback address: pass --allow-lan (with --auth-file) to share the proxy"
    )]
    NotLoopback {
        /// The listen address.
        listen: SocketAddr,
    },
}

/// The proxy's credentials, from `auth` (`--auth`), `auth_file` or `env` (the value of
/// [`AUTH_ENV`]), in that order, and whether they came from the command line.
///
/// # Errors
/// The file or the variable does not give usable credentials.
pub fn credentials(
    auth: Option<&Credentials>,
    auth_file: Option<&Path>,
    env: Result<String, std::env::VarError>,
) -> Result<Option<(Credentials, bool)>, SetupError> {
    if let Some(c) = auth {
        return Ok(Some((c.clone(), true)));
    }
    if let Some(path) = auth_file {
        return read_auth_file(path).map(|c| Some((c, false)));
    }
    match env {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => v
            .parse()
            .map(|c| Some((c, false)))
            .map_err(SetupError::EnvUnusable),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(SetupError::EnvNotUnicode),
    }
}

/// Reads `user:password` from the first line of `path`, refusing a file other users
/// could read.
///
/// # Errors
/// The file cannot be read, is not private, or holds no `user:password`.
pub fn read_auth_file(path: &Path) -> Result<Credentials, SetupError> {
    let p = || path.to_path_buf();
    let file =
        std::fs::File::open(path).map_err(|source| SetupError::Open { path: p(), source })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file
            .metadata()
            .map_err(|source| SetupError::Metadata { path: p(), source })?
            .permissions()
            .mode();
        if let Some(why) = file_mode_problem(mode) {
            return Err(SetupError::NotPrivate { path: p(), why });
        }
    }
    let mut text = String::new();
    file.take(AUTH_FILE_MAX)
        .read_to_string(&mut text)
        .map_err(|source| SetupError::Read { path: p(), source })?;
    Credentials::from_file_text(&text).map_err(|source| SetupError::Unusable { path: p(), source })
}

/// Refuses an open proxy reachable from other machines, and a LAN address without
/// `allow_lan`; `true` when the password came from the command line on such an address
/// (the caller warns that `ps` shows it).
///
/// # Errors
/// [`SetupError::OpenProxy`] or [`SetupError::NotLoopback`].
pub fn check_listen(
    listen: SocketAddr,
    credentials: Option<&(Credentials, bool)>,
    allow_lan: bool,
) -> Result<bool, SetupError> {
    if listen.ip().is_loopback() {
        return Ok(false);
    }
    if credentials.is_none() {
        return Err(SetupError::OpenProxy { listen });
    }
    if !allow_lan {
        return Err(SetupError::NotLoopback { listen });
    }
    Ok(matches!(credentials, Some((_, true))))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// The error and its causes, as the CLI prints them.
    fn chain(e: &SetupError) -> String {
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(e);
        while let Some(c) = cur {
            s.push_str(&format!(": {c}"));
            cur = c.source();
        }
        s
    }

    /// A credentials file with `text` and `mode` in a fresh temporary directory.
    fn auth_file(tag: &str, text: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubelan-auth-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn auth_files_must_be_private_and_hold_user_password() {
        let good = auth_file("good", "alice:s3cret\n", 0o600);
        let c = read_auth_file(&good).unwrap();
        assert_eq!(c.username(), "alice");
        assert!(!format!("{c:?}").contains("s3cret"));

        let open = auth_file("open", "alice:s3cret\n", 0o644);
        let e = chain(&read_auth_file(&open).unwrap_err());
        assert!(
            e.contains("group and others (mode 0644)")
                && e.contains(&format!("chmod 600 {}", open.display())),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");

        let group = auth_file("group", "alice:s3cret\n", 0o640);
        let e = chain(&read_auth_file(&group).unwrap_err());
        assert!(e.contains("its group") && e.contains("chmod 600"), "{e}");

        let empty = auth_file("empty", "\n", 0o600);
        let e = chain(&read_auth_file(&empty).unwrap_err());
        assert!(e.contains("first line must be user:password"), "{e}");

        let e = chain(&read_auth_file(Path::new("/nonexistent/kubelan-auth")).unwrap_err());
        assert!(
            e.contains("cannot open the proxy credentials file /nonexistent/kubelan-auth"),
            "{e}"
        );
        for p in [good, open, group, empty] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
    }

    #[test]
    fn credentials_come_from_the_flag_the_file_or_the_environment() {
        let flag: Credentials = "bob:pw".parse().unwrap();
        let (c, cli) = credentials(Some(&flag), None, Ok("x:y".into()))
            .unwrap()
            .unwrap();
        assert_eq!((c.username(), cli), ("bob", true));
        let (c, cli) = credentials(None, None, Ok("x:y".into())).unwrap().unwrap();
        assert_eq!((c.username(), cli), ("x", false));
        assert!(
            credentials(None, None, Ok(String::new()))
                .unwrap()
                .is_none()
        );
        assert!(
            credentials(None, None, Err(std::env::VarError::NotPresent))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            credentials(None, None, Ok("nocolon".into())),
            Err(SetupError::EnvUnusable(_))
        ));
    }

    #[test]
    fn a_proxy_others_reach_is_never_open() {
        let lan: SocketAddr = "0.0.0.0:1080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:1080".parse().unwrap();
        let from_flag = ("a:b".parse().unwrap(), true);
        let from_file = ("a:b".parse().unwrap(), false);
        assert!(!check_listen(local, None, false).unwrap());
        assert!(matches!(
            check_listen(lan, None, true),
            Err(SetupError::OpenProxy { .. })
        ));
        assert!(matches!(
            check_listen(lan, Some(&from_file), false),
            Err(SetupError::NotLoopback { .. })
        ));
        assert!(!check_listen(lan, Some(&from_file), true).unwrap());
        assert!(check_listen(lan, Some(&from_flag), true).unwrap());
    }
}
