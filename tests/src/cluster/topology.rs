//! What one cluster node says of the cluster: `CLUSTER NODES` parsed into one
//! [`NodeView`] per node, and the `field:value` lines of `INFO` replies.

use anyhow::{Context, ensure};

/// One line of `CLUSTER NODES`: a node as another node sees it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// Flagged `fail` (not just `fail?`, which is one node's suspicion).
    pub failed: bool,
    /// Of a replica: the id of its primary.
    pub primary_id: Option<String>,
    /// Slot ranges served (inclusive); importing/migrating entries left out.
    pub slots: Vec<(u16, u16)>,
}

impl NodeView {
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Parses `CLUSTER NODES`.
pub fn parse_nodes(text: &str) -> anyhow::Result<Vec<NodeView>> {
    let mut views = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(fields.len() >= 8, "short CLUSTER NODES line {line:?}");
        // `ip:port@cport[,hostname]`
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("address in {line:?}"))?;
        let flags: Vec<&str> = fields[2].split(',').collect();
        let mut slots = Vec::new();
        for range in fields[8..].iter().filter(|s| !s.starts_with('[')) {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            slots.push((a.parse()?, b.parse()?));
        }
        views.push(NodeView {
            id: fields[0].to_owned(),
            port,
            primary: flags.contains(&"master"),
            failed: flags.contains(&"fail"),
            primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            slots,
        });
    }
    Ok(views)
}

/// The value of `field` in an `INFO` or `CLUSTER INFO` reply (`field:value` lines).
pub(super) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

/// The primary (up) serving `slot` in one node's view.
pub(super) fn owner(view: &[NodeView], slot: u16) -> Option<&NodeView> {
    view.iter()
        .find(|v| v.primary && !v.failed && v.serves(slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "\
07c3 127.0.0.1:30004@31004,host replica e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922 [5461->-e7d1]
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 16000
6ec2 127.0.0.1:30005@31005 master,fail - 1426238316232 1426238315000 5 disconnected
";
        let views = parse_nodes(text).unwrap();
        assert_eq!(views.len(), 4);
        assert_eq!(views[0].port, 30004);
        assert!(!views[0].primary);
        assert_eq!(views[0].primary_id.as_deref(), Some("e7d1"));
        assert_eq!(views[1].slots, vec![(5461, 10922)]);
        assert_eq!(views[2].slots, vec![(0, 5460), (16000, 16000)]);
        assert!(views[3].failed && views[3].primary);
        assert_eq!(owner(&views, 16000).map(|v| v.port), Some(30001));
        assert_eq!(owner(&views, 10923).map(|v| v.port), None);
    }
}
