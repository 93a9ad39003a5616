//! PostgreSQL's `pg_snapshot` (`xmin:xmax:xip,…`): which transactions had
//! committed when it was taken. The feed's positions are snapshots, because
//! transaction ids are not commit order: a transaction that commits after one
//! with a higher id is still "not visible" in a snapshot taken between the two
//! commits, so the next read between two snapshots finds it.

use std::{fmt, str::FromStr};

/// A snapshot as `pg_current_snapshot()` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction below it had ended.
    xmin: u64,
    /// Every transaction at or above it had not started.
    xmax: u64,
    /// Between the two: the ones still running (sorted, as PostgreSQL prints them).
    running: Vec<u64>,
}

/// Text that is no `pg_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a snapshot")]
pub struct NotASnapshot;

impl Snapshot {
    /// Whether transaction `xid` had committed (or aborted: it then left no
    /// rows) in this snapshot, as `pg_visible_in_snapshot` decides it.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && self.running.binary_search(&xid).is_err())
    }

    /// Whether every transaction this snapshot sees, `later` sees too: true of
    /// any snapshot taken after this one.
    pub fn is_within(&self, later: &Snapshot) -> bool {
        if self.xmax > later.xmax {
            // Those from later's xmax on are unseen by later; this one must not see any.
            let unseen_by_later = later.xmax..self.xmax;
            if unseen_by_later.clone().any(|xid| self.sees(xid)) {
                return false;
            }
        }
        later
            .running
            .iter()
            .all(|&xid| xid >= self.xmax || !self.sees(xid))
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, xid) in self.running.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{xid}")?;
        }
        Ok(())
    }
}

impl FromStr for Snapshot {
    type Err = NotASnapshot;

    fn from_str(text: &str) -> Result<Self, NotASnapshot> {
        let mut parts = text.splitn(3, ':');
        let mut number = || -> Result<u64, NotASnapshot> {
            parts
                .next()
                .and_then(|part| part.parse().ok())
                .ok_or(NotASnapshot)
        };
        let (xmin, xmax) = (number()?, number()?);
        let running: Vec<u64> = match parts.next() {
            Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|xid| xid.parse().map_err(|_| NotASnapshot))
                .collect::<Result<_, _>>()?,
            None => return Err(NotASnapshot),
        };
        let ordered = running.windows(2).all(|pair| pair[0] < pair[1]);
        let in_range = running.iter().all(|xid| (xmin..xmax).contains(xid));
        // A range too wide to walk in `is_within` is no snapshot a server made.
        if xmin > xmax || xmax - xmin > 1 << 31 || !ordered || !in_range {
            return Err(NotASnapshot);
        }
        Ok(Self {
            xmin,
            xmax,
            running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(text: &str) -> Snapshot {
        text.parse().unwrap()
    }

    #[test]
    fn visibility_follows_postgres() {
        let s = snapshot("10:20:12,15");
        assert!(s.sees(9));
        assert!(s.sees(11));
        assert!(!s.sees(12));
        assert!(!s.sees(15));
        assert!(s.sees(19));
        assert!(!s.sees(20));
        assert_eq!(s.to_string(), "10:20:12,15");
        assert_eq!(snapshot("5:5:").to_string(), "5:5:");
    }

    #[test]
    fn a_later_snapshot_contains_an_earlier_one() {
        let earlier = snapshot("10:20:12,15");
        assert!(earlier.is_within(&snapshot("10:25:12")));
        assert!(earlier.is_within(&snapshot("21:21:")));
        assert!(earlier.is_within(&earlier));
        // 11 committed in `earlier`, still running in the other: not later.
        assert!(!earlier.is_within(&snapshot("11:22:11,12")));
        // 19 committed in `earlier`, unstarted in the other.
        assert!(!earlier.is_within(&snapshot("10:19:12,15")));
        // Unseen above the other's xmax is fine.
        assert!(snapshot("10:20:12,18,19").is_within(&snapshot("10:18:12")));
    }

    #[test]
    fn malformed_snapshots_are_refused() {
        for text in [
            "",
            "1",
            "1:2",
            "a:b:",
            "3:2:",
            "1:5:7",
            "1:5:3,2",
            "0:99999999999:",
        ] {
            assert_eq!(text.parse::<Snapshot>(), Err(NotASnapshot), "{text}");
        }
    }
}
