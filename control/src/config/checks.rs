//! Checks of single settings that need more than a comparison: browser origins and
//! the desktop confinement settings.

/// Whether `origin` is a browser origin as the `Origin` header carries it:
/// `http(s)://host[:port]`, no path, no trailing slash.
pub(super) fn origin_ok(origin: &str) -> bool {
    let authority = |(scheme, rest): (&str, &str)| {
        matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#'])
    };
    origin.bytes().all(|b| b.is_ascii_graphic()) && origin.split_once("://").is_some_and(authority)
}

/// Whether `url` is a base URL browsers can be sent to: `http(s)://host[:port]` and
/// maybe a path, printable, no credentials, query or fragment.
pub(super) fn base_url_ok(url: &str) -> bool {
    let (origin, path) = match url.split_once("://") {
        Some((scheme, rest)) => match rest.find('/') {
            Some(i) => (&url[..scheme.len() + 3 + i], &rest[i..]),
            None => (url, ""),
        },
        None => return false,
    };
    origin_ok(origin)
        && !origin.contains('@')
        && !path.contains(['?', '#'])
        && path.bytes().all(|b| b.is_ascii_graphic())
}

/// What is wrong with the desktop confinement settings (names only; Docker judges the
/// capability names).
pub(super) fn isolation_problems(
    network: &str,
    cap_add: &[String],
    log_max_size: &str,
    log_max_files: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    let name_ok = network
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    // Docker's own networks cannot carry the isolation option.
    if network.is_empty() || !name_ok || ["bridge", "host", "none"].contains(&network) {
        out.push(format!(
            "desktop_network {network:?} must be a network name of [A-Za-z0-9_.-] other than bridge, host and none"
        ));
    }
    for cap in cap_add {
        if cap == "ALL"
            || cap.is_empty()
            || !cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        {
            out.push(format!(
                "desktop_cap_add {cap:?} is not one capability name"
            ));
        }
    }
    let digits = log_max_size.trim_end_matches(['k', 'm', 'g']);
    let size_ok =
        log_max_size.len() - digits.len() <= 1 && digits.parse::<u64>().is_ok_and(|n| n > 0);
    if !size_ok {
        out.push(format!(
            "desktop_log_max_size {log_max_size:?} must be a positive size such as 10m, 512k or 1g"
        ));
    }
    if log_max_files == 0 {
        out.push("desktop_log_max_files must be at least 1".into());
    }
    out
}
