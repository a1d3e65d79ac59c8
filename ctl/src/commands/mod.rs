//! One module per berthctl command (or close group), and what they share: finding pods
//! and containers by id, id prefix or name, and running a command over several ids.

pub mod containers;
pub mod create;
pub mod exec;
pub mod images;
pub mod info;
pub mod logs;
pub mod pods;
pub mod pull;
pub mod rmi;
pub mod run;
pub mod runp;

use std::collections::HashMap;

use k8s_cri::v1::{Container, ListContainersRequest, ListPodSandboxRequest, PodSandbox};

use crate::client::{exit_code, Connection, CtlError, RuntimeClient};

/// Every pod berthd knows.
pub async fn list_pods(conn: &Connection, rt: &mut RuntimeClient) -> Result<Vec<PodSandbox>, CtlError> {
    let response = rt.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await;
    Ok(response.map_err(|s| conn.error("list pods", s))?.into_inner().items)
}

/// Every container berthd knows.
pub async fn list_containers(conn: &Connection, rt: &mut RuntimeClient) -> Result<Vec<Container>, CtlError> {
    let response = rt.list_containers(ListContainersRequest { filter: None }).await;
    Ok(response.map_err(|s| conn.error("list containers", s))?.into_inner().containers)
}

/// The one id among `candidates` (id, name) that `given` names: the id itself, a unique
/// name, or a unique id prefix. Tables show truncated ids and people remember names.
pub fn resolve<'a>(
    kind: &str,
    given: &str,
    candidates: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<String, CtlError> {
    if given.is_empty() {
        return Err(CtlError::Usage(format!("empty {kind} id")));
    }
    if let Some((id, _)) = candidates.clone().find(|(id, _)| *id == given) {
        return Ok(id.to_string());
    }
    let pick = |matches: Vec<&str>, how: &str| -> Option<Result<String, CtlError>> {
        match matches.as_slice() {
            [] => None,
            [one] => Some(Ok(one.to_string())),
            many => Some(Err(CtlError::Usage(format!(
                "{kind} {how} {given} is ambiguous: it matches {} (give more of the id)",
                many.iter().map(|id| &id[..id.len().min(13)]).collect::<Vec<_>>().join(", ")
            )))),
        }
    };
    // A name before an id prefix, as docker: a name like `cafe` must not turn into
    // whichever id happens to start with those letters.
    let by_name: Vec<&str> = candidates.clone().filter(|(_, name)| *name == given).map(|(id, _)| id).collect();
    if let Some(result) = pick(by_name, "name") {
        return result;
    }
    let by_prefix: Vec<&str> = candidates.filter(|(id, _)| id.starts_with(given)).map(|(id, _)| id).collect();
    if let Some(result) = pick(by_prefix, "id prefix") {
        return result;
    }
    Err(CtlError::NotFound(format!("no {kind} with id or name {given}")))
}

/// The full id of the pod `given` names.
pub async fn resolve_pod(conn: &Connection, rt: &mut RuntimeClient, given: &str) -> Result<String, CtlError> {
    let pods = list_pods(conn, rt).await?;
    resolve("pod", given, pods.iter().map(|p| (p.id.as_str(), p.metadata.as_ref().map_or("", |m| m.name.as_str()))))
}

/// The full id of the container `given` names.
pub async fn resolve_container(conn: &Connection, rt: &mut RuntimeClient, given: &str) -> Result<String, CtlError> {
    let containers = list_containers(conn, rt).await?;
    resolve(
        "container",
        given,
        containers.iter().map(|c| (c.id.as_str(), c.metadata.as_ref().map_or("", |m| m.name.as_str()))),
    )
}

/// The failures of a command over several ids: each is printed and the next id is
/// tried, as crictl does; the command then fails with the first failure's exit code.
#[derive(Default)]
pub struct Failures {
    failed: usize,
    code: i32,
}

impl Failures {
    /// Records `result`'s error, if any. berthd being unreachable ends the command, since
    /// every further id would fail the same way.
    pub fn record(&mut self, result: Result<(), CtlError>) -> Result<(), CtlError> {
        match result {
            Ok(()) => Ok(()),
            Err(error @ CtlError::Unreachable { .. }) => Err(error),
            Err(error) => {
                eprintln!("berthctl: {error}");
                self.failed += 1;
                if self.code == exit_code::OK {
                    self.code = error.exit_code();
                }
                Ok(())
            }
        }
    }

    pub fn finish(self) -> Result<(), CtlError> {
        match self.failed {
            0 => Ok(()),
            failed => Err(CtlError::Reported { failed, code: self.code }),
        }
    }
}

/// Runs `each` on every id of `ids` in turn, as crictl does: a failure is printed and the
/// next id is tried (see [`Failures::record`]). The caller finishes the failures once it has
/// printed what the other ids gave.
pub async fn for_each_id(
    ids: &[String],
    mut each: impl AsyncFnMut(&str) -> Result<(), CtlError>,
) -> Result<Failures, CtlError> {
    let mut failures = Failures::default();
    for given in ids {
        failures.record(each(given).await)?;
    }
    Ok(failures)
}

/// An error of berthctl itself (e.g. a response it could not render).
pub fn internal(error: impl std::fmt::Display) -> CtlError {
    CtlError::Internal(error.to_string())
}

/// `KEY=VALUE` label selectors.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, CtlError> {
    labels
        .iter()
        .map(|label| match label.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(CtlError::Usage(format!("label `{label}`: expected KEY=VALUE"))),
        })
        .collect()
}

/// Newest first, then at most `latest`/`last` items (crictl's `-l` and `--last`).
pub fn newest<T>(mut items: Vec<T>, created_at: impl Fn(&T) -> i64, latest: bool, last: Option<usize>) -> Vec<T> {
    items.sort_by_key(|item| std::cmp::Reverse(created_at(item)));
    let keep = if latest { Some(1) } else { last.filter(|n| *n > 0) };
    if let Some(n) = keep {
        items.truncate(n);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_ids_prefixes_and_names() {
        let list = [("abc123", "web"), ("abd456", "db")];
        let it = || list.iter().map(|(a, b)| (*a, *b));
        assert_eq!(resolve("pod", "abc123", it()).unwrap(), "abc123");
        assert_eq!(resolve("pod", "abd", it()).unwrap(), "abd456");
        assert_eq!(resolve("pod", "web", it()).unwrap(), "abc123");
        let named_like_an_id = [("abc123", "abd"), ("abd456", "db")];
        assert_eq!(resolve("pod", "abd", named_like_an_id.iter().map(|(a, b)| (*a, *b))).unwrap(), "abc123");
        assert!(matches!(resolve("pod", "ab", it()), Err(CtlError::Usage(_))));
        assert!(matches!(resolve("pod", "zzz", it()), Err(CtlError::NotFound(_))));
    }

    #[test]
    fn labels() {
        assert_eq!(parse_labels(&["a=b".into()]).unwrap()["a"], "b");
        assert!(parse_labels(&["nolabel".into()]).is_err());
    }
}
