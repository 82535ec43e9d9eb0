//! Cluster-mode scripts larger than one control message: they travel in
//! parts of [`SCRIPT_PART_BYTES`], each acknowledged before the next is sent
//! (from `ember submit` to the manager, and from the manager to the worker
//! that runs the driver), and are put back together here, up to
//! [`MAX_SCRIPT_BYTES`]. Pure bookkeeping; the actors own the messages.

use std::collections::BTreeMap;

/// The largest script a cluster-mode submission takes.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024 * 1024;
/// Scripts up to this size travel inside the submission itself; larger
/// ones in parts of this size, well under the 4 MiB frame limit.
pub const SCRIPT_PART_BYTES: usize = 1024 * 1024;
/// Bytes of unfinished scripts one process holds at once.
pub const MAX_STAGED_BYTES: usize = 4 * MAX_SCRIPT_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum UploadError {
    #[error(
        "the script is {bytes} bytes, more than the {max} bytes (64 MiB) a cluster-mode \
         submission takes; split it into several jobs, or read its data from files \
         (CREATE EXTERNAL TABLE) instead of inlining it"
    )]
    TooLarge { bytes: u64, max: usize },
    #[error(
        "this node already holds {held} bytes of unfinished scripts, and {bytes} more \
         would pass its limit of {max}; submit again once other submissions are in"
    )]
    Busy {
        held: usize,
        bytes: usize,
        max: usize,
    },
    #[error("no upload named '{0}' is under way here (it may have timed out); submit again")]
    Unknown(String),
    #[error("part of upload '{upload}' starts at byte {got}, but {expected} bytes came before it")]
    OutOfOrder {
        upload: String,
        expected: u64,
        got: u64,
    },
    #[error("upload '{upload}' holds {got} bytes, but the script has {expected}")]
    Incomplete {
        upload: String,
        got: u64,
        expected: u64,
    },
}

impl UploadError {
    /// A stable word for the kind of refusal (see `ManagerError::code`).
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::TooLarge { .. } => "too_large",
            UploadError::Busy { .. } => "busy",
            UploadError::Unknown(_) => "unknown_upload",
            UploadError::OutOfOrder { .. } | UploadError::Incomplete { .. } => "bad_request",
        }
    }
}

/// `script` cut into parts of at most `part_bytes` bytes (at least one
/// character each), on character boundaries.
pub fn split_script(script: &str, part_bytes: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = script;
    while !rest.is_empty() {
        let mut end = part_bytes.min(rest.len());
        while end < rest.len() && !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // A part smaller than one character: take the whole character.
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// Scripts being put back together, by upload name.
#[derive(Debug, Default)]
pub struct ScriptAssembly {
    staged: BTreeMap<String, String>,
}

impl ScriptAssembly {
    /// Bytes held for unfinished uploads.
    pub fn held(&self) -> usize {
        self.staged.values().map(String::len).sum()
    }

    /// Adds the part starting at byte `offset` of upload `name`; a part at
    /// offset 0 starts it afresh. Returns the bytes the upload now holds.
    pub fn append(&mut self, name: &str, offset: u64, part: &str) -> Result<u64, UploadError> {
        let so_far = if offset == 0 {
            self.staged.remove(name);
            0
        } else {
            let text = self
                .staged
                .get(name)
                .ok_or_else(|| UploadError::Unknown(name.to_string()))?;
            text.len() as u64
        };
        if offset != so_far {
            return Err(UploadError::OutOfOrder {
                upload: name.to_string(),
                expected: so_far,
                got: offset,
            });
        }
        let bytes = so_far + part.len() as u64;
        if bytes > MAX_SCRIPT_BYTES as u64 {
            self.staged.remove(name);
            return Err(UploadError::TooLarge {
                bytes,
                max: MAX_SCRIPT_BYTES,
            });
        }
        let held = self.held();
        if held + part.len() > MAX_STAGED_BYTES {
            return Err(UploadError::Busy {
                held,
                bytes: part.len(),
                max: MAX_STAGED_BYTES,
            });
        }
        self.staged
            .entry(name.to_string())
            .or_default()
            .push_str(part);
        Ok(bytes)
    }

    /// The whole script of upload `name`, which must hold `expected` bytes;
    /// the upload is over either way.
    pub fn take(&mut self, name: &str, expected: u64) -> Result<String, UploadError> {
        let text = self
            .staged
            .remove(name)
            .ok_or_else(|| UploadError::Unknown(name.to_string()))?;
        if text.len() as u64 != expected {
            return Err(UploadError::Incomplete {
                upload: name.to_string(),
                got: text.len() as u64,
                expected,
            });
        }
        Ok(text)
    }

    /// Bytes upload `name` holds, if it is under way.
    pub fn bytes_of(&self, name: &str) -> Option<u64> {
        self.staged.get(name).map(|t| t.len() as u64)
    }

    /// Drops upload `name`, finished or not.
    pub fn forget(&mut self, name: &str) {
        self.staged.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_rebuild_the_script_and_never_split_a_character() {
        let script = "SELECT 'żółw';\n".repeat(1000);
        let parts = split_script(&script, 7);
        assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= 7));
        let mut assembly = ScriptAssembly::default();
        let mut offset = 0;
        for part in &parts {
            offset = assembly.append("u", offset, part).unwrap();
        }
        assert_eq!(assembly.take("u", script.len() as u64).unwrap(), script);
        assert_eq!(assembly.held(), 0);
        assert_eq!(split_script("ż", 1), vec!["ż"]);
        assert!(split_script("", 10).is_empty());
    }

    #[test]
    fn a_lost_or_reordered_part_is_refused_not_glued_in() {
        let mut assembly = ScriptAssembly::default();
        assembly.append("u", 0, "abc").unwrap();
        let err = assembly.append("u", 5, "fgh").unwrap_err();
        assert!(
            matches!(
                err,
                UploadError::OutOfOrder {
                    expected: 3,
                    got: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            assembly.take("u", 6),
            Err(UploadError::Incomplete {
                got: 3,
                expected: 6,
                ..
            })
        ));
        assert!(matches!(
            assembly.append("v", 3, "x"),
            Err(UploadError::Unknown(_))
        ));
    }

    #[test]
    fn a_script_above_the_limit_is_refused_with_its_size() {
        let mut assembly = ScriptAssembly::default();
        let part = "x".repeat(SCRIPT_PART_BYTES);
        let mut offset = 0;
        let err = loop {
            match assembly.append("u", offset, &part) {
                Ok(n) => offset = n,
                Err(e) => break e,
            }
        };
        let text = err.to_string();
        assert!(
            text.contains("67108864") && text.contains("64 MiB"),
            "{text}"
        );
        assert_eq!(assembly.held(), 0, "the refused upload is dropped");
    }
}
