//! A container's record in its labels, both ways: the labels a container is created
//! with ([`record_labels`]), and the record rebuilt from them and its live state
//! ([`adopted`]) when Redis lost it. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use vnc_shared::schema::ContainerState;

use crate::domain::Container;
use crate::infra::runtime::{
    Inspected, LABEL_CLIPBOARD, LABEL_CPUS, LABEL_CREATED_AT, LABEL_ENV_NAMES, LABEL_FILES,
    LABEL_IMAGE, LABEL_LABEL_NAMES, LABEL_MEMORY_MB, LABEL_OWNER, LABEL_PASSWORD_KEY, LABEL_RECORD,
    LABEL_TENANT, RuntimeState,
};

/// The labels a container is created with: the caller's, and the record's fields the
/// runtime does not set itself (owner and tenant it does), so the record can be rebuilt.
pub fn record_labels(c: &Container, password_key: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = c.labels.clone();
    let names = |keys: Vec<&String>| serde_json::to_string(&keys).unwrap_or_default();
    labels.insert(LABEL_IMAGE.into(), c.image.clone());
    labels.insert(LABEL_CREATED_AT.into(), c.created_at.to_string());
    labels.insert(LABEL_RECORD.into(), c.record.to_string());
    labels.insert(LABEL_FILES.into(), c.files.as_str().to_owned());
    labels.insert(LABEL_CLIPBOARD.into(), c.clipboard.as_str().to_owned());
    labels.insert(LABEL_CPUS.into(), c.cpus.to_string());
    labels.insert(LABEL_MEMORY_MB.into(), c.memory_mb.to_string());
    labels.insert(LABEL_ENV_NAMES.into(), names(c.env.keys().collect()));
    labels.insert(LABEL_LABEL_NAMES.into(), names(c.labels.keys().collect()));
    if let Some(key) = password_key {
        labels.insert(LABEL_PASSWORD_KEY.into(), key.to_owned());
    }
    labels
}

/// The record of container `cid` rebuilt from what the runtime reports, recorded as
/// served by `node`; Err names what is missing. A running container is `running` at
/// its endpoint; one that exited is `failed` (kept, so its owner can see it and delete
/// it); a container that is gone is not adopted.
pub fn adopted(cid: &str, found: &Inspected, node: &str) -> Result<Container, String> {
    let label = |name: &str| {
        found
            .labels
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no {name} label"))
    };
    let names = |name: &str| -> BTreeSet<String> {
        found
            .labels
            .get(name)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    };
    let pick = |from: &BTreeMap<String, String>, names: BTreeSet<String>| {
        from.iter()
            .filter(|(k, _)| names.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (state, endpoint, error) = match (found.state, &found.endpoint) {
        (RuntimeState::Running, Some(e)) => (
            ContainerState::Running,
            Some((e.host.clone(), e.port)),
            None,
        ),
        (RuntimeState::Exited { code }, _) => (
            ContainerState::Failed,
            None,
            Some(format!(
                "container exited with code {code} while its record was lost; re-adopted"
            )),
        ),
        (RuntimeState::Running, None) => {
            return Err("it runs, but the relay could not reach it (no endpoint)".into());
        }
        (RuntimeState::Missing, _) => return Err("it is gone".into()),
    };
    Ok(Container {
        id: cid.to_owned(),
        owner: label(LABEL_OWNER)?,
        tenant: label(LABEL_TENANT)?,
        state,
        image: label(LABEL_IMAGE)?,
        cpus: parsed(found, LABEL_CPUS)?,
        memory_mb: parsed(found, LABEL_MEMORY_MB)?,
        labels: pick(&found.labels, names(LABEL_LABEL_NAMES)),
        env: pick(&found.env, names(LABEL_ENV_NAMES)),
        endpoint,
        node: Some(node.to_owned()),
        engine: None,
        error,
        created_at: parsed(found, LABEL_CREATED_AT)?,
        record: label(LABEL_RECORD)? == "true",
        // A container labelled before the policies existed gets the defaults a record
        // without them gets.
        files: optional(found, LABEL_FILES)?.unwrap_or_default(),
        clipboard: optional(found, LABEL_CLIPBOARD)?.unwrap_or_default(),
    })
}

/// Label `name` of `found`, parsed, if it is there.
fn optional<T: std::str::FromStr>(found: &Inspected, name: &str) -> Result<Option<T>, String> {
    found
        .labels
        .get(name)
        .map(|_| parsed(found, name))
        .transpose()
}

/// Label `name` of `found`, parsed.
fn parsed<T: std::str::FromStr>(found: &Inspected, name: &str) -> Result<T, String> {
    let value = found
        .labels
        .get(name)
        .ok_or_else(|| format!("no {name} label"))?;
    value
        .parse()
        .map_err(|_| format!("{name} label {value:?} is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::runtime::Endpoint;

    fn container() -> Container {
        Container {
            id: "c1".into(),
            owner: "alice".into(),
            tenant: "t1".into(),
            state: ContainerState::Running,
            image: "desk:1".into(),
            cpus: 1.5,
            memory_mb: 512,
            labels: [("team".to_owned(), "a".to_owned())].into(),
            env: [("LANG".to_owned(), "C".to_owned())].into(),
            endpoint: Some(("127.0.0.1".into(), 32768)),
            node: Some("n1".into()),
            engine: None,
            error: None,
            created_at: 1_700_000_000_000,
            record: true,
            files: vnc_shared::token::FilePolicy::Download,
            clipboard: vnc_shared::token::ClipboardPolicy::None,
        }
    }

    #[test]
    fn a_record_survives_its_labels() {
        let c = container();
        let mut labels = record_labels(&c, Some("abc"));
        // What the runtime adds, and what the image brings.
        labels.insert(LABEL_OWNER.into(), "alice".into());
        labels.insert(LABEL_TENANT.into(), "t1".into());
        labels.insert("org.opencontainers.image.title".into(), "x".into());
        assert_eq!(labels[LABEL_PASSWORD_KEY], "abc");
        let found = Inspected {
            labels,
            env: [
                ("LANG".to_owned(), "C".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned()),
                ("VNC_PASSWORD".to_owned(), "secret".to_owned()),
            ]
            .into(),
            state: RuntimeState::Running,
            endpoint: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 32768,
            }),
        };
        assert_eq!(adopted("c1", &found, "n1").unwrap(), c);

        let exited = Inspected {
            state: RuntimeState::Exited { code: 137 },
            endpoint: None,
            ..found.clone()
        };
        let failed = adopted("c1", &exited, "n1").unwrap();
        assert_eq!(failed.state, ContainerState::Failed);
        assert!(failed.error.unwrap().contains("137"));

        let mut unlabelled = found;
        unlabelled.labels.remove(LABEL_TENANT);
        assert!(
            adopted("c1", &unlabelled, "n1")
                .unwrap_err()
                .contains("vnc.tenant")
        );
    }
}
