//! Master URLs, as Spark spells them: `local`, `local[N]`, `local[*]`,
//! `local[N,F]`, `local[*,F]`, and `ember://HOST:PORT` for a cluster.

use std::fmt;
use std::str::FromStr;

/// Where an application runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Master {
    /// One process: `threads` task slots; `max_failures` attempts per task.
    Local { threads: usize, max_failures: u32 },
    /// A cluster manager at `host:port`.
    Cluster { host: String, port: u16 },
}

pub const ACCEPTED_FORMS: &str = "local, local[N], local[*], local[N,F] or local[*,F] \
(N task threads, * for one per core, F attempts per task), or ember://HOST:PORT for a cluster";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid master URL '{url}': {why}. Accepted forms: {ACCEPTED_FORMS}")]
pub struct MasterError {
    pub url: String,
    pub why: String,
}

impl Master {
    /// Parses a master URL; `*` means `cores`.
    pub fn parse(url: &str, cores: usize) -> Result<Self, MasterError> {
        let err = |why: &str| MasterError {
            url: url.to_string(),
            why: why.to_string(),
        };
        let trimmed = url.trim();
        if trimmed == "local" {
            return Ok(Master::Local {
                threads: 1,
                max_failures: 1,
            });
        }
        if trimmed.starts_with("spark://") {
            return Err(err(
                "spark:// masters are Spark's; an Ember cluster is ember://HOST:PORT",
            ));
        }
        if let Some(rest) = trimmed.strip_prefix("ember://") {
            let (host, port) =
                parse_host_port(rest).map_err(|why| err(&format!("a cluster master {why}")))?;
            return Ok(Master::Cluster { host, port });
        }
        let inner = trimmed
            .strip_prefix("local[")
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| err("not a local master"))?;
        let (threads, failures) = match inner.split_once(',') {
            Some((t, f)) => (t.trim(), Some(f.trim())),
            None => (inner.trim(), None),
        };
        let threads = match threads {
            "*" => cores.max(1),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(err(
                        "the thread count must be a whole number of at least 1, or *",
                    ));
                }
            },
        };
        let max_failures = match failures {
            None => 1,
            Some(f) => match f.parse::<u32>() {
                Ok(f) if f >= 1 => f,
                _ => {
                    return Err(err(
                        "the task failure count F must be a whole number of at least 1",
                    ));
                }
            },
        };
        Ok(Master::Local {
            threads,
            max_failures,
        })
    }

    pub fn threads(&self) -> usize {
        match self {
            Master::Local { threads, .. } => *threads,
            Master::Cluster { .. } => 0,
        }
    }

    pub fn max_failures(&self) -> u32 {
        match self {
            Master::Local { max_failures, .. } => *max_failures,
            Master::Cluster { .. } => 0,
        }
    }
}

impl fmt::Display for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Master::Local {
                threads: 1,
                max_failures: 1,
            } => f.write_str("local"),
            Master::Local {
                threads,
                max_failures: 1,
            } => write!(f, "local[{threads}]"),
            Master::Local {
                threads,
                max_failures,
            } => write!(f, "local[{threads},{max_failures}]"),
            Master::Cluster { host, port } if host.contains(':') => {
                write!(f, "ember://[{host}]:{port}")
            }
            Master::Cluster { host, port } => write!(f, "ember://{host}:{port}"),
        }
    }
}

impl FromStr for Master {
    type Err = MasterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Master::parse(s, available_cores())
    }
}

/// `HOST:PORT` (a bracketed IPv6 host too) to its parts; the error says
/// what is wrong.
pub fn parse_host_port(value: &str) -> Result<(String, u16), &'static str> {
    let (host, port) = value.rsplit_once(':').ok_or("needs a port: HOST:PORT")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("needs a host: HOST:PORT");
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("needs a port number from 1 to 65535")?;
    Ok((host.to_string(), port))
}

/// Cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(threads: usize, max_failures: u32) -> Master {
        Master::Local {
            threads,
            max_failures,
        }
    }

    #[test]
    fn accepts_every_local_form() {
        assert_eq!(Master::parse("local", 8), Ok(local(1, 1)));
        assert_eq!(Master::parse("local[1]", 8), Ok(local(1, 1)));
        assert_eq!(Master::parse("local[3]", 8), Ok(local(3, 1)));
        assert_eq!(Master::parse("local[*]", 8), Ok(local(8, 1)));
        assert_eq!(Master::parse("local[4,3]", 8), Ok(local(4, 3)));
        assert_eq!(Master::parse("local[*, 2]", 6), Ok(local(6, 2)));
        assert_eq!(Master::parse(" local[2] ", 6), Ok(local(2, 1)));
    }

    #[test]
    fn rejects_bad_urls_with_the_accepted_forms() {
        for bad in [
            "",
            "locale",
            "local[]",
            "local[0]",
            "local[-1]",
            "local[x]",
            "local[2",
            "local2]",
            "local[2,0]",
            "local[2,x]",
            "local[2,3,4]",
            "yarn",
            "spark://host:7077",
            "ember://host",
            "ember://:7077",
            "ember://host:0",
            "ember://host:99999",
        ] {
            let err = Master::parse(bad, 4).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("Accepted forms: local, local[N]")
                    && text.contains("ember://HOST:PORT"),
                "{bad}: {text}"
            );
            assert!(text.contains(&format!("'{bad}'")), "{bad}: {text}");
        }
    }

    #[test]
    fn accepts_cluster_masters() {
        assert_eq!(
            Master::parse("ember://127.0.0.1:7077", 2),
            Ok(Master::Cluster {
                host: "127.0.0.1".into(),
                port: 7077
            })
        );
        assert_eq!(
            Master::parse("ember://[::1]:7077", 2),
            Ok(Master::Cluster {
                host: "::1".into(),
                port: 7077
            })
        );
    }

    #[test]
    fn displays_as_parsed() {
        for url in ["local", "local[3]", "local[2,4]", "ember://10.0.0.5:7077"] {
            assert_eq!(Master::parse(url, 2).unwrap().to_string(), url);
        }
    }
}
