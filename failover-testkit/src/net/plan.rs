//! The address plan and names of a net: region and link addresses, MAC
//! addresses, device and namespace names, and the rules names follow.

use std::net::Ipv4Addr;

use super::NetError;

/// Most regions one net may have (the address plan has room for them).
pub const MAX_REGIONS: usize = 16;
/// Longest region name: `to-<name>` must fit a 15-byte interface name.
pub const MAX_REGION_NAME: usize = 12;

/// Checks the region names given to the builder.
pub(crate) fn validate(regions: &[String]) -> Result<(), NetError> {
    if regions.is_empty() {
        return Err(NetError::Config("a net needs at least one region".into()));
    }
    if regions.len() > MAX_REGIONS {
        return Err(NetError::Config(format!(
            "{} regions; a net has at most {MAX_REGIONS}",
            regions.len()
        )));
    }
    for (i, name) in regions.iter().enumerate() {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if name.is_empty() || name.len() > MAX_REGION_NAME || !valid_chars {
            return Err(NetError::Config(format!(
                "region name `{name}`: 1 to {MAX_REGION_NAME} ASCII letters, digits, `-` or `_`"
            )));
        }
        if regions[..i].contains(name) {
            return Err(NetError::Config(format!("region `{name}` is named twice")));
        }
    }
    Ok(())
}

/// The device in a region that faces region `peer`.
pub(crate) fn link_device(peer: &str) -> String {
    format!("to-{peer}")
}

/// Region `index`'s address: `10.201.0.<index + 1>`.
pub(crate) fn region_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 0, (index + 1) as u8)
}

/// The two ends of link (`i`, `j`), `i < j`: a `/30` of `10.200.0.0/16`
/// numbered by the link's position in the list of pairs.
pub(crate) fn link_addrs(i: usize, j: usize, n: usize) -> (Ipv4Addr, Ipv4Addr) {
    // Pairs (0,1), (0,2), …, (1,2), …: those before row i, then j's place.
    let k = (0..i).map(|r| n - 1 - r).sum::<usize>() + (j - i - 1);
    let base = (k * 4) as u32;
    let net = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + base;
    (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2))
}

/// A link end's MAC address, made from its IPv4 address (locally
/// administered, unicast): `02:f0:` and the address's four bytes.
pub(crate) fn link_mac(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("02:f0:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The pid in a namespace name of ours, `fo<pid>-<seq>-<region>`.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fo")?;
    let (pid, rest) = rest.split_once('-')?;
    let (seq, region) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(seq) || region.is_empty() {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn link_addresses_are_distinct_per_pair() {
        let n = MAX_REGIONS;
        let mut seen = BTreeSet::new();
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = link_addrs(i, j, n);
                assert!(
                    seen.insert(a) && seen.insert(b),
                    "({i},{j}) reuses {a} or {b}"
                );
            }
        }
        assert_eq!(
            link_addrs(0, 1, 3),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(
            link_addrs(1, 2, 3),
            (Ipv4Addr::new(10, 200, 0, 9), Ipv4Addr::new(10, 200, 0, 10))
        );
    }

    #[test]
    fn only_our_namespace_names_carry_a_pid() {
        assert_eq!(owner_pid("fo123-4-east"), Some(123));
        assert_eq!(owner_pid("fo123-4-"), None);
        assert_eq!(owner_pid("fo+12-4-east"), None);
        assert_eq!(owner_pid("foo-4-east"), None);
        assert_eq!(owner_pid("fo12-x-east"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn region_names_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate(&names(&["east", "west"])).is_ok());
        for bad in [
            &[][..],
            &["east", "east"],
            &["a/b"],
            &["thirteen-char"],
            &[""],
        ] {
            let err = validate(&names(bad)).expect_err("rejected");
            assert!(matches!(err, NetError::Config(_)), "{err}");
        }
    }
}
