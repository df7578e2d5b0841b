use std::fmt;
use std::str::FromStr;

/// Longest sandbox id accepted. `<port>-<id>` must fit one DNS label (63).
pub const MAX_ID_LEN: usize = 40;
const GENERATED_LEN: usize = 20;

/// A sandbox identifier: 1–40 characters of lowercase ASCII letters and
/// digits. It is a DNS label (subdomain routing), a hostname (UTS namespace) and
/// a path component, so nothing else is allowed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox id {0:?}: expected 1-{MAX_ID_LEN} lowercase ASCII letters and digits")]
pub struct InvalidSandboxId(pub String);

impl SandboxId {
    /// A fresh random id: a letter followed by 19 letters or digits.
    pub fn generate() -> Self {
        use rand::Rng;
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let mut s = String::with_capacity(GENERATED_LEN);
        s.push(LETTERS[rng.random_range(0..LETTERS.len())] as char);
        for _ in 1..GENERATED_LEN {
            s.push(ALNUM[rng.random_range(0..ALNUM.len())] as char);
        }
        SandboxId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `s` without allocating.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }
}

impl FromStr for SandboxId {
    type Err = InvalidSandboxId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(s) {
            Ok(SandboxId(s.to_owned()))
        } else {
            Err(InvalidSandboxId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SandboxId {
    type Error = InvalidSandboxId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if Self::is_valid(&s) {
            Ok(SandboxId(s))
        } else {
            Err(InvalidSandboxId(s))
        }
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl AsRef<str> for SandboxId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert!(SandboxId::is_valid(a.as_str()), "{a}");
        assert_eq!(a.as_str().len(), GENERATED_LEN);
        assert!(a.as_str().as_bytes()[0].is_ascii_lowercase());
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "ABC",
            "a-b",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(MAX_ID_LEN + 1),
            "é",
        ] {
            let err = bad.parse::<SandboxId>().unwrap_err();
            assert!(err.to_string().contains("invalid sandbox id"), "{err}");
        }
        assert!("abc123".parse::<SandboxId>().is_ok());
        assert!("a".repeat(MAX_ID_LEN).parse::<SandboxId>().is_ok());
    }
}
