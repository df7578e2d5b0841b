//! The text form of the `route` and `rewrite` inputs: a first line, then
//! `name: value` lines (the value starts after `:` and any spaces).

/// The first line and the named lines of `data`.
pub(crate) struct Lines<'a> {
    pub first: &'a [u8],
    rest: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Lines<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut lines = data.split(|&b| b == b'\n');
        let first = lines.next().unwrap_or_default();
        let rest = lines
            .filter_map(|l| {
                let colon = l.iter().position(|&b| b == b':')?;
                let value = &l[colon + 1..];
                let spaces = value.iter().take_while(|&&b| b == b' ').count();
                Some((&l[..colon], &value[spaces..]))
            })
            .collect();
        Lines { first, rest }
    }

    /// The value of the first line named `name` (exactly), if any.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.rest
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| *v)
    }

    /// Every named line, in order.
    pub fn all(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.rest.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_then_named_values() {
        let l = Lines::parse(b"example.com\nhost:  a:1\nnot a header\ntarget:/x\nhost: b");
        assert_eq!(l.first, b"example.com");
        assert_eq!(l.get("host"), Some(&b"a:1"[..]));
        assert_eq!(l.get("target"), Some(&b"/x"[..]));
        assert_eq!(l.get("id"), None);
        assert_eq!(l.all().count(), 3);
        assert_eq!(Lines::parse(b"").first, b"");
    }
}
