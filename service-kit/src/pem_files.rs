//! The PEM files that TLS settings name (`TLS_*` for listeners, `UPSTREAM_*` for
//! callers): read with errors that name the setting and the file, and followed,
//! so that a file replaced on disk (or SIGHUP) is read again without a restart.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// A file a TLS setting names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    #[error("cannot read {setting} {}: {source}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} {}: {problem}", path.display())]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        problem: String,
    },
}

/// The file `setting` names at `path` holds something unusable.
pub fn invalid(setting: &'static str, path: &Path, problem: impl fmt::Display) -> PemFileError {
    PemFileError::Invalid {
        setting,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|source| PemFileError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// A PEM file as its text and what it holds.
pub struct Pem<T> {
    pub text: Vec<u8>,
    pub parsed: T,
}

/// The certificates in a PEM file: at least one, each valid PEM.
pub fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Pem<Vec<CertificateDer<'static>>>, PemFileError> {
    let text = read(setting, path)?;
    let parsed = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(setting, path, format_args!("not valid PEM: {error}")))?;
    if parsed.is_empty() {
        return Err(invalid(
            setting,
            path,
            "no PEM certificate (BEGIN CERTIFICATE) in it",
        ));
    }
    Ok(Pem { text, parsed })
}

/// The CA certificates in a PEM bundle, each usable as a trust anchor (a bundle
/// with one bad entry would otherwise lose it silently).
pub fn roots(setting: &'static str, path: &Path) -> Result<Pem<RootCertStore>, PemFileError> {
    let Pem { text, parsed } = certificates(setting, path)?;
    let mut roots = RootCertStore::empty();
    for certificate in parsed {
        roots.add(certificate).map_err(|error| {
            invalid(
                setting,
                path,
                format_args!("not a usable CA certificate: {error}"),
            )
        })?;
    }
    Ok(Pem {
        text,
        parsed: roots,
    })
}

/// The unencrypted private key in a PEM file: PKCS#8, PKCS#1 or SEC1.
pub fn private_key(
    setting: &'static str,
    path: &Path,
) -> Result<Pem<PrivateKeyDer<'static>>, PemFileError> {
    let text = read(setting, path)?;
    let parsed = PrivateKeyDer::from_pem_slice(&text).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            setting,
            path,
            "no unencrypted private key (PKCS#8, PKCS#1 or SEC1 PEM) in it",
        ),
        error => invalid(setting, path, format_args!("not valid PEM: {error}")),
    })?;
    Ok(Pem { text, parsed })
}

/// What tells a changed file: its modification time and size, and on Unix which
/// file the path leads to (a Kubernetes secret is updated by swapping a symlink).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

/// Files as they were when noted, to be followed from then on: take the note
/// before reading them, so a change made meanwhile is not missed.
pub struct Followed {
    paths: Vec<PathBuf>,
    stamps: Vec<Stamp>,
}

impl Followed {
    pub fn now<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Self {
        let paths: Vec<PathBuf> = paths.into_iter().map(Path::to_owned).collect();
        let stamps = paths.iter().map(|path| stamp(path)).collect();
        Self { paths, stamps }
    }

    fn changed(&mut self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|path| stamp(path)).collect();
        let changed = now != self.stamps;
        self.stamps = now;
        changed
    }

    /// Looks at the files every `interval`, and, with `on_hangup`, on SIGHUP, and
    /// each time calls `look` with why the files must be read again (`files
    /// changed` or `sighup`), or `None` when they need not be. `look` answers
    /// false once what it reloads is gone, which ends the following. A reading
    /// that fails is `look`'s to report; it is tried again when the files change
    /// again.
    pub async fn follow(
        mut self,
        interval: Duration,
        on_hangup: bool,
        mut look: impl FnMut(Option<&'static str>) -> bool,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        #[cfg(unix)]
        let mut hangups = match on_hangup {
            false => None,
            true => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; tls files are followed by their modification times only");
                })
                .ok(),
        };
        #[cfg(not(unix))]
        let _ = on_hangup;
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let signalled = tokio::select! {
                _ = ticks.tick() => false,
                _ = hangup => true,
            };
            let cause = match (signalled, self.changed()) {
                (true, _) => Some("sighup"),
                (false, true) => Some("files changed"),
                (false, false) => None,
            };
            if !look(cause) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("agora-pem-{}.pem", uuid::Uuid::now_v7()));
        std::fs::write(&path, contents).expect("a temporary file");
        path
    }

    #[test]
    fn a_rewritten_file_counts_as_changed_once() {
        let path = temp_file("one");
        let mut followed = Followed::now([path.as_path()]);
        assert!(!followed.changed(), "nothing happened yet");

        std::fs::write(&path, "another content").expect("rewrite");
        assert!(followed.changed());
        assert!(
            !followed.changed(),
            "noted: a reading that failed is not tried again until the next change"
        );
        std::fs::remove_file(&path).expect("remove");
        assert!(followed.changed(), "a file gone is a change too");
    }

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let text = temp_file("not PEM at all");
        let missing = std::env::temp_dir().join("agora-no-such.pem");
        let cases = [
            (
                certificates("TLS_CERT_FILE", &text).err(),
                "TLS_CERT_FILE",
                &text,
                "no PEM certificate",
            ),
            (
                private_key("UPSTREAM_KEY_FILE", &text).err(),
                "UPSTREAM_KEY_FILE",
                &text,
                "no unencrypted private key",
            ),
            (
                roots("UPSTREAM_CA_FILE", &missing).err(),
                "cannot read UPSTREAM_CA_FILE",
                &missing,
                "",
            ),
        ];
        for (error, setting, path, problem) in cases {
            let message = error.expect("refused").to_string();
            assert!(message.contains(setting), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(problem), "{message}");
        }
        std::fs::remove_file(&text).expect("remove");
    }
}
