//! Regular expressions the schema uses to refuse malformed strings.
//!
//! The API server evaluates `pattern` with Go's RE2 engine, so these use no look-around.
//! The node agent and controller compile the same constants, so that what the API server
//! accepts is exactly what they parse.

/// An OCI image reference: `[registry[:port]/]path[:tag][@digest]`.
///
/// The registry part is recognised the way Docker does: the first component is a registry
/// only when it is `localhost` or contains a `.` or a `:port`. Repository path components
/// are lower case; a tag is at most 128 characters; digests are sha256 or sha512.
pub const IMAGE_REFERENCE: &str = concat!(
    r"^(?:(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)+)(?::[0-9]{1,5})?/",
    r"|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9]{1,5}/)?",
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*",
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?",
    r"(?:@(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}))?$"
);

/// A semver range: comparators (`>=1.2.0`, `<2`, `~1.4`, `^1.2`, `1.4.*`, a bare version)
/// separated by spaces or commas, all of which a version must satisfy. No backslashes or
/// quotes, so the same text is a valid RE2 and Rust pattern and a CEL string literal.
pub const SEMVER_RANGE: &str = concat!(
    "^ *(?:[<>]=?|[=~^])? *(?:[*xX]|[0-9]+(?:[.](?:[*xX]|[0-9]+)){0,2}(?:-[0-9A-Za-z.-]+)?)",
    "(?:(?: *, *| +)(?:[<>]=?|[=~^])? *(?:[*xX]|[0-9]+(?:[.](?:[*xX]|[0-9]+)){0,2}(?:-[0-9A-Za-z.-]+)?))* *$"
);

/// A CPU quantity: whole or fractional cores (`2`, `0.5`) or millicores (`500m`).
pub const CPU_QUANTITY: &str = r"^(?:[0-9]+(?:\.[0-9]{1,3})?|[0-9]+m)$";

/// A memory quantity in bytes with an optional decimal or binary suffix (`128Mi`, `1G`).
pub const MEMORY_QUANTITY: &str = r"^[0-9]+(?:\.[0-9]+)?(?:k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";

/// A DNS-1123 label: the name of a Workload, a Host, or a port.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A DNS-1123 subdomain: object names such as a SeccompProfile or a Host.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An IANA service name, as Kubernetes uses for port names.
pub const PORT_NAME: &str = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";

/// An environment variable name.
pub const ENV_NAME: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// An absolute path inside the instance, without `..` components or a trailing slash.
pub const ABSOLUTE_PATH: &str = concat!(
    r"^(?:/(?:[A-Za-z0-9_@+=,-][A-Za-z0-9._@+=,-]*",
    r"|\.[A-Za-z0-9_@+=,-][A-Za-z0-9._@+=,-]*|\.\.[A-Za-z0-9._@+=,-]+))+$"
);

/// A percentage for maxSurge / maxUnavailable.
pub const PERCENT: &str = r"^(?:100|[1-9]?[0-9])%$";

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn image_reference_accepts_the_usual_forms() {
        let re = Regex::new(IMAGE_REFERENCE).unwrap();
        for ok in [
            "busybox",
            "web:v1",
            "localhost:5000/web:v1",
            "127.0.0.1:5000/bulkhead/web:v2",
            "registry.example.com/team/app_1:1.2.3-rc.1",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "localhost/web:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(re.is_match(ok), "{ok} should be accepted");
        }
    }

    #[test]
    fn image_reference_refuses_malformed_forms() {
        let re = Regex::new(IMAGE_REFERENCE).unwrap();
        for bad in [
            "",
            "web app:v1",
            "Web/app:v1",
            "localhost:5000/Web:v1",
            "web:",
            "web@sha256:abc",
            "web:-v1",
            "/web",
            "web//app",
        ] {
            assert!(!re.is_match(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn quantities() {
        let cpu = Regex::new(CPU_QUANTITY).unwrap();
        let mem = Regex::new(MEMORY_QUANTITY).unwrap();
        for ok in ["1", "0.5", "250m", "2.125"] {
            assert!(cpu.is_match(ok), "{ok}");
        }
        for bad in ["1.5m", "-1", "1 core", "0.0001"] {
            assert!(!cpu.is_match(bad), "{bad}");
        }
        for ok in ["128Mi", "1G", "1048576", "1.5Gi"] {
            assert!(mem.is_match(ok), "{ok}");
        }
        for bad in ["12XB", "Mi", "-1Gi", "1 Gi"] {
            assert!(!mem.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn paths_and_names() {
        let path = Regex::new(ABSOLUTE_PATH).unwrap();
        assert!(path.is_match("/var/cache/app") && path.is_match("/home/app/.cache"));
        for bad in ["/", "relative", "/a/../b", "/a/./b", "/a/", "/a//b"] {
            assert!(!path.is_match(bad), "{bad}");
        }
        let pct = Regex::new(PERCENT).unwrap();
        assert!(pct.is_match("25%") && pct.is_match("100%") && pct.is_match("0%"));
        assert!(!pct.is_match("101%") && !pct.is_match("25"));
    }
}
