//! A trace's spans as a tree: children under their parent, siblings in start order.
use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::span::{Span, SpanLink};

#[derive(Clone, Debug, PartialEq)]
pub struct SpanNode {
    pub span: Span,
    pub children: Vec<SpanNode>,
}

/// The trees of a set of spans: a span whose parent is not in the set is a root (a trace
/// joined from an instrumented app has its parent outside the observer's view).
pub fn build_forest(mut spans: Vec<Span>) -> Vec<SpanNode> {
    spans.sort_by_key(|span| span.start_time_unix_nano);
    let ids: HashSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
    let mut children: HashMap<String, Vec<Span>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        match span.parent_span_id.clone().filter(|p| ids.contains(p)) {
            Some(parent) => children.entry(parent).or_default().push(span),
            None => roots.push(span),
        }
    }
    roots
        .into_iter()
        .map(|root| attach(root, &mut children))
        .collect()
}

fn attach(span: Span, children: &mut HashMap<String, Vec<Span>>) -> SpanNode {
    let own = children.remove(&span.span_id).unwrap_or_default();
    SpanNode {
        children: own.into_iter().map(|c| attach(c, children)).collect(),
        span,
    }
}

/// The subtree under `span_id` within its trace's spans.
pub fn subtree(spans: Vec<Span>, span_id: &str) -> Option<SpanNode> {
    fn find(nodes: Vec<SpanNode>, span_id: &str) -> Option<SpanNode> {
        nodes.into_iter().find_map(|node| {
            if node.span.span_id == span_id {
                Some(node)
            } else {
                find(node.children, span_id)
            }
        })
    }
    find(build_forest(spans), span_id)
}

/// Which attributes a JSON tree carries.
pub enum AttributeSelection<'a> {
    All,
    Only(&'a [String]),
}

/// A span for the API: its fields, then the chosen attributes under `attributes`.
pub fn span_json(span: &Span, selection: &AttributeSelection) -> Value {
    let mut attributes = span.flat_attribute_map();
    if let AttributeSelection::Only(keys) = selection {
        attributes.retain(|key, _| keys.contains(key));
    }
    json!({
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind.as_str(),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "attributes": attributes,
        "links": span.links.iter().map(SpanLink::to_json).collect::<Vec<_>>(),
    })
}

/// The tree as JSON: each node is [`span_json`] plus `children`, cut below `max_depth`
/// levels (0: the node alone; `children_count` still says how many it has).
pub fn to_json(node: &SpanNode, max_depth: Option<u32>, selection: &AttributeSelection) -> Value {
    let children: Vec<Value> = match max_depth {
        Some(0) => Vec::new(),
        _ => node
            .children
            .iter()
            .map(|child| to_json(child, max_depth.map(|d| d - 1), selection))
            .collect(),
    };
    let mut value = span_json(&node.span, selection);
    value["children_count"] = json!(node.children.len());
    value["children"] = json!(children);
    value
}
