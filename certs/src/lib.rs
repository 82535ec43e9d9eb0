//! The cluster's PKI: one certificate authority per cluster and a
//! certificate per node, signed by it, with the node's role written into the
//! certificate as a SAN URI (`ember://role/worker`). Peers prove who they are
//! with these in mutual TLS; the role decides what they may say.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// The SAN URI prefix that carries a node's role.
pub const ROLE_URI_PREFIX: &str = "ember://role/";
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const DEFAULT_CA_DAYS: u32 = 3650;
pub const DEFAULT_NODE_DAYS: u32 = 365;
/// A node warns about its own certificate when it ends within this long.
pub const EXPIRY_WARNING: Duration = Duration::days(3);

/// What a node is, and so what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ClusterManager,
    Worker,
    Client,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::ClusterManager, Role::Worker, Role::Client];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::ClusterManager => "cluster-manager",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| CertError::UnknownRole(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{dir} already holds a CA; pass --force to replace it (every certificate it issued stops working)"
    )]
    CaExists { dir: PathBuf },
    #[error("no CA in {dir}; run `ember certs init --dir {dir}` first")]
    NoCa { dir: PathBuf },
    #[error("unknown role '{0}': use cluster-manager, worker or client")]
    UnknownRole(String),
    #[error("node name '{0}' must be 1-64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("validity must be at least one day")]
    NoValidity,
    #[error("{path}: {why}")]
    BadCertificate { path: String, why: String },
    #[error(
        "the certificate {path} expired at {} (it was valid from {} to {}); issue a new one with `{reissue}`",
        utc(*not_after), utc(*not_before), utc(*not_after)
    )]
    Expired {
        path: PathBuf,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        reissue: String,
    },
    #[error(
        "the certificate {path} is not valid until {} (it is valid from {} to {}); check this machine's clock, or issue a new one with `{reissue}`",
        utc(*not_before), utc(*not_before), utc(*not_after)
    )]
    NotYetValid {
        path: PathBuf,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        reissue: String,
    },
    #[error(
        "the certificate {path} does not name {flag} {host}: it names {}; peers reach this \
         node's executors and drivers at {host} and would refuse them (\"certificate not valid \
         for name\"). Issue one that names it with `{reissue}`, or pass a {flag} the certificate names",
        listed(names)
    )]
    HostNotNamed {
        path: PathBuf,
        flag: String,
        host: String,
        names: Vec<String>,
        reissue: String,
    },
    #[error("{flag} '{host}' is not a host name or IP address a certificate can name")]
    BadHost { flag: String, host: String },
    #[error(
        "the certificate of '{0}' carries no Ember role (no {ROLE_URI_PREFIX}... SAN); issue it with `ember certs issue`"
    )]
    NoRole(String),
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A time as people read it in messages: `2026-11-29 09:55:26 UTC`.
pub fn utc(time: OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no host".to_string()
    } else {
        names.join(", ")
    }
}

