//! What every process of a cluster sets up first, whatever its role:
//! the certificate it runs with, the addresses it dials, the memory sizes
//! it is given.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use ember_certs::{NodeCredentials, Role};

/// Loads the certificate this process runs with: `name`'s if given, or
/// else the only certificate of `role` in `dir`. One that is not valid now
/// is refused here, before any peer refuses it with less to say.
pub fn pick_credentials(
    dir: &Path,
    name: Option<&str>,
    role: Role,
) -> Result<NodeCredentials, String> {
    let name = match name {
        Some(name) => name.to_string(),
        None => only_certificate_of(dir, role)?,
    };
    let creds = ember_certs::load_node(dir, &name).map_err(|e| e.to_string())?;
    if creds.identity.role != role {
        return Err(format!(
            "certificate '{}' is for a {}, but this process is a {role}; issue one with --role {role}",
            creds.identity.name, creds.identity.role
        ));
    }
    in_force(dir, &name, &creds)?;
    Ok(creds)
}

/// Refuses this process's own certificate outside its validity, and warns
/// when it ends within days.
pub fn in_force(dir: &Path, name: &str, creds: &NodeCredentials) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc();
    match ember_certs::check_in_force(dir, name, creds, now) {
        Ok(None) => Ok(()),
        Ok(Some(soon)) => {
            errln!("warning: {soon}");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The name of the only certificate of `role` in `dir`.
fn only_certificate_of(dir: &Path, role: Role) -> Result<String, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the certificate directory {}: {e}; pass --certs DIR (made with `ember certs init`)",
            dir.display()
        )
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        if stem == "ca" {
            continue;
        }
        let Ok(der) = ember_certs::read_cert(&path) else {
            continue;
        };
        if ember_certs::identity_of(&der).is_ok_and(|id| id.role == role) {
            found.push(stem.to_string());
        }
    }
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no {role} certificate in {}; issue one with `ember certs issue --dir {} --role {role} --name NAME`",
            dir.display(),
            dir.display()
        )),
        many => Err(format!(
            "{} holds several {role} certificates ({}); pick one with --name",
            dir.display(),
            many.join(", ")
        )),
    }
}

/// `host:port` to a socket address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{host}': {e}"))?
        .next()
        .ok_or_else(|| format!("host '{host}' has no address"))
}

/// `HOST:PORT` (as `--cluster-manager` takes it) to its parts.
pub fn split_host_port(value: &str) -> Result<(String, u16), String> {
    let value = value.strip_prefix("ember://").unwrap_or(value);
    crate::master::parse_host_port(value).map_err(|why| format!("'{value}' {why}"))
}

/// A memory size as Spark writes it: `512m`, `4g`, `1024` (MB).
pub fn parse_memory_mb(value: &str) -> Result<u64, String> {
    let v = value.trim().to_ascii_lowercase();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v.as_str(), "m"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{value}' is not a memory size such as 512m or 4g"))?;
    let mb = match unit.trim_end_matches('b') {
        "k" => n / 1024,
        "m" | "" => n,
        "g" => n * 1024,
        "t" => n * 1024 * 1024,
        _ => return Err(format!("'{value}' is not a memory size such as 512m or 4g")),
    };
    if mb == 0 {
        return Err(format!("'{value}' is less than a megabyte"));
    }
    Ok(mb)
}
