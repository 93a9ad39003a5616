//! A watcher's cursor: where its stream stands, as opaque text.
//!
//! Events are read in batches: those of the transactions committed between two
//! snapshots, `after` and `upto`, in [`EventKey`] order. A cursor says that
//! everything `after` sees was delivered, and of the batch up to `upto`, every
//! event up to `last`. At the end of a batch it is just `upto`.

use std::str::FromStr;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::snapshot::Snapshot;

/// Where an event stands within its batch: by the time its row was written,
/// then by outbox and row. Two changes to one post, the second waiting for the
/// first's lock, are in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    /// `event_time`, in microseconds since the Unix epoch.
    pub micros: i64,
    pub source: Source,
    pub seq: i64,
}

/// Which outbox an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Posts = 0,
    Likes = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub after: Snapshot,
    pub upto: Snapshot,
    /// The last event delivered of the batch from `after` to `upto`; `None`
    /// when the whole batch was (then `after` equals `upto`).
    pub last: Option<EventKey>,
}

/// A cursor this service did not issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor of this service")]
pub struct NotACursor;

const VERSION: &str = "1";

impl Cursor {
    /// Everything `position` sees, and nothing more.
    pub fn at(position: Snapshot) -> Self {
        Self {
            after: position.clone(),
            upto: position,
            last: None,
        }
    }

    /// Within the batch from `after` to `upto`, right after `last`.
    pub fn within(after: &Snapshot, upto: &Snapshot, last: EventKey) -> Self {
        Self {
            after: after.clone(),
            upto: upto.clone(),
            last: Some(last),
        }
    }

    pub fn encode(&self) -> String {
        let text = match self.last {
            None => format!("{VERSION}~{}", self.upto),
            Some(key) => format!(
                "{VERSION}~{}~{}~{}.{}.{}",
                self.after, self.upto, key.micros, key.source as u8, key.seq
            ),
        };
        URL_SAFE_NO_PAD.encode(text)
    }
}

impl FromStr for Cursor {
    type Err = NotACursor;

    fn from_str(cursor: &str) -> Result<Self, NotACursor> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| NotACursor)?;
        let text = String::from_utf8(bytes).map_err(|_| NotACursor)?;
        let parts: Vec<&str> = text.split('~').collect();
        let snapshot = |text: &str| text.parse::<Snapshot>().map_err(|_| NotACursor);
        match parts.as_slice() {
            [VERSION, upto] => Ok(Self::at(snapshot(upto)?)),
            [VERSION, after, upto, key] => {
                let (after, upto) = (snapshot(after)?, snapshot(upto)?);
                if !after.is_within(&upto) {
                    return Err(NotACursor);
                }
                Ok(Self::within(&after, &upto, parse_key(key)?))
            }
            _ => Err(NotACursor),
        }
    }
}

fn parse_key(text: &str) -> Result<EventKey, NotACursor> {
    let mut parts = text.split('.');
    let mut number = || -> Result<i64, NotACursor> {
        parts
            .next()
            .and_then(|part| part.parse().ok())
            .ok_or(NotACursor)
    };
    let (micros, source, seq) = (number()?, number()?, number()?);
    let source = match source {
        0 => Source::Posts,
        1 => Source::Likes,
        _ => return Err(NotACursor),
    };
    if parts.next().is_some() {
        return Err(NotACursor);
    }
    Ok(EventKey {
        micros,
        source,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_travel_as_opaque_text() {
        let after: Snapshot = "10:20:12,15".parse().unwrap();
        let upto: Snapshot = "15:22:".parse().unwrap();
        let key = EventKey {
            micros: 1_700_000_000_000_000,
            source: Source::Likes,
            seq: 42,
        };
        for cursor in [Cursor::at(upto.clone()), Cursor::within(&after, &upto, key)] {
            let text = cursor.encode();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(text.parse::<Cursor>(), Ok(cursor));
        }
    }

    #[test]
    fn foreign_cursors_are_refused() {
        let encode = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for text in [
            "".to_owned(),
            "%%%".to_owned(),
            encode("2~5:5:"),
            encode("1~5:5:~6:6:"),
            encode("1~5:5:~6:6:~1.2.3"),
            encode("1~5:5:~6:6:~1.0.3.4"),
            // `after` later than `upto`.
            encode("1~9:9:~6:6:~1.0.3"),
        ] {
            assert_eq!(text.parse::<Cursor>(), Err(NotACursor), "{text}");
        }
    }
}