/// Quotes `word` for a POSIX shell, so a command in a message can be pasted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The `ember certs issue` command that makes `name`'s certificate in `dir`
/// (again), naming `hosts`.
pub fn issue_command(dir: &Path, role: Role, name: &str, hosts: &[String]) -> String {
    let mut command = format!(
        "ember certs issue --dir {} --role {role} --name {}",
        shell_word(&dir.display().to_string()),
        shell_word(name)
    );
    for host in hosts {
        command.push_str(" --host ");
        command.push_str(&shell_word(host));
    }
    command
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path`, readable by its owner only when `secret`.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(contents.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Makes a cluster CA in `dir` (`ca.pem`, and `ca.key` readable by its
/// owner only). An existing CA is kept unless `force`.
pub fn init_ca(dir: &Path, name: &str, days: u32, force: bool) -> Result<PathBuf, CertError> {
    if days == 0 {
        return Err(CertError::NoValidity);
    }
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if !force && (cert_path.exists() || key_path.exists()) {
        return Err(CertError::CaExists {
            dir: dir.to_path_buf(),
        });
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name} CA"));
    dn.push(DnType::OrganizationName, "Ember cluster");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now.saturating_add(Duration::days(i64::from(days)));
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // The key first: a CA certificate without its key is useless.
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok(cert_path)
}

/// A request for a node certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub role: Role,
    pub name: String,
    /// Host names and IP addresses the node is reached at; empty means
    /// `localhost`, 127.0.0.1 and ::1.
    pub hosts: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl IssueRequest {
    /// Valid from now for `days` days; 0 days is an empty window, which
    /// [`issue`] refuses.
    pub fn new(role: Role, name: &str, hosts: Vec<String>, days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        let not_before = now - Duration::minutes(5);
        let not_after = if days == 0 {
            not_before
        } else {
            now.saturating_add(Duration::days(i64::from(days)))
        };
        Self {
            role,
            name: name.to_string(),
            hosts,
            not_before,
            not_after,
        }
    }
}

/// Where an issued certificate and its key were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Issues a node certificate signed by the CA in `dir`, written as
/// `NAME.pem` and `NAME.key` (owner-only).
pub fn issue(dir: &Path, request: &IssueRequest) -> Result<Issued, CertError> {
    if !valid_name(&request.name) {
        return Err(CertError::BadName(request.name.clone()));
    }
    if request.not_after <= request.not_before {
        return Err(CertError::NoValidity);
    }
    let (ca_cert_path, ca_key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        return Err(CertError::NoCa {
            dir: dir.to_path_buf(),
        });
    }
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
    let bad = |path: &Path| {
        let path = path.display().to_string();
        move |e: rcgen::Error| CertError::BadCertificate {
            path,
            why: e.to_string(),
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(bad(&ca_key_path))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(bad(&ca_cert_path))?;

    let hosts = if request.hosts.is_empty() {
        vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ]
    } else {
        request.hosts.clone()
    };
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, request.name.clone());
    dn.push(DnType::OrganizationName, "Ember cluster");
    params.distinguished_name = dn;
    for host in &hosts {
        params.subject_alt_names.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.as_str().try_into()?),
        });
    }
    let role_uri = format!("{ROLE_URI_PREFIX}{}", request.role);
    params
        .subject_alt_names
        .push(SanType::URI(role_uri.as_str().try_into()?));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Every node is both a server and a client of its peers.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let issued = Issued {
        cert: dir.join(format!("{}.pem", request.name)),
        key: dir.join(format!("{}.key", request.name)),
    };
    write_file(&issued.key, &key.serialize_pem(), true)?;
    write_file(&issued.cert, &cert.pem(), false)?;
    Ok(issued)
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub role: Role,
    pub name: String,
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// What `ember certs show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    pub role: Option<Role>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now > self.not_after || now < self.not_before
    }

    /// The host names and IP addresses the certificate names.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = self.dns_names.clone();
        hosts.extend(self.ip_addresses.iter().map(IpAddr::to_string));
        hosts
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:    {}", self.subject)?;
        writeln!(f, "issuer:     {}", self.issuer)?;
        let role = match (self.is_ca, self.role) {
            (true, _) => "certificate authority".to_string(),
            (false, Some(role)) => role.to_string(),
            (false, None) => "none (not an Ember node certificate)".to_string(),
        };
        writeln!(f, "role:       {role}")?;
        let sans = self.hosts();
        if !sans.is_empty() {
            writeln!(f, "hosts:      {}", sans.join(", "))?;
        }
        writeln!(f, "valid from: {}", self.not_before)?;
        let expired = if self.is_expired(OffsetDateTime::now_utc()) {
            " (NOT VALID NOW)"
        } else {
            ""
        };
        write!(f, "valid to:   {}{expired}", self.not_after)
    }
}

/// Reads a certificate's fields from DER.
pub fn inspect(der: &[u8], source: &str) -> Result<CertInfo, CertError> {
    let bad = |why: String| CertError::BadCertificate {
        path: source.to_string(),
        why,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let mut info = CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        role: None,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
    };
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subject alternative names: {e}")))?;
    for name in sans.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            x509_parser::extensions::GeneralName::URI(uri) => {
                if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    info.role = role.parse().ok();
                }
            }
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                info.dns_names.push(dns.to_string())
            }
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                    info.ip_addresses.push(IpAddr::from(octets));
                } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                    info.ip_addresses.push(IpAddr::from(octets));
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The role and name a node certificate carries.
pub fn identity_of(der: &[u8]) -> Result<NodeIdentity, CertError> {
    let info = inspect(der, "peer certificate")?;
    let name = info.common_name.clone().unwrap_or_default();
    match info.role {
        Some(role) if !info.is_ca => Ok(NodeIdentity { role, name }),
        _ => Err(CertError::NoRole(name)),
    }
}

