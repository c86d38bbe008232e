//! IPv4 prefixes, and an `ipBlock`'s `cidr` minus its `except` as a list of prefixes (so
//! that each allow is one iptables match, with no ordering between rules).

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 prefix, its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: u32,
    len: u8,
}

/// A prefix that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR: write it as a.b.c.d/n with n from 0 to 32")]
pub struct BadCidr(String);

impl Cidr {
    /// A prefix (host bits cleared).
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            addr: u32::from(addr) & mask(len),
            len,
        }
    }

    /// One address.
    pub fn host(addr: Ipv4Addr) -> Self {
        Self::new(addr, 32)
    }

    /// Whether `other` lies inside this prefix.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.len >= self.len && other.addr & mask(self.len) == self.addr
    }

    /// The two halves one bit longer (None for a single address).
    fn halves(&self) -> Option<(Cidr, Cidr)> {
        (self.len < 32).then(|| {
            let len = self.len + 1;
            let bit = 1u32 << (32 - u32::from(len));
            (
                Cidr {
                    addr: self.addr,
                    len,
                },
                Cidr {
                    addr: self.addr | bit,
                    len,
                },
            )
        })
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        Ok(Self::new(addr, len))
    }
}

/// `cidr` without the addresses of `except`: the fewest prefixes that cover exactly the
/// rest (at most 32 per excepted prefix).
pub fn subtract(cidr: Cidr, except: &[Cidr]) -> Vec<Cidr> {
    let mut out = vec![];
    let mut todo = vec![cidr];
    while let Some(c) = todo.pop() {
        if except.iter().any(|e| e.contains(&c)) {
            continue; // wholly excepted
        }
        if !except.iter().any(|e| c.contains(e)) {
            out.push(c); // nothing excepted inside
            continue;
        }
        if let Some((a, b)) = c.halves() {
            todo.push(a);
            todo.push(b);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_prefixes_with_host_bits_cleared() {
        assert_eq!(c("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in ["10.1.2.3", "10.1.2.3/33", "fd00::/8", "x/8"] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains("a.b.c.d/n"), "{err}");
        }
    }

    #[test]
    fn subtracting_an_address_leaves_its_siblings() {
        let got: Vec<String> = subtract(c("10.0.0.0/30"), &[c("10.0.0.1/32")])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.0/32", "10.0.0.2/31"]);
        assert_eq!(subtract(c("10.0.0.0/24"), &[c("10.0.0.0/16")]), vec![]);
        assert_eq!(
            subtract(c("10.0.0.0/24"), &[c("10.9.0.0/16")]),
            vec![c("10.0.0.0/24")]
        );
        assert_eq!(subtract(c("0.0.0.0/0"), &[c("1.2.3.4/32")]).len(), 32);
    }

    proptest! {
        /// An address is covered by the result exactly when it is in the prefix and in no
        /// excepted one, and the result's prefixes never overlap.
        #[test]
        fn subtraction_is_exact(base in any::<u32>(), len in 20u8..=32, ex in proptest::collection::vec((any::<u16>(), 22u8..=32), 0..4), probe in any::<u16>()) {
            let cidr = Cidr::new(Ipv4Addr::from(base), len);
            let except: Vec<Cidr> = ex.iter().map(|(o, l)| Cidr::new(Ipv4Addr::from(cidr.addr ^ u32::from(o >> 4)), *l)).collect();
            let rest = subtract(cidr, &except);
            let addr = Cidr::host(Ipv4Addr::from(cidr.addr ^ u32::from(probe >> 4)));
            let want = cidr.contains(&addr) && !except.iter().any(|e| e.contains(&addr));
            prop_assert_eq!(rest.iter().filter(|r| r.contains(&addr)).count(), usize::from(want));
        }
    }
}
