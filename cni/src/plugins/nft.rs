//! nftables through the `nft` tool: rulesets are generated as text and applied with
//! `nft -f -` (one atomic transaction each), tagged rules are found with `nft -j list`.
//!
//! Why text rulesets and not raw netlink: nftables' netlink protocol is large
//! (expressions, batches, sets); the text ruleset is what admins read and debug anyway,
//! and the kernel applies the whole file atomically. The commands run in-process through
//! libnftables (dlopen, see [`super::libnft`]) when it is installed, which saves the
//! tool's start-up on every call; else through the `nft` tool.
//!
//! berth's plugins only ever touch their own tables: no flush of the ruleset, and every
//! per-container rule carries a comment tag so DEL removes exactly its rules.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft {what} failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("nft -j output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("nft table name {0:?}: only letters, digits, '-' and '_' (at most 64)")]
    BadName(String),
}

/// A table berth owns (family + name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: &'static str,
    pub name: String,
}

impl Table {
    /// An `inet` table (IPv4 and IPv6 in one) with a checked name.
    pub fn inet(name: &str) -> Result<Table, NftError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !ok {
            return Err(NftError::BadName(name.to_string()));
        }
        Ok(Table {
            family: "inet",
            name: name.to_string(),
        })
    }

    /// `inet NAME`, as nft commands want it.
    pub fn spec(&self) -> String {
        format!("{} {}", self.family, self.name)
    }
}

fn nft_binary() -> &'static str {
    for candidate in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] {
        if Path::new(candidate).exists() {
            return candidate;
        }
    }
    "nft"
}

fn run(args: &[&str], stdin: Option<&str>, what: &str) -> Result<Vec<u8>, NftError> {
    let mut child = Command::new(nft_binary())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error (nft exited early) shows in its exit status and stderr below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Failed {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Runs nft commands as one transaction: in-process through libnftables when it can be
/// loaded, else through `nft [-j] -f -`. Returns what nft printed.
fn run_commands(commands: &str, json: bool, what: &str) -> Result<Vec<u8>, NftError> {
    if let Some(lib) = super::libnft::Lib::get() {
        let (ok, out, err) = lib.run(commands, json);
        if !ok {
            return Err(NftError::Failed {
                what: what.to_string(),
                stderr: err.trim().to_string(),
            });
        }
        return Ok(out.into_bytes());
    }
    let args: &[&str] = if json {
        &["-j", "-f", "-"]
    } else {
        &["-f", "-"]
    };
    run(args, Some(commands), what)
}

/// Applies a ruleset (`nft -f -`): all of it or nothing.
pub fn apply(ruleset: &str) -> Result<(), NftError> {
    run_commands(ruleset, false, "apply").map(|_| ())
}

/// The table's rules as `nft -j` JSON; `None` when the table does not exist.
pub fn list_table(table: &Table) -> Result<Option<Value>, NftError> {
    let listed = match super::libnft::Lib::get() {
        Some(_) => run_commands(&format!("list table {}\n", table.spec()), true, "list"),
        // `nft -j -f -` prints nothing for list commands: the arguments form does.
        None => run(
            &["-j", "list", "table", table.family, &table.name],
            None,
            "list",
        ),
    };
    match listed {
        Ok(out) => Ok(Some(serde_json::from_slice(&out)?)),
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// (chain, handle) of every rule in the listing whose comment is `tag`.
pub fn tagged_rules(listing: &Value, tag: &str) -> Vec<(String, u64)> {
    let Some(items) = listing.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule.get("comment").and_then(Value::as_str) == Some(tag))
        .filter_map(|rule| {
            Some((
                rule.get("chain")?.as_str()?.to_string(),
                rule.get("handle")?.as_u64()?,
            ))
        })
        .collect()
}

/// The commands deleting the given rules.
pub fn delete_rules_ruleset(table: &Table, rules: &[(String, u64)]) -> String {
    rules
        .iter()
        .map(|(chain, handle)| format!("delete rule {} {chain} handle {handle}\n", table.spec()))
        .collect()
}

/// Deletes every rule tagged `tag` in the table (none, or no table, is fine).
/// Returns how many were deleted.
pub fn delete_tagged(table: &Table, tag: &str) -> Result<usize, NftError> {
    let Some(listing) = list_table(table)? else {
        return Ok(0);
    };
    let rules = tagged_rules(&listing, tag);
    if rules.is_empty() {
        return Ok(0);
    }
    apply(&delete_rules_ruleset(table, &rules))?;
    Ok(rules.len())
}

/// Whether any rule in the table carries `tag`.
pub fn has_tagged(table: &Table, tag: &str) -> Result<bool, NftError> {
    Ok(list_table(table)?.is_some_and(|listing| !tagged_rules(&listing, tag).is_empty()))
}

/// Deletes the whole table if it exists (tests and uninstall; never another table).
pub fn delete_table(table: &Table) -> Result<(), NftError> {
    match run_commands(
        &format!("delete table {}\n", table.spec()),
        false,
        "delete table",
    ) {
        Ok(_) => Ok(()),
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(Table::inet("berth-portmap").is_ok());
        assert!(Table::inet("t_1").is_ok());
        for bad in ["", "1abc", "a b", "a;flush ruleset", &"x".repeat(65)] {
            assert!(Table::inet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_tagged_rules() {
        let listing: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"table":{"family":"inet","name":"t"}},
            {"rule":{"family":"inet","table":"t","chain":"hostports","handle":4,"comment":"cni-aa","expr":[]}},
            {"rule":{"family":"inet","table":"t","chain":"hostports","handle":5,"comment":"cni-bb","expr":[]}},
            {"rule":{"family":"inet","table":"t","chain":"snat","handle":9,"comment":"cni-aa","expr":[]}},
            {"rule":{"family":"inet","table":"t","chain":"prerouting","handle":2,"expr":[]}}]}"#,
        )
        .unwrap();
        let rules = tagged_rules(&listing, "cni-aa");
        assert_eq!(
            rules,
            vec![("hostports".to_string(), 4), ("snat".to_string(), 9)]
        );
        let table = Table::inet("t").unwrap();
        assert_eq!(
            delete_rules_ruleset(&table, &rules),
            "delete rule inet t hostports handle 4\ndelete rule inet t snat handle 9\n"
        );
    }
}
