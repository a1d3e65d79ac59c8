//! ListPodSandbox filters: id (exact, or a prefix that matches exactly one pod, as crictl
//! users type short ids), state, and label selector (every pair must match).

use k8s_cri::v1::PodSandboxFilter;

use crate::store::SandboxRecord;

/// The records that pass `filter` (all of them without one), in the given order.
pub fn filter_sandboxes(records: Vec<SandboxRecord>, filter: Option<&PodSandboxFilter>) -> Vec<SandboxRecord> {
    let Some(filter) = filter else {
        return records;
    };
    let wanted_id = resolve_id(&records, &filter.id);
    records
        .into_iter()
        .filter(|record| match &wanted_id {
            IdFilter::Any => true,
            IdFilter::Exactly(id) => &record.id == id,
            IdFilter::Nothing => false,
        })
        .filter(|record| filter.state.as_ref().is_none_or(|state| record.state.cri() as i32 == state.state))
        .filter(|record| {
            filter
                .label_selector
                .iter()
                .all(|(key, value)| record.config.labels.get(key) == Some(value))
        })
        .collect()
}

enum IdFilter {
    Any,
    Exactly(String),
    Nothing,
}

/// An empty id matches everything; an exact id itself; a prefix the one pod it starts
/// (an ambiguous or unknown prefix matches nothing).
fn resolve_id(records: &[SandboxRecord], id: &str) -> IdFilter {
    if id.is_empty() {
        return IdFilter::Any;
    }
    if records.iter().any(|r| r.id == id) {
        return IdFilter::Exactly(id.to_string());
    }
    let mut matching = records.iter().filter(|r| r.id.starts_with(id));
    match (matching.next(), matching.next()) {
        (Some(only), None) => IdFilter::Exactly(only.id.clone()),
        _ => IdFilter::Nothing,
    }
}

/// The one pod id `id_or_prefix` names among `ids`: itself, or the only id it prefixes.
pub fn resolve_unique_prefix<'a>(ids: impl IntoIterator<Item = &'a str>, id_or_prefix: &str) -> Option<String> {
    if id_or_prefix.is_empty() {
        return None;
    }
    let mut found = None;
    for id in ids {
        if id == id_or_prefix {
            return Some(id.to_string());
        }
        if id.starts_with(id_or_prefix) {
            if found.is_some() {
                return None;
            }
            found = Some(id.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SandboxState;
    use k8s_cri::v1::{PodSandboxConfig, PodSandboxState, PodSandboxStateValue};
    use std::collections::HashMap;

    fn record(id: &str, state: SandboxState, labels: &[(&str, &str)]) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: id.into(),
            config: PodSandboxConfig {
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
                ..Default::default()
            },
            state,
            created_at_ns: 0,
            runtime_handler: String::new(),
            ns_dir: Default::default(),
            pod_dir: Default::default(),
            cgroup_path: String::new(),
            cgroup_created: false,
            host_network: false,
            host_pid: false,
            host_ipc: false,
            pid_holder: None,
            pid_holder_pid: None,
            ips: vec![],
            pinned_namespaces: vec![],
            shm_path: None,
            stopped_at_ns: 0,
        }
    }

    fn ids(records: Vec<SandboxRecord>) -> Vec<String> {
        records.into_iter().map(|r| r.id).collect()
    }

    fn all() -> Vec<SandboxRecord> {
        vec![
            record("aaa1", SandboxState::Ready, &[("app", "web"), ("tier", "front")]),
            record("aaa2", SandboxState::NotReady, &[("app", "web")]),
            record("bbb1", SandboxState::Ready, &[("app", "db")]),
        ]
    }

    #[test]
    fn no_filter_lists_everything() {
        assert_eq!(ids(filter_sandboxes(all(), None)), ["aaa1", "aaa2", "bbb1"]);
        assert_eq!(ids(filter_sandboxes(all(), Some(&PodSandboxFilter::default()))), ["aaa1", "aaa2", "bbb1"]);
    }

    #[test]
    fn id_exact_or_unique_prefix() {
        let by_id = |id: &str| ids(filter_sandboxes(all(), Some(&PodSandboxFilter { id: id.into(), ..Default::default() })));
        assert_eq!(by_id("aaa2"), ["aaa2"]);
        assert_eq!(by_id("b"), ["bbb1"]);
        assert!(by_id("aaa").is_empty(), "ambiguous prefix");
        assert!(by_id("zzz").is_empty());
        assert_eq!(resolve_unique_prefix(["aaa1", "aaa2", "bbb1"], "bb").as_deref(), Some("bbb1"));
        assert_eq!(resolve_unique_prefix(["aaa1", "aaa2"], "aa"), None);
        assert_eq!(resolve_unique_prefix(["aaa1", "aaa"], "aaa").as_deref(), Some("aaa"));
        assert_eq!(resolve_unique_prefix(["aaa1"], ""), None);
    }

    #[test]
    fn state_and_labels() {
        let ready = PodSandboxFilter {
            state: Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
            ..Default::default()
        };
        assert_eq!(ids(filter_sandboxes(all(), Some(&ready))), ["aaa1", "bbb1"]);
        let web = PodSandboxFilter { label_selector: [("app".to_string(), "web".to_string())].into(), ..Default::default() };
        assert_eq!(ids(filter_sandboxes(all(), Some(&web))), ["aaa1", "aaa2"]);
        let web_ready = PodSandboxFilter { label_selector: web.label_selector.clone(), ..ready.clone() };
        assert_eq!(ids(filter_sandboxes(all(), Some(&web_ready))), ["aaa1"]);
        let web_front = PodSandboxFilter {
            label_selector: [("app".to_string(), "web".to_string()), ("tier".to_string(), "front".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(ids(filter_sandboxes(all(), Some(&web_front))), ["aaa1"]);
        let none = PodSandboxFilter { id: "bbb1".into(), ..web };
        assert!(ids(filter_sandboxes(all(), Some(&none))).is_empty());
    }
}