/// Reads the first certificate of a PEM file.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_file(path).map_err(|e| CertError::BadCertificate {
        path: path.display().to_string(),
        why: format!("no PEM certificate could be read: {e}"),
    })
}

/// Everything a node needs for mutual TLS.
#[derive(Debug)]
pub struct NodeCredentials {
    pub ca: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub identity: NodeIdentity,
}

/// Loads the CA certificate and node `name`'s certificate and key from `dir`.
pub fn load_node(dir: &Path, name: &str) -> Result<NodeCredentials, CertError> {
    let ca_path = dir.join(CA_CERT);
    if !ca_path.exists() {
        return Err(CertError::NoCa {
            dir: dir.to_path_buf(),
        });
    }
    let ca = read_cert(&ca_path)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    let cert = read_cert(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| CertError::BadCertificate {
        path: key_path.display().to_string(),
        why: format!("no PEM private key could be read: {e}"),
    })?;
    let identity = identity_of(&cert).map_err(|e| match e {
        CertError::BadCertificate { why, .. } => CertError::BadCertificate {
            path: cert_path.display().to_string(),
            why,
        },
        other => other,
    })?;
    Ok(NodeCredentials {
        ca,
        cert,
        key,
        identity,
    })
}

/// A node's own certificate that ends soon: worth a warning at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiresSoon {
    pub path: PathBuf,
    pub not_after: OffsetDateTime,
    pub reissue: String,
}

impl fmt::Display for ExpiresSoon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the certificate {} expires at {}; issue a new one before then with `{}`",
            self.path.display(),
            utc(self.not_after),
            self.reissue
        )
    }
}

/// Refuses node `name`'s own certificate (`creds`, read from `dir`) when it
/// is not valid at `now`, so a process fails at start with the reason
/// instead of every peer refusing it later; one that ends within
/// [`EXPIRY_WARNING`] comes back as a warning.
pub fn check_in_force(
    dir: &Path,
    name: &str,
    creds: &NodeCredentials,
    now: OffsetDateTime,
) -> Result<Option<ExpiresSoon>, CertError> {
    let path = dir.join(format!("{name}.pem"));
    let info = inspect(&creds.cert, &path.display().to_string())?;
    let reissue = issue_command(dir, creds.identity.role, name, &info.hosts());
    if now > info.not_after {
        return Err(CertError::Expired {
            path,
            not_before: info.not_before,
            not_after: info.not_after,
            reissue,
        });
    }
    if now < info.not_before {
        return Err(CertError::NotYetValid {
            path,
            not_before: info.not_before,
            not_after: info.not_after,
            reissue,
        });
    }
    Ok(
        (info.not_after - now <= EXPIRY_WARNING).then_some(ExpiresSoon {
            path,
            not_after: info.not_after,
            reissue,
        }),
    )
}

