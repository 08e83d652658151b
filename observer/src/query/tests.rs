use std::time::Duration;

use super::*;

#[test]
fn parses_durations() {
    assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(604_800));
    for bad in ["15", "m", "1.5h", "3y", "", "-2h"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn parses_orderings() {
    let order = |s: &str| s.parse::<OrderBy>().unwrap();
    assert_eq!(
        order("duration"),
        OrderBy {
            field: "duration".into(),
            descending: false
        }
    );
    assert_eq!(
        order("-duration"),
        OrderBy {
            field: "duration".into(),
            descending: true
        }
    );
    assert_eq!(
        order("gen_ai.usage.input_tokens:desc").field,
        "gen_ai.usage.input_tokens"
    );
    assert!(order("gen_ai.usage.input_tokens:desc").descending);
    assert!(!order("name:asc").descending);
    assert!("name; DROP TABLE spans".parse::<OrderBy>().is_err());
    assert!("".parse::<OrderBy>().is_err());
}

#[test]
fn parses_filters_in_both_forms() {
    let filter = Filter::new("gen_ai.request.model", "eq", "gpt-4o").unwrap();
    assert_eq!(
        filter,
        Filter::parse_colon_form("gen_ai.request.model:eq:gpt-4o").unwrap()
    );
    let url = Filter::parse_colon_form("url.full:contains:https://x:8443/v1").unwrap();
    assert_eq!(
        (url.op, url.value.as_str()),
        (Op::Contains, "https://x:8443/v1")
    );
    assert_eq!(Filter::new("a", "NE", "1").unwrap().op, Op::Ne);
    assert!(Filter::new("a", "like", "1").is_err());
    assert!(Filter::parse_colon_form("a:eq").is_err());
    for field in ["a\"b", "a'b", "a b", "a)--", "$.x"] {
        assert!(Filter::new(field, "eq", "1").is_err(), "{field}");
    }
}

#[test]
fn user_values_are_bound_not_written_into_sql() {
    let evil = "x'); DROP TABLE spans; --";
    let query = Query {
        filters: vec![
            Filter::new("gen_ai.request.model", "eq", evil).unwrap(),
            Filter::new("custom.key", "contains", evil).unwrap(),
        ],
        since: Some(Duration::from_secs(60)),
        order_by: Some("-custom.key".parse().unwrap()),
        ..Query::default()
    };
    let traces_query = Query {
        order_by: Some("-duration".parse().unwrap()),
        ..query.clone()
    };
    for sql in [
        spans_sql(&query, 1 << 40),
        traces_sql(&traces_query, 1 << 40).unwrap(),
    ] {
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
        assert!(!sql.text.contains("custom.key"), "{}", sql.text);
        let placeholders = sql.text.matches('?').count();
        assert!(placeholders >= sql.params.len(), "{}", sql.text);
        assert!(sql.params.contains(&SqlValue::Text(evil.into())));
    }
}

#[test]
fn indexed_attributes_use_their_column() {
    let query = Query {
        filters: vec![Filter::new("gen_ai.request.model", "eq", "gpt-4o").unwrap()],
        ..Query::default()
    };
    let sql = spans_sql(&query, 0);
    assert!(sql.text.contains("request_model IS ?1"), "{}", sql.text);
    assert!(!sql.text.contains("json_extract"), "{}", sql.text);
}
