use std::fmt;
use std::str::FromStr;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// A size in bytes written as `5G`, `2Gi`, `1000M` or `512Mi`. `G` and `Gi`
/// both mean GiB; `M` and `Mi` both mean MiB (disk sizes, as `truncate` and
/// `resize2fs` read them).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {0:?}: expected a positive whole number followed by G, Gi, M or Mi (e.g. 5G, 2Gi, 1000M, 512Mi)"
)]
pub struct InvalidByteSize(pub String);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * MIB)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n * GIB)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Whole MiB, rounded down.
    pub fn as_mib(self) -> u64 {
        self.0 / MIB
    }
}

impl FromStr for ByteSize {
    type Err = InvalidByteSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidByteSize(s.to_owned());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit {
            "G" | "Gi" => GIB,
            "M" | "Mi" => MIB,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(bad());
        }
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(GIB) {
            write!(f, "{}Gi", self.0 / GIB)
        } else if self.0.is_multiple_of(MIB) {
            write!(f, "{}Mi", self.0 / MIB)
        } else {
            write!(f, "{}B", self.0)
        }
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!("5G".parse::<ByteSize>().unwrap(), ByteSize::gib(5));
        assert_eq!("2Gi".parse::<ByteSize>().unwrap(), ByteSize::gib(2));
        assert_eq!("1000M".parse::<ByteSize>().unwrap(), ByteSize::mib(1000));
        assert_eq!("512Mi".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "5",
            "G",
            "0G",
            "5GB",
            "5g",
            "1.5G",
            "-1G",
            "5 T",
            "99999999999999999999G",
        ] {
            let err = bad.parse::<ByteSize>().unwrap_err();
            assert!(err.to_string().contains("5G, 2Gi, 1000M, 512Mi"), "{err}");
        }
    }
}