/// Refuses node `name`'s certificate (`creds`, read from `dir`) unless it
/// names `host` the way peers check it when they connect there.
pub fn check_names_host(
    dir: &Path,
    name: &str,
    creds: &NodeCredentials,
    flag: &str,
    host: &str,
) -> Result<(), CertError> {
    let path = dir.join(format!("{name}.pem"));
    let server_name =
        rustls::pki_types::ServerName::try_from(host).map_err(|_| CertError::BadHost {
            flag: flag.to_string(),
            host: host.to_string(),
        })?;
    let parsed = rustls::server::ParsedCertificate::try_from(&creds.cert).map_err(|e| {
        CertError::BadCertificate {
            path: path.display().to_string(),
            why: e.to_string(),
        }
    })?;
    if rustls::client::verify_server_name(&parsed, &server_name).is_ok() {
        return Ok(());
    }
    let info = inspect(&creds.cert, &path.display().to_string())?;
    let names = info.hosts();
    let mut wanted = names.clone();
    wanted.push(host.to_string());
    Err(CertError::HostNotNamed {
        reissue: issue_command(dir, creds.identity.role, name, &wanted),
        path,
        flag: flag.to_string(),
        host: host.to_string(),
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_inspect_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test", 30, false).unwrap();
        let ca_info = inspect(&read_cert(&ca).unwrap(), "ca").unwrap();
        assert!(ca_info.is_ca);
        assert_eq!(ca_info.role, None);

        let request = IssueRequest::new(
            Role::Worker,
            "worker-1",
            vec!["node1.example".into(), "10.1.2.3".into()],
            10,
        );
        let issued = issue(dir.path(), &request).unwrap();
        let info = inspect(&read_cert(&issued.cert).unwrap(), "w").unwrap();
        assert_eq!(info.role, Some(Role::Worker));
        assert_eq!(info.common_name.as_deref(), Some("worker-1"));
        assert_eq!(info.dns_names, vec!["node1.example".to_string()]);
        assert_eq!(
            info.ip_addresses,
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert!(!info.is_expired(OffsetDateTime::now_utc()));
        assert!(info.not_after - OffsetDateTime::now_utc() <= Duration::days(10));
        assert!(info.issuer.contains("test CA"), "{}", info.issuer);

        let creds = load_node(dir.path(), "worker-1").unwrap();
        assert_eq!(
            creds.identity,
            NodeIdentity {
                role: Role::Worker,
                name: "worker-1".into()
            }
        );
        // The default hosts cover loopback.
        let local = issue(
            dir.path(),
            &IssueRequest::new(Role::Client, "me", vec![], 1),
        )
        .unwrap();
        let local = inspect(&read_cert(&local.cert).unwrap(), "me").unwrap();
        assert_eq!(local.dns_names, vec!["localhost".to_string()]);
        assert_eq!(local.ip_addresses.len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private_and_init_never_overwrites_without_force() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "c", 30, false).unwrap();
        let mode = fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = fs::read(dir.path().join(CA_KEY)).unwrap();
        assert!(matches!(
            init_ca(dir.path(), "c", 30, false),
            Err(CertError::CaExists { .. })
        ));
        assert_eq!(fs::read(dir.path().join(CA_KEY)).unwrap(), before);
        init_ca(dir.path(), "c", 30, true).unwrap();
        assert_ne!(fs::read(dir.path().join(CA_KEY)).unwrap(), before);
        let issued = issue(dir.path(), &IssueRequest::new(Role::Worker, "w", vec![], 1)).unwrap();
        let mode = fs::metadata(&issued.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_requests_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), &IssueRequest::new(Role::Worker, "w", vec![], 1)).unwrap_err();
        assert!(err.to_string().contains("run `ember certs init"), "{err}");
        init_ca(dir.path(), "c", 30, false).unwrap();
        let err = issue(
            dir.path(),
            &IssueRequest::new(Role::Worker, "../evil", vec![], 1),
        )
        .unwrap_err();
        assert!(matches!(err, CertError::BadName(_)));
        assert!(matches!(
            "admin".parse::<Role>(),
            Err(CertError::UnknownRole(_))
        ));
        let err = load_node(dir.path(), "nobody").unwrap_err();
        assert!(err.to_string().contains("nobody.pem"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, "not a certificate").unwrap();
        assert!(read_cert(&garbage).is_err());
        assert!(inspect(b"\x30\x03\x01\x01\xff", "junk").is_err());
        // A CA certificate is not a node identity.
        let ca = read_cert(&dir.path().join(CA_CERT)).unwrap();
        assert!(matches!(identity_of(&ca), Err(CertError::NoRole(_))));
    }

    #[test]
    fn an_expired_certificate_reads_as_expired() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "c", 30, false).unwrap();
        let now = OffsetDateTime::now_utc();
        let mut request = IssueRequest::new(Role::Worker, "old", vec![], 1);
        request.not_before = now - Duration::days(3);
        request.not_after = now - Duration::days(1);
        let issued = issue(dir.path(), &request).unwrap();
        let info = inspect(&read_cert(&issued.cert).unwrap(), "old").unwrap();
        assert!(info.is_expired(now));
        assert!(info.to_string().contains("NOT VALID NOW"));
    }

    #[test]
    fn issuing_for_zero_days_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "c", 30, false).unwrap();
        let err = issue(dir.path(), &IssueRequest::new(Role::Worker, "w", vec![], 0)).unwrap_err();
        assert!(matches!(err, CertError::NoValidity), "{err}");
        assert!(!dir.path().join("w.pem").exists());
        assert!(matches!(
            init_ca(dir.path(), "c", 0, true),
            Err(CertError::NoValidity)
        ));
    }

    #[test]
    fn a_certificate_out_of_its_window_is_refused_with_its_dates_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "c", 30, false).unwrap();
        let now = OffsetDateTime::now_utc();
        let mut old = IssueRequest::new(Role::Worker, "old", vec!["n1.lan".into()], 1);
        old.not_before = now - Duration::days(3);
        old.not_after = now - Duration::days(1);
        issue(dir.path(), &old).unwrap();
        let creds = load_node(dir.path(), "old").unwrap();
        let err = check_in_force(dir.path(), "old", &creds, now).unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("old.pem expired at"), "{message}");
        assert!(message.contains(&utc(old.not_after)), "{message}");
        assert!(
            message.contains("ember certs issue --dir")
                && message.contains("--role worker --name old --host n1.lan`"),
            "{message}"
        );

        let mut early = IssueRequest::new(Role::Client, "early", vec![], 1);
        early.not_before = now + Duration::days(2);
        early.not_after = now + Duration::days(9);
        issue(dir.path(), &early).unwrap();
        let creds = load_node(dir.path(), "early").unwrap();
        let err = check_in_force(dir.path(), "early", &creds, now).unwrap_err();
        assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
        assert!(err.to_string().contains("clock"), "{err}");

        let soon = issue(
            dir.path(),
            &IssueRequest::new(Role::ClusterManager, "soon", vec![], 2),
        )
        .unwrap();
        let creds = load_node(dir.path(), "soon").unwrap();
        let warning = check_in_force(dir.path(), "soon", &creds, now)
            .unwrap()
            .expect("a warning two days before the end");
        assert_eq!(warning.path, soon.cert);
        assert!(warning.to_string().contains("expires at"), "{warning}");

        issue(
            dir.path(),
            &IssueRequest::new(Role::ClusterManager, "fine", vec![], 30),
        )
        .unwrap();
        let creds = load_node(dir.path(), "fine").unwrap();
        assert_eq!(
            check_in_force(dir.path(), "fine", &creds, now).unwrap(),
            None
        );
    }

    #[test]
    fn a_host_the_certificate_does_not_name_is_refused_with_the_names_it_has() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "c", 30, false).unwrap();
        issue(
            dir.path(),
            &IssueRequest::new(Role::Worker, "w1", vec![], 5),
        )
        .unwrap();
        let creds = load_node(dir.path(), "w1").unwrap();
        for named in ["127.0.0.1", "localhost", "LOCALHOST", "::1"] {
            check_names_host(dir.path(), "w1", &creds, "--host", named).unwrap();
        }
        let err = check_names_host(dir.path(), "w1", &creds, "--host", "10.0.0.7").unwrap_err();
        assert!(matches!(err, CertError::HostNotNamed { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("does not name --host 10.0.0.7"),
            "{message}"
        );
        assert!(
            message.contains("it names localhost, 127.0.0.1, ::1"),
            "{message}"
        );
        assert!(
            message.contains(
                "--role worker --name w1 --host localhost --host 127.0.0.1 --host ::1 --host 10.0.0.7`"
            ),
            "{message}"
        );
        assert!(matches!(
            check_names_host(dir.path(), "w1", &creds, "--host", "not a host"),
            Err(CertError::BadHost { .. })
        ));
    }

    #[test]
    fn suggested_commands_paste_into_a_shell() {
        assert_eq!(
            issue_command(Path::new("my pki"), Role::Client, "me", &[]),
            "ember certs issue --dir 'my pki' --role client --name me"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
